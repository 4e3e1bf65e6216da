"""The MER-CLIP model: CLIP towers for frames, log-Mel audio images and transcripts, a frozen
prompt-learning label encoder, a cross-modal decoder queried by "Emotion", and a cosine-similarity
head. The only model definition: training, export and the runtime all import it from here.

Encoders produce one embedding per frame / audio segment / transcript; pooling over frames and
segments (mean) happens in :meth:`MerClip.pool` so that the runtime can cache per-item embeddings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ZERO_SHOT_TEMPLATES, ModelConfig
from ..errors import MerstreamError
from .decoder import CrossModalDecoder
from .prompts import PromptLabelEncoder, prompt_tokens, text_tokens
from .towers import TextTower, audio_tower, build_clip, clip_model_config, image_size, text_tower, vision_tower



class MerClip(nn.Module):
    def __init__(self, cfg: ModelConfig, clip=None):
        """``clip``: an open_clip CLIP whose weights initialise the towers (random if None)."""
        super().__init__()
        self.cfg = cfg
        clip_cfg = clip_model_config(cfg.clip)
        clip = clip if clip is not None else build_clip(cfg.clip)
        self.embed_dim = int(clip_cfg["embed_dim"])
        self.image_size = image_size(clip_cfg)
        self.context_length = int(clip.positional_embedding.shape[0])
        mods = cfg.modalities
        if "A" in mods and cfg.audio_tower.type == "clip" and cfg.audio.image_size != self.image_size:
            arch = repr(cfg.clip) if isinstance(cfg.clip, str) else "configured"
            raise MerstreamError(f"config: audio.image_size is {cfg.audio.image_size} but the {arch} towers take "
                                 f"{self.image_size} px images; set audio.image_size to {self.image_size}")
        self.vision = vision_tower(clip) if "V" in mods else None
        self.audio = audio_tower(cfg, clip, self.embed_dim) if "A" in mods else None
        self.text = text_tower(cfg, clip, self.embed_dim) if "L" in mods else None
        self.use_le = cfg.ablation in ("full", "no_cmd")
        self.use_cmd = cfg.ablation in ("full", "no_le")
        # the label encoder is also the source of the query Z^E, so CMD needs it
        self.label_encoder = PromptLabelEncoder(TextTower(clip), cfg.n_ctx, cfg.query_word)
        d = self.embed_dim
        if self.use_cmd:
            heads = cfg.cmd_heads if d % cfg.cmd_heads == 0 else 1
            self.cmd = CrossModalDecoder(mods, d, heads, cfg.cmd_mlp_ratio, cfg.cmd_dropout)
        else:
            self.fuse_fc = nn.Linear(len(mods) * d, d)
        if not self.use_le:
            self.label_fc = nn.Linear(d, len(cfg.labels))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(cfg.logit_scale_init)))
        self.register_buffer("label_tokens", self.label_encoder.tokens(cfg.labels), persistent=False)

    # ---- encoders (one embedding per item) -------------------------------------------------
    def encode_frames(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] normalised frames -> [N, D] class-token embeddings; with ``mirror_faces``, the
        mean of each frame's and its left-right mirror image's (a face means the same emotion
        mirrored, and the tower, trained on randomly mirrored faces, errs differently on the two)."""
        if self.cfg.mirror_faces:
            return (self.vision(images) + self.vision(images.flip(-1))) / 2
        return self.vision(images)

    def encode_audio(self, spectrograms: torch.Tensor) -> torch.Tensor:
        """[N, *item] audio front-end outputs (:meth:`audio_front_end`: log-Mel images or Whisper
        encoder states) -> [N, D] segment embeddings."""
        return self.audio(spectrograms)

    def init_audio_from_pretrained(self) -> None:
        """Before training from scratch: a Whisper audio tower's tuned layers start as Whisper's own
        (read from the package's model.bin); other towers are left as they are."""
        if self.audio is not None and self.cfg.audio_tower.type == "whisper":
            from .whisper_bin import encoder_weights

            self.audio.init_from_whisper(encoder_weights(self.audio_front_end().model_dir))

    def audio_front_end(self):
        """What :meth:`encode_audio` takes for raw 2 s segments (``merstream.model.frontends``)."""
        from .frontends import audio_front_end

        return audio_front_end(self.cfg)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, C] token ids (CLIP text tower: EOS embeddings) or [N, W] sentence vectors (minilm,
        :meth:`text_inputs`) -> [N, D]."""
        return self.text(tokens)

    def text_inputs(self, texts: list[str]) -> torch.Tensor:
        """What :meth:`encode_text` takes for transcripts: CLIP token ids, or the frozen sentence
        encoder's vectors (``merstream.model.text_frontends``)."""
        front = self.text_front_end()
        return self.tokenize(texts) if front is None else torch.from_numpy(front(texts))

    def text_front_end(self):
        """What makes :meth:`text_inputs` from transcripts (``merstream.model.text_frontends``); None
        for the CLIP text tower, whose token ids come from :meth:`tokenize`."""
        from .text_frontends import text_front_end

        return text_front_end(self.cfg)

    def label_embeddings(self, labels: list[str] | None = None) -> torch.Tensor:
        tokens = self.label_tokens if labels is None else self.label_encoder.tokens(labels).to(self.logit_scale.device)
        return self.label_encoder.encode_labels(tokens)

    def query_embedding(self) -> torch.Tensor:
        return self.label_encoder.encode_query()

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """CLIP token ids (the CLIP text tower's input; label prompts use ``label_encoder.tokens``)."""
        return text_tokens(texts, self.context_length)

    @staticmethod
    def pool(items: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T, D] per-frame / per-segment embeddings (mask [B, T]) -> [B, D] average."""
        if mask is None:
            return items.mean(dim=1)
        w = mask.to(items.dtype).unsqueeze(-1)
        return (items * w).sum(1) / w.sum(1).clamp_min(1.0)

    # ---- fusion and prediction ---------------------------------------------------------------
    def fuse(
        self, pooled: dict[str, torch.Tensor], present: dict[str, torch.Tensor], query: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pooled X^m [B, D] and presence [B] per modality -> fused embedding (or logits) [B, D].

        ``query``: a precomputed :meth:`query_embedding` [D] (export bakes it in as a constant)."""
        mods = self.cfg.modalities
        batch = next(iter(pooled.values())).shape[0]
        if self.use_cmd:
            q = self.query_embedding() if query is None else query
            q = q.view(1, 1, -1).expand(batch, 1, -1)
            return self.cmd(q, {m: pooled[m].unsqueeze(1) for m in mods}, present)
        parts = [pooled[m] * present[m].to(pooled[m].dtype).unsqueeze(-1) for m in mods]
        return self.fuse_fc(torch.cat(parts, dim=-1))

    def similarity(self, fused: torch.Tensor, label_emb: torch.Tensor | None = None) -> torch.Tensor:
        """Fused [B, D] -> [B, K]: cosine similarity to label embeddings (or FC logits, no LE)."""
        if not self.use_le:
            return self.label_fc(fused)
        if label_emb is None:
            label_emb = self.label_embeddings()
        return F.normalize(fused, dim=-1) @ F.normalize(label_emb, dim=-1).t()

    def logits(self, sim: torch.Tensor) -> torch.Tensor:
        """Similarities -> the logits the loss sees (BCE for emotion, CE for sentiment)."""
        if self.cfg.task == "emotion":
            if not self.use_le:
                return sim
            return standardise(sim)
        scale = self.logit_scale.exp() if self.use_le else 1.0
        return sim * scale

    def probabilities(self, sim: torch.Tensor) -> torch.Tensor:
        lg = self.logits(sim)
        return torch.sigmoid(lg) if self.cfg.task == "emotion" else lg.softmax(dim=-1)

    def predict(self, probs: torch.Tensor) -> torch.Tensor:
        """[B, K] probabilities -> [B, K] bool predicted labels."""
        if self.cfg.task == "emotion":
            return probs >= self.cfg.threshold
        return F.one_hot(probs.argmax(-1), probs.shape[-1]).bool()

    def forward(
        self,
        frames: torch.Tensor | None = None,  # [B, T, 3, S, S]
        frame_mask: torch.Tensor | None = None,  # [B, T]
        spectrograms: torch.Tensor | None = None,  # [B, A, *item]: audio front-end outputs per segment
        segment_mask: torch.Tensor | None = None,  # [B, A]
        tokens: torch.Tensor | None = None,  # [B, C] token ids, or [B, W] sentence vectors (text_inputs)
        present: dict[str, torch.Tensor] | None = None,
        labels: list[str] | None = None,
    ) -> torch.Tensor:
        """Raw inputs -> similarities [B, K] (training path; the runtime calls the pieces)."""
        pooled, pres = self.pooled_inputs(frames, frame_mask, spectrograms, segment_mask, tokens, present)
        fused = self.fuse(pooled, pres)
        return self.similarity(fused, None if labels is None else self.label_embeddings(labels))

    def pooled_inputs(
        self,
        frames: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        spectrograms: torch.Tensor | None = None,
        segment_mask: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
        present: dict[str, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Raw inputs -> pooled X^m [B, D] and presence [B] per modality (missing ones are zeros)."""
        pooled, pres = {}, {}
        batch = next(x for x in (frames, spectrograms, tokens) if x is not None).shape[0]
        dev = self.logit_scale.device
        for m in self.cfg.modalities:
            if m == "V" and frames is not None:
                b, t = frames.shape[:2]
                emb = self.encode_frames(frames.flatten(0, 1)).view(b, t, -1)
                pooled[m] = self.pool(emb, frame_mask)
            elif m == "A" and spectrograms is not None:
                b, t = spectrograms.shape[:2]
                emb = self.encode_audio(spectrograms.flatten(0, 1)).view(b, t, -1)
                pooled[m] = self.pool(emb, segment_mask)
            elif m == "L" and tokens is not None:
                pooled[m] = self.encode_text(tokens)
            else:
                pooled[m] = torch.zeros(batch, self.embed_dim, device=dev)
                pres[m] = torch.zeros(batch, device=dev)
            if m not in pres:
                pres[m] = present[m] if present and m in present else torch.ones(batch, device=dev)
        return pooled, pres

    # ---- zero-shot (pretrained CLIP, no trained checkpoint) --------------------------------
    def zero_shot_label_embeddings(self, labels: list[str], modality: str) -> torch.Tensor:
        """Hand-written prompts through the frozen CLIP text tower (no learned context)."""
        template = ZERO_SHOT_TEMPLATES[modality]
        tokens = prompt_tokens([template.format(x) for x in labels], 0, self.context_length)
        return self.label_encoder.text(tokens.to(self.logit_scale.device))


def standardise(sim: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-sample z-score of label similarities (MER-CLIP multi-label scoring)."""
    mean = sim.mean(dim=-1, keepdim=True)
    std = sim.std(dim=-1, keepdim=True, unbiased=False) if sim.shape[-1] > 1 else torch.ones_like(mean)
    return (sim - mean) / (std + eps)

