"""Whisper encoder layers in torch, loaded from a CTranslate2 ``model.bin`` (``whisper_bin``): the
layers a Whisper audio tower tunes (``towers.WhisperTower``), and the whole encoder for checks
against the runtime's graph (``whisper_onnx``) and CTranslate2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .whisper_bin import EncoderWeights


class EncoderLayer(nn.Module):
    """Pre-LayerNorm transformer layer: x + attn(ln(x)), then x + ffn(ln(x)); fused q|k|v projection."""

    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn_in = nn.Linear(d, ffn)
        self.ffn_out = nn.Linear(ffn, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) * (d // self.heads) ** -0.5  # written out: traces to plain ONNX ops
        a = att.softmax(dim=-1) @ v
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.ffn_out(F.gelu(self.ffn_in(self.ffn_norm(x))))  # exact (erf) GELU, as Whisper

    def load(self, w: EncoderWeights, i: int) -> None:
        """Weights of the encoder's layer ``i`` (0-based)."""
        names = {"attn_norm.weight": "self_attention/layer_norm/gamma", "attn_norm.bias": "self_attention/layer_norm/beta",
                 "qkv.weight": "self_attention/linear_0/weight", "qkv.bias": "self_attention/linear_0/bias",
                 "out.weight": "self_attention/linear_1/weight", "out.bias": "self_attention/linear_1/bias",
                 "ffn_norm.weight": "ffn/layer_norm/gamma", "ffn_norm.bias": "ffn/layer_norm/beta",
                 "ffn_in.weight": "ffn/linear_0/weight", "ffn_in.bias": "ffn/linear_0/bias",
                 "ffn_out.weight": "ffn/linear_1/weight", "ffn_out.bias": "ffn/linear_1/bias"}
        self.load_state_dict({k: torch.from_numpy(w.layer(i, v).copy()) for k, v in names.items()})


class WhisperEncoder(nn.Module):
    """The whole encoder (checks): log-Mel [B, n_mels, 2T] -> states [B, T, d] after the final norm."""

    def __init__(self, w: EncoderWeights):
        super().__init__()
        a = w.arrays
        self.conv1 = nn.Conv1d(w.n_mels, w.width, 3, padding=1)
        self.conv2 = nn.Conv1d(w.width, w.width, 3, stride=2, padding=1)
        for conv, name in ((self.conv1, "conv1"), (self.conv2, "conv2")):
            conv.weight.data = torch.from_numpy(a[f"{name}/weight"].copy())
            conv.bias.data = torch.from_numpy(a[f"{name}/bias"].copy())
        self.register_buffer("positions", torch.from_numpy(a["position_encodings/encodings"].copy()))
        self.layers = nn.ModuleList(EncoderLayer(w.width, w.heads, w.ffn) for _ in range(w.layers))
        for i, layer in enumerate(self.layers):
            layer.load(w, i)
        self.norm = nn.LayerNorm(w.width)
        self.norm.weight.data = torch.from_numpy(a["layer_norm/gamma"].copy())
        self.norm.bias.data = torch.from_numpy(a["layer_norm/beta"].copy())

    def forward(self, mel: torch.Tensor, layers: int | None = None) -> torch.Tensor:
        """States after the first ``layers`` layers (None: all, then the final norm)."""
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        x = x + self.positions[: x.shape[1]]
        for layer in self.layers[: layers]:
            x = layer(x)
        return self.norm(x) if layers is None else x
