"""open_clip towers: build a CLIP model from a name or a config dict, and a text tower that can
take learnable prompt vectors in place of some token embeddings."""

from __future__ import annotations

import copy
import logging
from functools import lru_cache
from pathlib import Path

import open_clip
import torch
from torch import nn

from ..errors import MerstreamError

_CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
open_clip.add_model_config(_CONFIG_DIR)  # registers merstream-tiny and friends with open_clip


def clip_model_config(clip) -> dict:
    """The open_clip model config dict for an architecture name or a full dict."""
    if isinstance(clip, dict):
        return clip
    cfg = open_clip.get_model_config(clip)
    if cfg is None:
        raise MerstreamError(f"unknown CLIP architecture {clip!r} (see open_clip.list_models())")
    return cfg


def build_clip(clip) -> open_clip.CLIP:
    """A randomly initialised open_clip CLIP model (weights are loaded separately)."""
    cfg = copy.deepcopy(clip_model_config(clip))
    cfg.pop("custom_text", None)
    for key in ("hf_tokenizer_name", "tokenizer_kwargs"):
        cfg.get("text_cfg", {}).pop(key, None)
    try:
        model = open_clip.CLIP(**cfg)
    except TypeError as e:
        raise MerstreamError(f"CLIP architecture {clip!r} is not a plain CLIP config: {e}") from None
    return model


@lru_cache(maxsize=4)
def get_tokenizer(context_length: int = 77):
    logging.getLogger("open_clip").setLevel(logging.ERROR)
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


class TextTower(nn.Module):
    """CLIP text transformer with EOS ("argmax") pooling and projection.

    ``forward(tokens)`` encodes token ids; ``forward(tokens, prompt=ctx)`` replaces the token
    embeddings at positions 1..n_ctx with learnable context vectors (CoOp prompts).
    """

    def __init__(self, clip: open_clip.CLIP):
        super().__init__()
        self.token_embedding = copy.deepcopy(clip.token_embedding)
        self.positional_embedding = copy.deepcopy(clip.positional_embedding)
        self.transformer = copy.deepcopy(clip.transformer)
        self.ln_final = copy.deepcopy(clip.ln_final)
        self.text_projection = copy.deepcopy(clip.text_projection)
        self.register_buffer("attn_mask", clip.attn_mask.clone(), persistent=False)
        self.context_length = int(self.positional_embedding.shape[0])
        self.width = int(self.token_embedding.weight.shape[1])

    def forward(self, tokens: torch.Tensor, prompt: torch.Tensor | None = None) -> torch.Tensor:
        x = self.token_embedding(tokens)
        if prompt is not None:
            n = prompt.shape[0]
            ctx = prompt.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
            x = torch.cat([x[:, :1], ctx, x[:, 1 + n :]], dim=1)
        n_tok = tokens.shape[1]  # may be shorter than context_length: causal attention makes the EOS
        x = x + self.positional_embedding[:n_tok].to(x.dtype)  # output independent of later padding
        x = self.transformer(x, attn_mask=self.attn_mask[:n_tok, :n_tok])
        x = self.ln_final(x)
        eos = tokens.argmax(dim=-1)  # the EOT token has the largest id in CLIP's vocabulary
        x = x[torch.arange(x.shape[0], device=x.device), eos]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection


def vision_tower(clip: open_clip.CLIP) -> nn.Module:
    """An independent copy of the CLIP image tower (class-token output, projected)."""
    return copy.deepcopy(clip.visual)


def image_size(clip_cfg: dict) -> int:
    size = clip_cfg["vision_cfg"].get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


class WhisperStatesHead(nn.Module):
    """Whisper encoder states [N, T, W] of one segment -> mean and standard deviation over its frames
    -> LayerNorm -> MLP -> [N, D]."""

    def __init__(self, width: int, hidden: int, embed_dim: int, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(2 * width)
        self.mlp = nn.Sequential(nn.Linear(2 * width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, embed_dim))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        mean = states.mean(dim=1)
        std = (states - mean.unsqueeze(1)).pow(2).mean(dim=1).add(1e-6).sqrt()
        return self.mlp(self.norm(torch.cat([mean, std], dim=-1)))


class WhisperTower(nn.Module):
    """The trained part of a Whisper audio tower: the encoder's last ``tuned_layers`` layers and its
    final LayerNorm (copied from Whisper by :meth:`init_from_whisper`; derived weights, MIT), then the
    pooling head. Its input is the frozen layers' states (``frontends.WhisperFrontEnd``)."""

    def __init__(self, tower, embed_dim: int):
        super().__init__()
        from .whisper_layers import EncoderLayer

        self.tower_cfg = tower
        self.tuned = nn.ModuleList(EncoderLayer(tower.width, max(1, tower.width // 64), 4 * tower.width)
                                   for _ in range(tower.tuned_layers))
        self.norm = nn.LayerNorm(tower.width) if tower.tuned_layers else None
        self.head = WhisperStatesHead(tower.width, tower.hidden, embed_dim, tower.dropout)

    def init_from_whisper(self, weights) -> None:
        """Copy the encoder's last layers and final norm (``whisper_bin.EncoderWeights``) into the tuned ones."""
        from .frontends import check_fits

        check_fits(weights, self.tower_cfg, "the Whisper encoder")
        first = weights.layers - len(self.tuned)
        for j, layer in enumerate(self.tuned):
            layer.load(weights, first + j)
        if self.norm is not None:
            self.norm.weight.data = torch.from_numpy(weights.arrays["layer_norm/gamma"].copy())
            self.norm.bias.data = torch.from_numpy(weights.arrays["layer_norm/beta"].copy())

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        for layer in self.tuned:
            states = layer(states)
        if self.norm is not None:
            states = self.norm(states)
        return self.head(states)


def audio_tower(cfg, clip: open_clip.CLIP, embed_dim: int) -> nn.Module:
    """The audio tower ``cfg.audio_tower`` names (a ModelConfig): a copy of the CLIP image tower for
    log-Mel images, or the trained part of a Whisper encoder tower."""
    if cfg.audio_tower.type == "whisper":
        return WhisperTower(cfg.audio_tower, embed_dim)
    return vision_tower(clip)  # initialised from image weights (MER-CLIP)


class SentenceHead(nn.Module):
    """A frozen sentence encoder's unit vectors [N, W] (``text_frontends.MiniLMFrontEnd``) ->
    LayerNorm -> MLP (``hidden`` 0: dropout and one linear layer) -> [N, D]: the trained part of a
    minilm text tower."""

    def __init__(self, tower, embed_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(tower.width)
        if tower.hidden:
            self.mlp = nn.Sequential(nn.Linear(tower.width, tower.hidden), nn.GELU(), nn.Dropout(tower.dropout),
                                     nn.Linear(tower.hidden, embed_dim))
        else:
            self.mlp = nn.Sequential(nn.Dropout(tower.dropout), nn.Linear(tower.width, embed_dim))

    def forward(self, sentences: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(sentences))


def text_tower(cfg, clip: open_clip.CLIP, embed_dim: int) -> nn.Module:
    """The transcript tower ``cfg.text_tower`` names (a ModelConfig): a copy of the CLIP text tower on
    token ids, or the trained head over a frozen sentence encoder's vectors."""
    if cfg.text_tower.type == "minilm":
        return SentenceHead(cfg.text_tower, embed_dim)
    return TextTower(clip)
