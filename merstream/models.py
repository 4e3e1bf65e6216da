"""Which model scores a run: a checkpoint, an ONNX export, a zero-shot CLIP, or the default.

``resolve_scorer(None)`` uses the embedded default model when the package ships one
(``merstream/assets/merstream-small``); otherwise a randomly initialised tiny model, with a
notice saying its scores are meaningless. With the default ``backend="auto"`` checkpoints are
scored by onnxruntime through a cached export (see :mod:`merstream.export_cache`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .config import ModelConfig
from .errors import MerstreamError
from .scorer import Scorer, TorchScorer, ZeroShotScorer

if TYPE_CHECKING:
    from .model.mer_clip import MerClip

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL_DIR = ASSETS / "merstream-small"


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
    """The scorer for the command-line options. ``backend``: "onnx" needs an export directory;
    "torch" runs a checkpoint in torch; "auto" runs export directories and checkpoints (the
    default model included) with onnxruntime, exporting a checkpoint once into the cache."""
    if model is not None and clip is None and clip_weights is None:
        p = Path(model).expanduser()
        if not p.exists():
            raise MerstreamError(f"model not found: {p}")
        if is_export_dir(p):
            if backend == "torch":
                raise MerstreamError(f"{p} is an ONNX export; the torch backend needs a checkpoint")
            from .onnx_scorer import OnnxScorer

            scorer = OnnxScorer(p, labels=labels, providers=providers, threads=threads)
            scorer.notice = f"model: ONNX export {p} ({scorer.precision}, {scorer.provider})"
            if scorer.provider_note:
                scorer.notice += f"; {scorer.provider_note}"
            return scorer
        if backend == "onnx":
            raise MerstreamError(f"{p} is not an ONNX export directory (no manifest.json); run `merstream export` first")
    r = resolve_model(model, clip, clip_weights, labels)
    if backend == "onnx" and r.kind in ("default", "checkpoint"):
        raise MerstreamError(f"{r.source} is not an ONNX export directory (no manifest.json); run `merstream export` first")
    if backend == "auto" and r.kind in ("default", "checkpoint"):
        from .export_cache import cached_export
        from .onnx_scorer import OnnxScorer

        export_dir = cached_export(r.model, Path(r.source), on_note)
        scorer = OnnxScorer(export_dir, labels=labels, providers=providers, threads=threads)
        what = "embedded default model merstream-small" if r.kind == "default" else f"checkpoint {r.source}"
        scorer.notice = f"model: {what} (ONNX {scorer.precision}, {scorer.provider})"
        if scorer.provider_note:
            scorer.notice += f"; {scorer.provider_note}"
        return scorer
    scorer = ZeroShotScorer(r.model, labels) if r.kind == "zero-shot" else TorchScorer(r.model, labels)
    scorer.notice = r.notice
    return scorer

