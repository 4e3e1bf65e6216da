"""VEGA-style visual anchors and a dual-branch head with self-distillation (training only).

* Class anchors: the mean CLIP image embedding of labelled face exemplars of each class
  (:func:`build_anchors`, computed with the model's image tower, no gradient).
* Stochastic anchor sampling: with probability ``p`` a class uses one random exemplar's embedding
  instead of its mean (:meth:`AnchorBank.sample`).
* Anchor-similarity loss: a sample's pooled visual embedding should be closest (cosine, softmax
  over classes) to the anchors of its labels (:func:`anchor_loss`).
* Dual-branch head: besides the fused prediction, each modality gets its own head (a projection
  scored against the same label embeddings); self-distillation pulls each per-modality prediction
  towards the (detached) fused one (:class:`ModalityHeads`, :func:`distill_loss`).

Nothing here is part of the saved model: the runtime checkpoint stays a plain MER-CLIP model.
Each piece has its own switch (:class:`VegaConfig`), all off by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from merstream.model.mer_clip import MerClip, standardise


@dataclass
class VegaConfig:
    anchors: bool = False  # anchor-similarity loss
    anchor_p: float = 0.0  # stochastic anchor sampling probability (0: always the class mean)
    anchor_weight: float = 0.1
    anchor_temperature: float = 0.1
    dual_branch: bool = False  # per-modality heads + self-distillation
    distill_weight: float = 0.5
    branch_label_weight: float = 0.0  # optional supervised loss on the per-modality heads

    @property
    def enabled(self) -> bool:
        return self.anchors or self.dual_branch


class AnchorBank:
    """Per-class exemplar embeddings (normalised) and their means."""

    def __init__(self, exemplars: dict[int, torch.Tensor], num_classes: int):
        missing = [k for k in range(num_classes) if k not in exemplars or len(exemplars[k]) == 0]
        if missing:
            from merstream.errors import MerstreamError

            raise MerstreamError(f"VEGA anchors: no face exemplars for classes {missing}")
        self.exemplars = {k: F.normalize(v.float(), dim=-1) for k, v in exemplars.items()}
        self.means = torch.stack([F.normalize(self.exemplars[k].mean(0), dim=-1) for k in range(num_classes)])

    def sample(self, p: float, gen: torch.Generator | None = None) -> torch.Tensor:
        """[K, D] anchors: each class's mean, or with probability ``p`` one random exemplar."""
        if p <= 0:
            return self.means
        out = self.means.clone()
        swap = torch.rand(len(out), generator=gen) < p
        for k in torch.nonzero(swap).flatten().tolist():
            ex = self.exemplars[k]
            out[k] = ex[int(torch.randint(len(ex), (1,), generator=gen))]
        return out


@torch.no_grad()
def build_anchors(model: MerClip, faces_by_class: dict[int, torch.Tensor], num_classes: int,
                  batch: int = 128) -> AnchorBank:
    """faces_by_class[k]: [N_k, 3, S, S] model-ready face images -> AnchorBank of image embeddings."""
    was = model.training
    model.eval()
    emb = {}
    for k, x in faces_by_class.items():
        emb[k] = torch.cat([model.encode_frames(x[i: i + batch]) for i in range(0, len(x), batch)])
    model.train(was)
    return AnchorBank(emb, num_classes)


def anchor_loss(visual: torch.Tensor, targets: torch.Tensor, anchors: torch.Tensor, present: torch.Tensor,
                temperature: float = 0.1) -> torch.Tensor:
    """Soft cross-entropy between cos(visual, anchors)/T and the normalised label targets,
    over samples whose vision modality is present."""
    keep = present > 0
    if not keep.any():
        return visual.sum() * 0.0
    sim = F.normalize(visual[keep], dim=-1) @ anchors.to(visual.dtype).t() / temperature
    t = targets[keep].float()
    t = t / t.sum(-1, keepdim=True).clamp_min(1.0)
    return -(t * sim.log_softmax(-1)).sum(-1).mean()


class ModalityHeads(nn.Module):
    """One projection per modality; its output is scored against the label embeddings."""

    def __init__(self, modalities: list[str], dim: int):
        super().__init__()
        self.heads = nn.ModuleDict({m: nn.Linear(dim, dim) for m in modalities})
        for h in self.heads.values():
            nn.init.eye_(h.weight)
            nn.init.zeros_(h.bias)

    def forward(self, pooled: dict[str, torch.Tensor], label_emb: torch.Tensor) -> dict[str, torch.Tensor]:
        lab = F.normalize(label_emb, dim=-1)
        return {m: F.normalize(h(pooled[m]), dim=-1) @ lab.t() for m, h in self.heads.items()}


def branch_logits(model: MerClip, sim: torch.Tensor) -> torch.Tensor:
    if model.cfg.task == "emotion":
        return standardise(sim)
    return sim * model.logit_scale.exp()


def distill_loss(model: MerClip, branch_sims: dict[str, torch.Tensor], fused_sim: torch.Tensor,
                 present: dict[str, torch.Tensor]) -> torch.Tensor:
    """Self-distillation: each present modality's head matches the detached fused prediction."""
    teacher = model.logits(fused_sim).detach()
    total = fused_sim.sum() * 0.0
    for m, s in branch_sims.items():
        keep = present[m] > 0
        if not keep.any():
            continue
        student = branch_logits(model, s[keep])
        if model.cfg.task == "emotion":
            total = total + F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher[keep]))
        else:
            total = total + F.kl_div(student.log_softmax(-1), teacher[keep].softmax(-1), reduction="batchmean")
    return total


def branch_label_loss(model: MerClip, branch_sims: dict[str, torch.Tensor], targets: torch.Tensor,
                      present: dict[str, torch.Tensor]) -> torch.Tensor:
    total = targets.sum() * 0.0
    for m, s in branch_sims.items():
        keep = present[m] > 0
        if keep.any():
            total = total + task_loss(model, branch_logits(model, s[keep]), targets[keep])
    return total


def task_loss(model: MerClip, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Multi-label BCE (emotion) or cross-entropy (sentiment) on the head's logits."""
    if model.cfg.task == "emotion":
        return F.binary_cross_entropy_with_logits(logits, targets.float())
    return F.cross_entropy(logits, targets.argmax(-1))
