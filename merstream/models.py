"""Which model scores a run: a checkpoint, an ONNX export, a zero-shot CLIP, or the default.

``resolve_scorer(None)`` returns the embedded default model when the package ships one
(``merstream/assets/merstream-small``); otherwise a randomly initialised tiny model, with a
notice saying its scores are meaningless.
"""

from __future__ import annotations

from pathlib import Path

from .config import ModelConfig
from .errors import MerstreamError
from .scorer import Scorer, TorchScorer, ZeroShotScorer

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL_DIR = ASSETS / "merstream-small"


def default_model_path() -> Path | None:
    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / "model.safetensors").exists() else None


def resolve_scorer(
    model: str | None = None,
    labels: list[str] | None = None,
    clip: str | None = None,
    clip_weights: str | None = None,
    backend: str = "auto",
    providers: list[str] | None = None,
) -> Scorer:
    from .model.checkpoint import load_checkpoint

    if clip_weights is not None or clip is not None:
        if model is not None:
            raise MerstreamError("pass either --model or --clip/--clip-weights (zero-shot), not both")
        return zero_shot_scorer(clip or "ViT-B-32", clip_weights, labels)
    if model is None:
        path = default_model_path()
        if path is None:
            from .model.mer_clip import MerClip

            import torch

            torch.manual_seed(0)
            scorer = TorchScorer(MerClip(ModelConfig(clip="merstream-tiny")).eval(), labels)
            scorer.notice = (
                "no trained model installed: using a randomly initialised merstream-tiny, scores are "
                "meaningless (pass --model CHECKPOINT_OR_EXPORT_DIR)"
            )
            return scorer
        model = str(path)
    p = Path(model).expanduser()
    if not p.exists():
        raise MerstreamError(f"model not found: {p}")
    if p.is_dir() and (p / "manifest.json").exists():
        if backend == "torch":
            raise MerstreamError(f"{p} is an ONNX export; the torch backend needs a checkpoint")
        from .onnx_scorer import OnnxScorer

        scorer = OnnxScorer(p, labels=labels, providers=providers)
        scorer.notice = f"model: ONNX export {p} ({scorer.provider})"
        return scorer
    if backend == "onnx":
        raise MerstreamError(f"{p} is not an ONNX export directory (no manifest.json); run `merstream export` first")
    scorer = TorchScorer(load_checkpoint(p), labels)
    scorer.notice = f"model: checkpoint {p} (torch)"
    return scorer


def zero_shot_scorer(arch: str, weights: str | None, labels: list[str] | None) -> ZeroShotScorer:
    from .model.mer_clip import MerClip
    from .model.weights import load_clip

    cfg = ModelConfig(clip=arch, pretrained=weights, fusion_order=["L", "V"], labels=labels or ModelConfig().labels)
    clip = load_clip(arch, weights)
    scorer = ZeroShotScorer(MerClip(cfg, clip=clip).eval(), labels)
    scorer.notice = f"model: zero-shot CLIP {arch} ({weights or 'random weights'}), frames and transcript only"
    return scorer
