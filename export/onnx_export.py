"""Export a MerClip (or a zero-shot CLIP configuration) to an ONNX directory for onnxruntime.

Graphs (see ``merstream/onnx_manifest.py`` for the directory layout): one per tower of the
model's modalities, the label encoder with its learned context baked in (so a new label set is
embedded at run time without re-exporting), and the head (CMD + similarity + probabilities, the
query embedding and logit scale baked in). All ablations export: ``full`` and ``no_cmd`` have a
label encoder; ``no_le`` / ``no_cmd_no_le`` have fixed labels (an FC head) and no label encoder.

The TorchScript ("legacy") exporter is used with ``dynamic_axes``: batch axes (and the label axis
of the head) stay dynamic, which the parity check verifies by running batches of 1 and 5.

Precision: ``fp32`` is exported directly. ``int8`` and ``fp16`` are made from a checked fp32
export by converting the three towers that run per frame / segment / transcript: int8 by
onnxruntime dynamic quantisation (MatMul / Gemm weights to int8, activations quantised on the
fly), fp16 by converting to float16 with float32 inputs/outputs (GPU only: the CPU provider
cannot run it). The label encoder (run once per label set) and the small head stay fp32.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from merstream.errors import MerstreamError
from merstream.model.mer_clip import MerClip
from merstream.onnx_manifest import MANIFEST, MODES, PRECISIONS, read_manifest, write_manifest
from merstream.scorer import check_labels
from merstream.tokenizer import TOKENIZER_FILE, build_clip_tokenizer

from .graphs import AudioGraph, HeadGraph, LabelEncoderGraph, TextGraph, VisionGraph, ZeroShotHeadGraph
from .parity import PrecisionReport, ParityReport, check_parity, compare_scores, parity_inputs
from .reference import ReferenceSet

DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 14, 20  # scaled-dot-product attention needs 14; the legacy exporter stops at 20
TOWERS = ("vision", "audio", "text")  # converted to int8 / fp16; the rest stays fp32
EXAMPLE_BATCH = 2


@dataclass
class GraphFile:
    name: str
    file: str
    seconds: float
    size_bytes: int


@dataclass
class ExportResult:
    directory: Path
    precision: str
    opset: int
    graphs: list[GraphFile]
    parity: ParityReport | None = None  # fp32 graphs vs torch (None: --no-check)
    accuracy: PrecisionReport | None = None  # int8 / fp16 scores vs torch on the reference set
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def graph_names(model: MerClip, mode: str) -> list[str]:
    """The graphs an export of this model holds."""
    mods = model.cfg.modalities
    if mode == "zero-shot":
        return ["vision", "text", "head"]
    names = [g for m, g in (("V", "vision"), ("A", "audio"), ("L", "text")) if m in mods]
    if model.use_le:
        names.append("label_encoder")
    return names + ["head"]


def _spec(name: str, shape: list, dtype: str) -> dict:
    return {"name": name, "shape": shape, "dtype": dtype}


def graph_specs(model: MerClip, name: str, mode: str) -> tuple[list[dict], list[dict]]:
    """(input specs, output specs) of one graph; axis names mark the dynamic axes."""
    s, c, d = model.image_size, model.context_length, model.embed_dim
    emb = [_spec("embeddings", ["batch", d], "float32")]
    if name == "vision":
        return [_spec("frames", ["batch", 3, s, s], "float32")], emb
    if name == "audio":  # the model's audio front end says what its tower takes
        front = model.audio_front_end()
        return [_spec(front.input_name, ["batch", *front.item_shape], "float32")], emb
    if name == "text":
        front = model.text_front_end()
        if front is not None:  # the model's text front end says what its tower takes
            return [_spec(front.input_name, ["batch", *front.item_shape], "float32")], emb
        return [_spec("tokens", ["batch", "tokens"], "int64")], emb  # trimmed after their EOS: a dynamic axis
    if name == "label_encoder":
        return [_spec("label_tokens", ["batch", c], "int64")], emb
    if mode == "zero-shot":
        names, mods, le = ZeroShotHeadGraph().input_names(), ZeroShotHeadGraph.mods, True
    else:
        names, mods, le = HeadGraph.names_for(model), model.cfg.modalities, model.use_le
    ins = [_spec(n, ["batch", d], "float32") for n in names[: len(mods)]]
    ins.append(_spec("present", ["batch", len(mods)], "float32"))
    ins += [_spec(n, ["labels", d], "float32") for n in names[len(mods) + 1 :]]
    k = "labels" if le else len(model.cfg.labels)
    return ins, [_spec("probs", ["batch", k], "float32")]


def graph_module(model: MerClip, name: str, mode: str, labels: list[str]) -> tuple[torch.nn.Module, tuple]:
    """The torch module traced for one graph and its example inputs (batch EXAMPLE_BATCH)."""
    s, d = model.image_size, model.embed_dim
    if name == "vision":
        return VisionGraph(model), (torch.randn(EXAMPLE_BATCH, 3, s, s),)
    if name == "audio":
        example = model.audio_front_end().example(EXAMPLE_BATCH, np.random.default_rng(0))
        return AudioGraph(model), (torch.from_numpy(example),)
    two = labels[:2] if len(labels) >= 2 else labels * 2  # >= 2 rows, so no axis is specialised to 1
    if name == "text":
        tokens = model.text_inputs(["an example transcript", "another one"])
        if tokens.dtype != torch.int64:  # sentence vectors
            return TextGraph(model), (tokens,)
        return TextGraph(model), (tokens[:, : int(tokens.argmax(-1).max()) + 1],)  # trimmed, as at run time
    if name == "label_encoder":
        return LabelEncoderGraph(model), (model.label_encoder.tokens(two),)
    if mode == "zero-shot":
        k = max(len(labels), 2)
        example = (torch.randn(EXAMPLE_BATCH, d), torch.randn(EXAMPLE_BATCH, d), torch.ones(EXAMPLE_BATCH, 2),
                   torch.randn(k, d), torch.randn(k, d))
        return ZeroShotHeadGraph(), example
    module = HeadGraph(model)
    with torch.no_grad():
        lab = model.label_embeddings(two) if model.use_le else None
    return module, module.example_inputs(EXAMPLE_BATCH, lab)


def _dynamic_axes(specs: list[dict]) -> dict:
    return {s["name"]: {i: a for i, a in enumerate(s["shape"]) if isinstance(a, str)} for s in specs}


def export_graph(
    module: torch.nn.Module, example: tuple, ins: list[dict], outs: list[dict], path: Path, opset: int, max_tokens: int = 77
) -> None:
    module.eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel has no ONNX export
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer warnings
            if any(isinstance(a, str) for spec in ins for a in spec["shape"][1:]):
                # a dynamic axis beyond the batch (transcript tokens): the legacy tracer bakes the
                # sequence length into attention reshapes, so this graph goes through dynamo
                # (whose example batch is >= 2, so the batch axis stays dynamic too)
                import logging

                from torch.export import Dim

                for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir", "torch._dynamo"):
                    logging.getLogger(name).setLevel(logging.ERROR)

                shapes = {
                    spec["name"]: {i: Dim(a, min=2, max=max_tokens) if i else Dim(a) for i, a in enumerate(spec["shape"]) if isinstance(a, str)}
                    for spec in ins
                }
                torch.onnx.export(
                    module, example, str(path), dynamo=True, opset_version=opset, verbose=False,
                    input_names=[s["name"] for s in ins], output_names=[s["name"] for s in outs],
                    dynamic_shapes=shapes, external_data=False,
                )
            else:
                torch.onnx.export(
                    module, example, str(path), dynamo=False, opset_version=opset, do_constant_folding=True,
                    input_names=[s["name"] for s in ins], output_names=[s["name"] for s in outs],
                    dynamic_axes=_dynamic_axes(ins + outs),
                )
    except Exception as e:  # an operator without an ONNX symbolic, an exporter bug: one line
        first = (str(e).strip().splitlines() or [""])[0]
        raise MerstreamError(f"ONNX export of {path.stem} failed at opset {opset}: {type(e).__name__}: {first}") from None
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


FAILED_MANIFEST = "manifest.failed.json"  # an export whose parity check failed: kept to inspect, never scored


def prepare_dir(out: Path) -> None:
    """Create ``out``; an existing export there is replaced, any other non-empty dir refused."""
    if out.exists() and not out.is_dir():
        raise MerstreamError(f"--out {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not (out / MANIFEST).exists() and not (out / FAILED_MANIFEST).exists():
            raise MerstreamError(f"--out {out} is a non-empty directory that is not an ONNX export; choose an empty one")
        for m in (MANIFEST, FAILED_MANIFEST):  # from here on a half-written export reads as corrupt
            (out / m).unlink(missing_ok=True)
        for p in out.iterdir():
            if p.is_file() and (p.suffix in (".onnx", ".npy", ".data") or p.name == TOKENIZER_FILE):
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def validate_options(precision: str, opset: int) -> None:
    if precision not in PRECISIONS:
        raise MerstreamError(f"--precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise MerstreamError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET} (got {opset})")


def export_model(
    model: MerClip,
    out: str | Path,
    *,
    mode: str = "mer-clip",
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tol: float = 1e-4,
    labels: list[str] | None = None,
    graphs: list[str] | None = None,
    reference: ReferenceSet | None = None,
    source: str = "",
    card: dict | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export ``model`` to ``out``; with ``check``, fail (MerstreamError) on a parity miss."""
    step = on_step or (lambda msg: None)
    t0 = time.perf_counter()
    if mode not in MODES:
        raise MerstreamError(f"export mode must be one of {MODES}, got {mode!r}")
    validate_options(precision, opset)
    model = model.eval()
    labels = list(labels or model.cfg.labels)
    if not model.use_le and mode == "mer-clip" and labels != list(model.cfg.labels):
        raise MerstreamError("this model has no label encoder (ablation no_le): its labels are fixed, --labels cannot change them")
    check_labels(labels, "sentiment" if mode == "zero-shot" else model.cfg.task, model.use_le)  # before any export work
    if check and not tol > 0:
        raise MerstreamError(f"--tol must be > 0 (got {tol:g})")
    names = graph_names(model, mode)
    if graphs is not None:
        unknown = [g for g in graphs if g not in names]
        if unknown:
            raise MerstreamError(f"cannot export graph {unknown[0]!r} for this model (it has: {', '.join(names)})")
        names = [g for g in names if g in graphs]
    out = Path(out).expanduser()
    if precision == "fp32":
        return _export_fp32(model, out, mode, opset, check, tol, labels, names, reference, source, card, step, t0,
                            compact=True)

    with tempfile.TemporaryDirectory(prefix="merstream-fp32-") as tmp:
        base = _export_fp32(model, Path(tmp), mode, opset, check, tol, labels, names, reference, source, card, step, t0)
        prepare_dir(out)
        manifest = read_manifest(tmp)
        files = []
        for g in base.graphs:
            t = time.perf_counter()
            src, dst = Path(tmp) / g.file, out / g.file
            if g.name in TOWERS:
                step(f"{precision}: converting {g.name}")
                convert_graph(src, dst, precision)
            else:
                shutil.copyfile(src, dst)
            files.append(GraphFile(g.name, g.file, time.perf_counter() - t, dst.stat().st_size))
        for f in [*manifest.label_files.values(), *([manifest.tokenizer] if manifest.tokenizer else [])]:
            shutil.copyfile(Path(tmp) / f, out / f)
    data = _manifest_data(model, mode, precision, opset, labels, names, source, card, base.parity)
    for name, spec in data["graphs"].items():
        spec["precision"] = precision if name in TOWERS else "fp32"
    result = ExportResult(out, precision, opset, files, base.parity, notes=list(base.notes))
    write_manifest(out, data)
    if precision == "fp16":
        result.accuracy, note = _check_fp16(model, mode, out, reference, step)
        result.notes.append(note)
    elif check or reference is not None:
        step("int8: comparing scores with torch fp32 on the reference set")
        result.accuracy = _compare(model, mode, out, reference)
    result.seconds = time.perf_counter() - t0
    return result


def _export_fp32(model, out, mode, opset, check, tol, labels, names, reference, source, card, step, t0,
                 compact: bool = False) -> ExportResult:
    """The fp32 graphs; ``compact``: fp16-exact weights stored as fp16 (not for the base of an int8
    or fp16 conversion, which looks for float32 weights)."""
    prepare_dir(out)
    files = []
    for name in names:
        step(f"exporting {name} graph (opset {opset})")
        t = time.perf_counter()
        module, example = graph_module(model, name, mode, labels)
        ins, outs = graph_specs(model, name, mode)
        export_graph(module, example, ins, outs, out / f"{name}.onnx", opset, model.context_length)
        if compact:
            store_fp16_exact(out / f"{name}.onnx")
        files.append(GraphFile(name, f"{name}.onnx", time.perf_counter() - t, (out / f"{name}.onnx").stat().st_size))
    step("embedding the labels")
    data = _manifest_data(model, mode, "fp32", opset, labels, names, source, card, None)
    if data.get("tokenizer"):
        write_tokenizer(out / data["tokenizer"])
    with torch.no_grad():
        if mode == "zero-shot":
            for m, f in data["label_files"].items():
                np.save(out / f, model.zero_shot_label_embeddings(labels, m).float().numpy())
        elif model.use_le:
            np.save(out / data["label_files"][""], model.label_embeddings(labels).float().numpy())
    write_manifest(out, data)
    result = ExportResult(out, "fp32", opset, files)
    if check:
        step("parity check: torch vs onnxruntime at batch 1 and 5")
        result.parity = check_parity(_torch_scorer(model, mode, labels), _onnx_scorer(out), parity_inputs(model, reference), tol)
        if not result.parity.ok:  # the graphs stay for inspection; without a manifest nothing scores with them
            (out / MANIFEST).replace(out / FAILED_MANIFEST)
        result.parity.require()
        data["parity"] = result.parity.to_json()
        write_manifest(out, data)
    result.seconds = time.perf_counter() - t0
    return result


def _manifest_data(model, mode, precision, opset, labels, names, source: str, card: dict | None, parity) -> dict:
    """The manifest's entries; ``card``: the model card (name, weights sha256, licence) or None."""
    import onnxruntime

    cfg = model.cfg.to_dict()
    cfg["labels"] = list(labels) if (model.use_le or mode == "zero-shot") else list(model.cfg.labels)
    graphs = {}
    for name in names:
        ins, outs = graph_specs(model, name, mode)
        graphs[name] = {"file": f"{name}.onnx", "inputs": ins, "outputs": outs, "precision": precision}
    if mode == "zero-shot":
        label_files = {"L": "labels_L.npy", "V": "labels_V.npy"}
    else:
        label_files = {"": "labels.npy"} if model.use_le else {}
    data = {
        "mode": mode, "config": cfg, "labels": cfg["labels"], "task": model.cfg.task,
        "threshold": model.cfg.threshold, "ablation": model.cfg.ablation, "precision": precision, "opset": opset,
        "embed_dim": model.embed_dim, "image_size": model.image_size, "context_length": model.context_length,
        "use_le": bool(model.use_le) if mode == "mer-clip" else False, "n_ctx": model.cfg.n_ctx,
        "graphs": graphs, "label_files": label_files,
        "tokenizer": TOKENIZER_FILE if any(n in ("text", "label_encoder") for n in names) else None,
        "source": source, "weights_sha256": (card or {}).get("weights_sha256"), "model_card": card, "exporter": "torch.onnx (TorchScript, dynamo=False)",
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if parity is not None:
        data["parity"] = parity.to_json()
    return data


def write_tokenizer(path: Path) -> None:
    """The tokenizer the text towers were trained with (open_clip's CLIP BPE), for the runtime."""
    from open_clip.tokenizer import default_bpe

    build_clip_tokenizer(default_bpe(), path)


FP16_MIN_ELEMENTS = 1024  # smaller tensors are not worth a Cast node


def store_fp16_exact(path: Path) -> int:
    """Store each float32 weight whose values are all exactly representable in float16 (the weights
    of a checkpoint saved in fp16, like the embedded model's) as float16 followed by a Cast back to
    float32: the same numbers, half the file. onnxruntime folds the Cast when it loads the graph, so
    it computes in float32 as before. Returns the bytes saved."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    casts, saved = [], 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < FP16_MIN_ELEMENTS:
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values, equal_nan=True):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, f"{name}__fp16"))
        casts.append(helper.make_node("Cast", [f"{name}__fp16"], [name], to=TensorProto.FLOAT, name=f"{name}__to_fp32"))
        saved += values.nbytes - half.nbytes
    if casts:
        nodes = casts + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.save(model, str(path))
    return saved


def convert_graph(src: Path, dst: Path, precision: str) -> None:
    """fp32 ONNX file -> int8 (dynamic quantisation) or fp16 (float32 inputs and outputs kept)."""
    import logging

    import onnx

    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" advice on every call
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    elif precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))
    else:
        shutil.copyfile(src, dst)


def _torch_scorer(model: MerClip, mode: str, labels: list[str]):
    from merstream.torch_scorer import TorchScorer, ZeroShotScorer

    return ZeroShotScorer(model, labels) if mode == "zero-shot" else TorchScorer(model, labels)


def _onnx_scorer(directory: Path, providers: list[str] | None = None):
    from merstream.onnx_scorer import OnnxScorer

    return OnnxScorer(directory, providers=providers or ["cpu"])


def _compare(model, mode, out, reference, providers=None) -> PrecisionReport:
    from .reference import random_reference

    onnx = _onnx_scorer(out, providers)
    ref = reference or random_reference(model.image_size, onnx.audio_front_end if "A" in onnx.modalities else None)
    return compare_scores(_torch_scorer(model, mode, onnx.labels), onnx, ref)


def _check_fp16(model, mode, out, reference, step) -> tuple[PrecisionReport | None, str]:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None, (
            "fp16 export written but NOT verified: this onnxruntime has no CUDA execution provider "
            "(the CPU provider cannot run fp16 graphs); load it with onnxruntime-gpu on a CUDA machine"
        )
    step("fp16: comparing scores with torch fp32 on the reference set (CUDA)")
    try:
        return _compare(model, mode, out, reference, ["cuda"]), "fp16 verified with the CUDA execution provider"
    except MerstreamError as e:
        return None, f"fp16 export written but NOT verified: {e}"
