"""The torch backend of the Scorer interface (training, export parity and ``--backend torch``)."""

from __future__ import annotations

import numpy as np
import torch

from .errors import MerstreamError
from .model.mer_clip import MerClip
from .model.prompts import text_tokens
from .scorer import Scorer, check_labels


class TorchScorer(Scorer):
    """Scores with a :class:`MerClip` in torch (eager, no grad)."""

    name = "torch"

    def __init__(self, model: MerClip, labels: list[str] | None = None, batch_size: int = 32):
        self.model = model.eval()
        self.cfg = model.cfg
        self.embed_dim = model.embed_dim
        self.image_size = model.image_size
        self.context_length = model.context_length
        self.batch_size = batch_size
        self.set_labels(labels or list(model.cfg.labels))

    def set_labels(self, labels: list[str]) -> None:
        check_labels(labels, self.cfg.task, self.model.use_le)
        if not self.model.use_le and list(labels) != list(self.cfg.labels):
            raise MerstreamError("this model has no label encoder (ablation no_le): its labels are fixed")
        self.labels = list(labels)
        with torch.no_grad():
            self.label_emb = self.model.label_embeddings(self.labels) if self.model.use_le else None
            self.query = self.model.query_embedding() if self.model.use_cmd else None  # constant: once

    def text_tokens(self, texts):
        return text_tokens(texts, self.context_length).numpy()

    @torch.no_grad()
    def _batched(self, fn, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        outs = [fn(torch.from_numpy(np.ascontiguousarray(x[i : i + self.batch_size]))) for i in range(0, len(x), self.batch_size)]
        return torch.cat(outs).float().numpy()

    def encode_frames(self, x):
        return self._batched(self.model.encode_frames, x)

    def encode_audio(self, x):
        return self._batched(self.model.encode_audio, x)

    def encode_text(self, tokens):
        kind = np.int64 if self.text_front_end is None else np.float32
        return self._batched(self.model.encode_text, np.asarray(tokens).astype(kind))

    @torch.no_grad()
    def score(self, pooled, present):
        p = {m: torch.from_numpy(np.asarray(v, dtype=np.float32)) for m, v in pooled.items()}
        s = {m: torch.from_numpy(np.asarray(v, dtype=np.float32)) for m, v in present.items()}
        fused = self.model.fuse(p, s, self.query)
        sim = self.model.similarity(fused, self.label_emb)
        return self.model.probabilities(sim).numpy()


class ZeroShotScorer(TorchScorer):
    """Pretrained CLIP without a trained checkpoint: frames vs "a photo of a {label} face." with
    the image tower, the transcript vs "a {label} statement." with the text tower; the
    per-modality softmax(100 * cosine) distributions are averaged over the modalities present.
    Audio is not used (CLIP was never trained on spectrograms)."""

    name = "torch-zero-shot"

    def set_labels(self, labels):
        check_labels(labels, "sentiment", True)  # a softmax over the labels: 2 or more
        self.labels = list(labels)
        with torch.no_grad():
            self.zs = {m: self.model.zero_shot_label_embeddings(self.labels, m) for m in ("V", "L")}

    @torch.no_grad()
    def score(self, pooled, present):
        p = {m: torch.from_numpy(np.asarray(v, dtype=np.float32)) for m, v in pooled.items()}
        s = {m: torch.from_numpy(np.asarray(v, dtype=np.float32)) for m, v in present.items()}
        return zero_shot_probabilities(p, s, self.zs).numpy()

    def predict(self, probs):
        out = np.zeros_like(probs, dtype=bool)
        out[np.arange(len(probs)), probs.argmax(-1)] = True
        return out


def zero_shot_probabilities(
    pooled: dict[str, torch.Tensor], present: dict[str, torch.Tensor], label_emb: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Zero-shot scores (torch; also exported to ONNX): per modality V / L in ``pooled``,
    softmax(100 * cosine to the label prompts), averaged over the modalities present [B, K]."""
    total, weight = 0.0, 0.0
    for m in ("V", "L"):
        if m not in pooled:
            continue
        x = torch.nn.functional.normalize(pooled[m].float(), dim=-1)
        t = torch.nn.functional.normalize(label_emb[m], dim=-1)
        w = present[m].float().unsqueeze(-1)
        total = total + w * (100.0 * x @ t.t()).softmax(-1)
        weight = weight + w
    if isinstance(weight, float):
        raise ValueError("zero-shot scoring needs the V or L modality")
    return total / weight.clamp_min(1.0)


__all__ = ["TorchScorer", "ZeroShotScorer", "zero_shot_probabilities"]
