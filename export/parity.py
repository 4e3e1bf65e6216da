"""Parity of an ONNX export with its torch model, through the runtime Scorer interface.

``check_parity`` runs the torch scorer and the onnxruntime scorer on the same inputs at batch 1
and batch 5 (which also proves the batch axes are dynamic) and records the max abs difference of
every output: frame / audio / transcript embeddings, label embeddings from the exported label
encoder, and head probabilities. ``compare_scores`` measures a reduced-precision export (int8,
fp16) on a reference set: score differences and how often the predicted labels agree.

Command line (an existing export against its checkpoint)::

    python -m export.parity EXPORT_DIR --model CHECKPOINT [--reference VIDEO] [--tol 1e-4]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from merstream.errors import MerstreamError

from .reference import REFERENCE_TEXTS, ReferenceSet

BATCHES = (1, 5)
NEW_LABELS = ["calm", "surprised", "bored", "a burst of laughter", "contempt"]


@dataclass
class Diff:
    output: str
    batch: int
    max_abs: float
    scale: float  # max |torch value|, for context


@dataclass
class ParityReport:
    tol: float
    diffs: list[Diff] = field(default_factory=list)

    @property
    def worst(self) -> Diff | None:
        return max(self.diffs, key=lambda d: d.max_abs, default=None)

    @property
    def ok(self) -> bool:
        return bool(self.diffs) and all(d.max_abs <= self.tol for d in self.diffs)

    def require(self) -> None:
        bad = [d for d in self.diffs if not d.max_abs <= self.tol]
        if bad:
            d = max(bad, key=lambda x: x.max_abs if np.isfinite(x.max_abs) else np.inf)
            raise MerstreamError(
                f"ONNX parity check failed: {d.output} at batch {d.batch} differs from torch by "
                f"{d.max_abs:.3g} (tolerance {self.tol:g}; {len(bad)} of {len(self.diffs)} outputs over)"
            )
        if not self.diffs:
            raise MerstreamError("ONNX parity check compared nothing")

    def lines(self) -> list[str]:
        return [f"{d.output:<34} batch {d.batch}: max |torch - onnx| = {d.max_abs:.2e} (values up to {d.scale:.2f})" for d in self.diffs]

    def to_json(self) -> dict:
        return {"tol": self.tol, "ok": self.ok, "diffs": [asdict(d) for d in self.diffs]}


@dataclass
class ParityInputs:
    frames: np.ndarray  # [5, 3, S, S]
    spectrograms: np.ndarray | None  # [5, *item]: audio front-end outputs (None: no audio tower)
    texts: list[str]  # 5
    pooled: dict[str, np.ndarray]  # [5, D] per modality
    present: dict[str, np.ndarray]  # [5] per modality, mixed patterns
    real_frames: np.ndarray | None = None  # from a reference media file
    real_spectrograms: np.ndarray | None = None


def parity_inputs(model, reference: ReferenceSet | None = None, seed: int = 0) -> ParityInputs:
    n, s, d = max(BATCHES), model.image_size, model.embed_dim
    rng = np.random.default_rng(seed)
    mods = model.cfg.modalities
    frames = rng.standard_normal((n, 3, s, s)).astype(np.float32)
    spectrograms = model.audio_front_end().example(n, rng) if "A" in model.cfg.modalities else None
    pooled = {m: rng.standard_normal((n, d)).astype(np.float32) for m in mods}
    present = {m: np.ones(n, dtype=np.float32) for m in mods}
    for i, m in enumerate(mods):  # rows 1..: one modality missing in turn, last row only the first
        present[m][1 + i] = 0.0
        if i > 0:
            present[m][n - 1] = 0.0
    inp = ParityInputs(frames, spectrograms, REFERENCE_TEXTS[:n], pooled, present)
    if reference is not None:
        inp.real_frames = None if reference.frames is None else reference.frames[:n]
        inp.real_spectrograms = None if reference.spectrograms is None else reference.spectrograms[:n]
    return inp


def torch_label_embeddings(torch_scorer, labels: list[str]) -> dict[str, np.ndarray]:
    model = torch_scorer.model
    with torch.no_grad():
        if torch_scorer.name == "torch-zero-shot":
            return {m: model.zero_shot_label_embeddings(labels, m).numpy() for m in ("L", "V")}
        return {"": model.label_embeddings(labels).numpy()}


def check_parity(torch_scorer, onnx_scorer, inp: ParityInputs, tol: float = 1e-4) -> ParityReport:
    """Torch vs ONNX on every exported output at batch 1 and 5 (see module docstring)."""
    rep = ParityReport(tol)

    def add(name: str, batch: int, ref: np.ndarray, got: np.ndarray) -> None:
        if ref.shape != got.shape:
            rep.diffs.append(Diff(f"{name} (shape {got.shape} != {ref.shape})", batch, float("inf"), 0.0))
            return
        rep.diffs.append(Diff(name, batch, float(np.abs(ref - got).max()), float(np.abs(ref).max())))

    graphs = onnx_scorer.graphs
    tokens = None
    if "text" in graphs and onnx_scorer.text_front_end is not None:  # one front end makes both backends' inputs
        tokens = onnx_scorer.text_inputs(inp.texts)
    elif "text" in graphs:  # the runtime's tokenizer (tokenizer.json) gives the ids torch's gives
        tokens = onnx_scorer.tokenize(inp.texts)
        add("transcript token ids", len(inp.texts), torch_scorer.tokenize(inp.texts).astype(np.float64), tokens.astype(np.float64))
    encoders = [
        ("frame embeddings", "vision", "encode_frames", inp.frames),
        ("frame embeddings (real frames)", "vision", "encode_frames", inp.real_frames),
        ("audio embeddings", "audio", "encode_audio", inp.spectrograms),
        ("audio embeddings (real audio)", "audio", "encode_audio", inp.real_spectrograms),
        ("transcript embeddings", "text", "encode_text", tokens),
    ]
    for name, graph, fn, x in encoders:
        if graph not in graphs or x is None:
            continue
        for b in BATCHES:
            add(name, b, getattr(torch_scorer, fn)(x[:b]), getattr(onnx_scorer, fn)(x[:b]))
    if onnx_scorer.can_embed_labels:
        for labels in (onnx_scorer.labels, NEW_LABELS[:1], NEW_LABELS):
            ref, got = torch_label_embeddings(torch_scorer, labels), onnx_scorer.embed_labels(labels)
            for key in ref:
                add(f"label embeddings{' ' + key if key else ''}", len(labels), ref[key], got[key])
    for labels in ([*onnx_scorer.labels], NEW_LABELS) if onnx_scorer.can_embed_labels else ([*onnx_scorer.labels],):
        torch_scorer.set_labels(labels)
        onnx_scorer.set_labels(labels)
        tag = "exported labels" if labels is not NEW_LABELS else "new labels"
        for b in BATCHES:
            pooled = {m: v[:b] for m, v in inp.pooled.items()}
            present = {m: v[:b] for m, v in inp.present.items()}
            add(f"probabilities ({tag})", b, torch_scorer.score(pooled, present), onnx_scorer.score(pooled, present))
    original = list(onnx_scorer.manifest.labels)
    torch_scorer.set_labels(original)
    onnx_scorer.set_labels(original)
    return rep


@dataclass
class PrecisionReport:
    """A reduced-precision export against torch fp32 on the windows of a reference set."""

    source: str
    precision: str
    windows: int
    max_abs_score_diff: float
    mean_abs_score_diff: float
    label_agreement: float  # fraction of windows with the same predicted label set
    top1_agreement: float  # fraction of windows with the same top label
    embedding_cosine: dict[str, float]  # per modality: min cosine(torch, onnx) over items

    def lines(self) -> list[str]:
        cos = ", ".join(f"{m} {c:.4f}" for m, c in self.embedding_cosine.items())
        return [
            f"{self.precision} vs torch fp32 on {self.windows} reference windows ({self.source}):",
            f"  score |diff|: max {self.max_abs_score_diff:.4f}, mean {self.mean_abs_score_diff:.4f}",
            f"  label agreement {self.label_agreement:.1%} (same label set), top-1 agreement {self.top1_agreement:.1%}",
            f"  embedding cosine torch vs onnx (min): {cos}",
        ]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return float((a * b).sum(-1).min())


def _window_inputs(scorer, ref: ReferenceSet) -> tuple[dict, dict, dict]:
    w, d = ref.windows, scorer.embed_dim
    pooled = {m: np.zeros((w, d), dtype=np.float32) for m in scorer.modalities}
    present = {m: np.zeros(w, dtype=np.float32) for m in scorer.modalities}
    items = {}
    if "V" in pooled and ref.frames is not None:
        e = items["V"] = scorer.encode_frames(ref.frames)
        pooled["V"] = np.stack([e[ref.window_frames(i)].mean(0) for i in range(w)])
        present["V"][:] = 1
    if "A" in pooled and ref.spectrograms is not None:
        pooled["A"] = items["A"] = scorer.encode_audio(ref.spectrograms)
        present["A"][:] = 1
    if "L" in pooled:
        pooled["L"] = items["L"] = scorer.encode_text(scorer.text_inputs(ref.texts))
        present["L"][:] = 1
    return pooled, present, items


def compare_scores(torch_scorer, onnx_scorer, ref: ReferenceSet) -> PrecisionReport:
    pt, st, et = _window_inputs(torch_scorer, ref)
    po, so, eo = _window_inputs(onnx_scorer, ref)
    a, b = torch_scorer.score(pt, st), onnx_scorer.score(po, so)
    la, lb = torch_scorer.predict(a), onnx_scorer.predict(b)
    diff = np.abs(a - b)
    return PrecisionReport(
        source=ref.source,
        precision=onnx_scorer.precision,
        windows=ref.windows,
        max_abs_score_diff=float(diff.max()),
        mean_abs_score_diff=float(diff.mean()),
        label_agreement=float((la == lb).all(-1).mean()),
        top1_agreement=float((a.argmax(-1) == b.argmax(-1)).mean()),
        embedding_cosine={m: _cos(et[m], eo[m]) for m in et},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.parity", description="Check an ONNX export against its torch checkpoint.")
    ap.add_argument("export_dir")
    ap.add_argument("--model", help="the checkpoint it was exported from (default: the default model)")
    ap.add_argument("--reference", help="a video/audio file for real inputs")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args(argv)
    try:
        from merstream.models import resolve_model
        from merstream.onnx_scorer import OnnxScorer
        from merstream.torch_scorer import TorchScorer

        from .reference import reference_from_media

        onnx = OnnxScorer(args.export_dir, providers=["cpu"])
        model = resolve_model(args.model).model
        ref = reference_from_media(args.reference, model.image_size, model.audio_front_end(), face_crop=model.cfg.face_crop) if args.reference else None
        torch_s = TorchScorer(model, onnx.labels)
        if onnx.precision == "fp32":
            rep = check_parity(torch_s, onnx, parity_inputs(model, ref), args.tol)
            print("\n".join(rep.lines()))
            rep.require()
            print(f"parity OK: every difference <= {args.tol:g}")
        else:
            from .reference import random_reference

            print("\n".join(compare_scores(torch_s, onnx, ref or random_reference(model.image_size, model.audio_front_end())).lines()))
    except MerstreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
