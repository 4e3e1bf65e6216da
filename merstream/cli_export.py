"""`merstream export` (ONNX export, implemented in the top-level ``export`` package) and
`merstream doctor` (which onnxruntime build and execution providers are active)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .cli_app import app, console, note, parse_labels


@app.command("export")
def export_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the ONNX graphs, labels.npy and manifest.json."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint to export (dir or .safetensors). Default: the default model."),
    clip: Optional[str] = typer.Option(None, "--clip", help="Export a zero-shot CLIP configuration: open_clip architecture (e.g. ViT-B-32)."),
    clip_weights: Optional[str] = typer.Option(None, "--clip-weights", help="Zero-shot: open_clip pretrained tag or local weights file."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated label set to store (default: the model's labels)."),
    precision: str = typer.Option("fp32", help="fp32 | fp16 (GPU, CUDA provider) | int8 (dynamic quantisation, CPU)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare torch and onnxruntime outputs (fp32 tolerance --tol)."),
    opset: int = typer.Option(17, help="ONNX opset (14-20)."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Video/audio file: real frames and audio for the checks (int8/fp16 accuracy)."),
    tol: float = typer.Option(1e-4, help="Max abs difference allowed by the fp32 parity check."),
):
    """Export the model to ONNX for onnxruntime (`merstream file --model DIR` then scores with it)."""
    from export import export_model
    from export.onnx_export import validate_options
    from export.reference import reference_from_media

    from .models import resolve_model

    validate_options(precision, opset)
    label_list = parse_labels(labels)
    with console.status("loading the model...") as status:
        r = resolve_model(model, clip, clip_weights, label_list)
        note(r.notice)
        ref = None
        if reference is not None:
            status.update(f"reading reference media {reference}...")
            ref = reference_from_media(reference, r.model.image_size, r.model.audio_front_end(), face_crop=r.model.cfg.face_crop)
        card = None
        if r.kind in ("checkpoint", "default"):
            from .model_card import card_for_checkpoint

            card = card_for_checkpoint(Path(r.source)).to_json()
        result = export_model(
            r.model, out, mode="zero-shot" if r.kind == "zero-shot" else "mer-clip", precision=precision, opset=opset,
            check=check, tol=tol, labels=label_list, reference=ref, source=r.source,
            card=card,
            on_step=lambda msg: status.update(msg + "..."),
        )
    table = Table(title=f"{result.directory}: {result.precision}, opset {result.opset}")
    table.add_column("graph")
    table.add_column("file")
    table.add_column("MB", justify="right")
    table.add_column("s", justify="right")
    for g in result.graphs:
        table.add_row(g.name, g.file, f"{g.size_bytes / 1e6:.1f}", f"{g.seconds:.1f}")
    Console().print(table)
    if result.parity is not None:
        for line in result.parity.lines():
            console.print(f"  {line}", soft_wrap=True)
        w = result.parity.worst
        console.print(
            f"parity OK (fp32 graphs): {len(result.parity.diffs)} outputs at batch 1 and 5, "
            f"max |torch - onnx| = {w.max_abs:.2e} <= {result.parity.tol:g}", soft_wrap=True,
        )
    else:
        note("parity check skipped (--no-check)")
    if result.accuracy is not None:
        for line in result.accuracy.lines():
            console.print(line, soft_wrap=True)
    for n in result.notes:
        note(n)
    console.print(
        f"exported in {result.seconds:.1f} s; manifest: {result.directory / 'manifest.json'}  "
        f"(score with: merstream file VIDEO --model {result.directory})", soft_wrap=True,
    )


@app.command("doctor")
def doctor_cmd():
    """Show the onnxruntime build, its execution providers, whether a GPU is usable, and whether the
    embedded model's pretrained parts (the Whisper encoder's package) are the ones it was trained with."""
    from importlib import metadata

    import onnxruntime

    from .onnx_scorer import GPU_SWAP, provider_list, torch_sees_cuda

    dists = [d for d in ("onnxruntime", "onnxruntime-gpu") if _installed(metadata, d)]
    avail = onnxruntime.get_available_providers()
    console.print(f"onnxruntime {onnxruntime.__version__} ({', '.join(dists) or 'unknown distribution'}): providers {', '.join(avail)}", soft_wrap=True)
    cuda = torch_sees_cuda()
    console.print(f"torch {_torch_version()}: CUDA {'available' if cuda else 'not available'}")
    chosen = [p if isinstance(p, str) else p[0] for p in provider_list(None)]
    console.print(f"an ONNX export would run on: {chosen[0]}")
    if len(dists) == 2:
        note("both onnxruntime and onnxruntime-gpu are installed; they overwrite each other. Fix: pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu")
    elif cuda and "CUDAExecutionProvider" not in avail:
        note(f"a CUDA GPU is present but onnxruntime is the CPU build; for GPU scoring run: {GPU_SWAP}")
    _doctor_embedded_model()


def _doctor_embedded_model() -> None:
    """The embedded model's pretrained parts: a Whisper audio encoder whose model.bin and a sentence
    encoder whose model.safetensors are checked (a wrong one is the usual one-line error), and
    whether the graphs built from them are already cached."""
    from .config import ModelConfig
    from .models import DEFAULT_MODEL_DIR

    cfg_file = DEFAULT_MODEL_DIR / "config.json"
    if not cfg_file.exists():
        note(f"no embedded model at {DEFAULT_MODEL_DIR} (pass --model to file / live)")
        return
    cfg = ModelConfig.load(cfg_file)
    console.print(f"embedded model {DEFAULT_MODEL_DIR.name}: audio tower {cfg.audio_tower.type}, text tower "
                  f"{cfg.text_tower.type}", soft_wrap=True)
    from .model.frontends import audio_front_end, package_version

    if cfg.audio_tower.type == "whisper":
        front = audio_front_end(cfg)  # checks the package's model.bin against the sha256 the model was trained with
        t = cfg.audio_tower
        console.print(f"Whisper encoder: {t.package} {package_version(t.package) or ''}, model.bin sha256 "
                      f"{t.sha256[:12]}... as trained ({front.model_dir})", soft_wrap=True)
        _doctor_graph("frozen layers' graph", front.graph_cache_path, "audio")
    if cfg.text_tower.type == "minilm":
        from .model.text_frontends import text_front_end

        text = text_front_end(cfg)  # checks model.safetensors the same way
        t = cfg.text_tower
        console.print(f"sentence encoder: {t.package} {package_version(t.package) or ''}, model.safetensors sha256 "
                      f"{t.sha256[:12]}... as trained ({text.model_dir})", soft_wrap=True)
        _doctor_graph("sentence encoder's graph", text.graph_cache_path, "speech recognition")


def _doctor_graph(what: str, path, first_use: str) -> None:
    state = f"cached ({path})" if path.exists() else f"not cached yet: built on the first run with {first_use} (about 1 s), then kept in {path.parent}"
    console.print(f"{what}: {state}", soft_wrap=True)


def _installed(metadata, name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def _torch_version() -> str:
    import torch

    return torch.__version__
