"""Which model scores a run: a checkpoint, an ONNX export, a zero-shot CLIP, or the default.

``resolve_scorer(None)`` uses the embedded default model when the package ships one
(``merstream/assets/merstream-small-v4``: the checkpoint, and its ONNX export in ``onnx/``, which the
default backend scores with onnxruntime, no torch imported); otherwise a randomly initialised tiny
model, with a notice saying its scores are meaningless. With the default ``backend="auto"`` other
checkpoints are scored by onnxruntime through a cached export (see :mod:`merstream.export_cache`);
torch is imported only to export one the first time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .config import ModelConfig
from .errors import MerstreamError
from .scorer import Scorer

if TYPE_CHECKING:
    from .model.mer_clip import MerClip

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL_NAME = "merstream-small-v4"
DEFAULT_MODEL_DIR = ASSETS / DEFAULT_MODEL_NAME
DEFAULT_EXPORT_DIR = DEFAULT_MODEL_DIR / "onnx"  # made by `python -m export.embedded`


def default_model_path() -> Path | None:
    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / "model.safetensors").exists() else None


@dataclass
class ResolvedModel:
    """A torch MerClip chosen from the command-line options (see :func:`resolve_model`)."""

    model: "MerClip"
    kind: str  # "checkpoint" | "default" | "random-tiny" | "zero-shot"
    source: str  # checkpoint path, or a description
    notice: str


def resolve_model(
    model: str | None = None, clip: str | None = None, clip_weights: str | None = None, labels: list[str] | None = None
) -> ResolvedModel:
    """The torch model for --model / --clip / --clip-weights (not an ONNX export): a checkpoint,
    a zero-shot CLIP configuration, the embedded default, or a random tiny model."""
    from .model.checkpoint import load_checkpoint
    from .model.mer_clip import MerClip

    if clip_weights is not None or clip is not None:
        if model is not None:
            raise MerstreamError("pass either --model or --clip/--clip-weights (zero-shot), not both")
        from .model.weights import load_clip

        arch = clip or "ViT-B-32"
        cfg = ModelConfig(clip=arch, pretrained=clip_weights, fusion_order=["L", "V"], labels=labels or ModelConfig().labels)
        notice = f"model: zero-shot CLIP {arch} ({clip_weights or 'random weights'}), frames and transcript only"
        return ResolvedModel(MerClip(cfg, clip=load_clip(arch, clip_weights)).eval(), "zero-shot", f"{arch}/{clip_weights}", notice)
    kind = "checkpoint"
    if model is None:
        path = default_model_path()
        if path is None:
            import torch

            torch.manual_seed(0)
            notice = (
                "no trained model installed: using a randomly initialised merstream-tiny, scores are "
                "meaningless (pass --model CHECKPOINT_OR_EXPORT_DIR)"
            )
            return ResolvedModel(MerClip(ModelConfig(clip="merstream-tiny")).eval(), "random-tiny", "merstream-tiny (random, seed 0)", notice)
        model, kind = str(path), "default"
    p = Path(model).expanduser()
    if not p.exists():
        raise MerstreamError(f"model not found: {p}")
    if is_export_dir(p):
        raise MerstreamError(f"{p} is an ONNX export; a torch checkpoint is needed here")
    return ResolvedModel(load_checkpoint(p), kind, str(p), f"model: checkpoint {p} (torch)")


def is_export_dir(p: Path) -> bool:
    return p.is_dir() and (p / "manifest.json").exists()


def resolve_scorer(
    model: str | None = None,
    labels: list[str] | None = None,
    clip: str | None = None,
    clip_weights: str | None = None,
    backend: str = "auto",
    providers: list[str] | None = None,
    on_note: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> Scorer:
    """The scorer for the command-line options. ``backend``: "onnx" needs an export directory (or
    the embedded model, which ships one); "torch" runs a checkpoint in torch; "auto" runs export
    directories and checkpoints (the default model included) with onnxruntime, exporting a
    checkpoint once into the cache."""
    zero_shot = clip is not None or clip_weights is not None
    if model is not None and not zero_shot:
        p = Path(model).expanduser()
        if not p.exists():
            raise MerstreamError(f"model not found: {p}")
        if p.name == "manifest.json" and is_export_dir(p.parent):
            raise MerstreamError(f"{p} is an export's manifest: pass the export directory ({p.parent})")
        if is_export_dir(p):
            if backend == "torch":
                raise MerstreamError(f"{p} is an ONNX export; the torch backend needs a checkpoint")
            return _onnx_scorer(p, f"ONNX export {p}", labels, providers, threads)
        if backend == "onnx":
            raise MerstreamError(f"{p} is not an ONNX export directory (no manifest.json); run `merstream export` first")
    if model is None and not zero_shot and backend != "torch" and is_export_dir(DEFAULT_EXPORT_DIR):
        return _onnx_scorer(DEFAULT_EXPORT_DIR, f"embedded default model {DEFAULT_MODEL_NAME}", labels, providers, threads, short=True)
    if backend == "auto" and not zero_shot and (model is not None or default_model_path() is not None):
        from .export_cache import cached_export

        source = Path(model).expanduser() if model is not None else default_model_path()
        what = f"checkpoint {source}" if model is not None else f"embedded default model {DEFAULT_MODEL_NAME}"
        return _onnx_scorer(cached_export(source, on_note), what, labels, providers, threads, short=True)
    r = resolve_model(model, clip, clip_weights, labels)
    if backend == "onnx" and r.kind in ("default", "checkpoint"):
        raise MerstreamError(f"{r.source} is not an ONNX export directory (no manifest.json); run `merstream export` first")
    from .torch_scorer import TorchScorer, ZeroShotScorer

    scorer = ZeroShotScorer(r.model, labels) if r.kind == "zero-shot" else TorchScorer(r.model, labels)
    scorer.notice = r.notice
    if r.kind in ("checkpoint", "default"):
        from .model_card import card_for_checkpoint

        scorer.card = card_for_checkpoint(Path(r.source)).to_json()
    else:
        from .model_card import ModelCard

        scorer.card = ModelCard(r.source, None, "the CLIP weights' own licence" if r.kind == "zero-shot" else "random weights", None).to_json()
    return scorer


def _onnx_scorer(directory: Path, what: str, labels, providers, threads, short: bool = False) -> Scorer:
    from .onnx_scorer import OnnxScorer

    scorer = OnnxScorer(directory, labels=labels, providers=providers, threads=threads)
    scorer.notice = f"model: {what} ({'ONNX ' if short else ''}{scorer.precision}, {scorer.provider})"
    if scorer.provider_note:
        scorer.notice += f"; {scorer.provider_note}"
    return scorer
