"""Cross-modal decoder (CMD): one layer per modality, applied in the fusion order.

Each layer: self-attention on the query, cross-attention with keys/values from one modality,
feed-forward (pre-norm residual blocks). A modality that is absent for a sample (mask 0) leaves
the query unchanged for that layer, so one graph serves every subset of modalities.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossModalLayer(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm_self = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm_cross = nn.LayerNorm(width)
        self.norm_memory = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width))

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """query [B, Q, D], memory [B, M, D] -> [B, Q, D]."""
        h = self.norm_self(query)
        query = query + self.self_attn(h, h, h, need_weights=False)[0]
        h = self.norm_cross(query)
        m = self.norm_memory(memory)
        query = query + self.cross_attn(h, m, m, need_weights=False)[0]
        return query + self.mlp(self.norm_mlp(query))


class CrossModalDecoder(nn.Module):
    def __init__(self, order: list[str], width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.order = list(order)
        self.layers = nn.ModuleDict({m: CrossModalLayer(width, heads, mlp_ratio, dropout) for m in self.order})

    def forward(self, query: torch.Tensor, memories: dict[str, torch.Tensor], present: dict[str, torch.Tensor]):
        """query [B, 1, D]; memories[m] [B, M, D]; present[m] [B] in {0, 1} -> [B, D]."""
        for m in self.order:
            updated = self.layers[m](query, memories[m])
            gate = present[m].to(query.dtype).view(-1, 1, 1)
            query = gate * updated + (1 - gate) * query
        return query[:, 0]
