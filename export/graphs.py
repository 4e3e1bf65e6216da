"""Torch modules that are traced into the ONNX graphs of an export (thin views on a MerClip).

Each wraps one piece of :class:`merstream.model.mer_clip.MerClip` so that the exported graph has
plain tensor inputs and outputs; the model code itself is not duplicated here.
"""

from __future__ import annotations

import torch
from torch import nn

from merstream.model.mer_clip import MerClip
from merstream.torch_scorer import zero_shot_probabilities


class VisionGraph(nn.Module):
    """frames [N, 3, S, S] -> [N, D]"""

    def __init__(self, model: MerClip):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model.encode_frames(frames)


class AudioGraph(nn.Module):
    """audio front-end outputs [N, *item] (log-Mel images or Whisper encoder states) -> [N, D]"""

    def __init__(self, model: MerClip):
        super().__init__()
        self.model = model

    def forward(self, spectrograms: torch.Tensor) -> torch.Tensor:
        return self.model.encode_audio(spectrograms)


class TextGraph(nn.Module):
    """token ids [N, C] int64 -> [N, D] (transcripts; zero-shot label prompts)"""

    def __init__(self, model: MerClip):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


class LabelEncoderGraph(nn.Module):
    """label prompt token ids [K, C] int64 -> label embeddings [K, D], learned context baked in"""

    def __init__(self, model: MerClip):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.label_encoder.encode_labels(tokens)


class HeadGraph(nn.Module):
    """CMD (or the no-CMD FC fusion) + similarity + probabilities.

    Inputs: one pooled ``x_<m>`` [B, D] per modality in fusion order, ``present`` [B, M] (1 = the
    modality is present, same order) and, with a label encoder, ``label_emb`` [K, D].
    Output: probabilities [B, K]. The query embedding Z^E and the logit scale are constants.
    """

    def __init__(self, model: MerClip):
        super().__init__()
        self.model = model
        self.mods = model.cfg.modalities
        with torch.no_grad():
            query = model.query_embedding().detach().clone() if model.use_cmd else torch.zeros(0)
        self.register_buffer("query", query, persistent=False)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        m = len(self.mods)
        xs, present = args[:m], args[m]
        label_emb = args[m + 1] if self.model.use_le else None
        pooled = dict(zip(self.mods, xs))
        pres = {k: present[:, i] for i, k in enumerate(self.mods)}
        fused = self.model.fuse(pooled, pres, self.query if self.model.use_cmd else None)
        return self.model.probabilities(self.model.similarity(fused, label_emb))

    def input_names(self) -> list[str]:
        return self.names_for(self.model)

    @staticmethod
    def names_for(model: MerClip) -> list[str]:
        return [f"x_{k}" for k in model.cfg.modalities] + ["present"] + (["label_emb"] if model.use_le else [])

    def example_inputs(self, batch: int, labels: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        d = self.model.embed_dim
        gen = torch.Generator().manual_seed(1)
        xs = [torch.randn(batch, d, generator=gen) for _ in self.mods]
        present = (torch.rand(batch, len(self.mods), generator=gen) > 0.3).float()
        present[0] = 1.0
        return (*xs, present) + ((labels,) if self.model.use_le else ())


class ZeroShotHeadGraph(nn.Module):
    """Zero-shot CLIP scoring: x_L, x_V [B, D], present [B, 2], label_emb_L, label_emb_V [K, D]
    -> mean over present modalities of softmax(100 * cosine) [B, K]."""

    mods = ["L", "V"]

    def forward(self, x_l, x_v, present, label_emb_l, label_emb_v):
        pooled = {"L": x_l, "V": x_v}
        pres = {"L": present[:, 0], "V": present[:, 1]}
        return zero_shot_probabilities(pooled, pres, {"L": label_emb_l, "V": label_emb_v})

    def input_names(self) -> list[str]:
        return ["x_L", "x_V", "present", "label_emb_L", "label_emb_V"]
