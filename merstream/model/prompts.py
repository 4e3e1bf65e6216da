"""Label encoder: the frozen CLIP text tower with learnable CoOp context vectors.

A label (any text: a word, a phrase or a sentence) is encoded as "[SOS] v_1 ... v_n {label} [EOS]"
where v_i are learnable vectors shared by all labels. The emotion query Z^E is the query word
(default "Emotion") with its own learnable context; with no query word it is the context alone.
"""

from __future__ import annotations

import torch
from torch import nn

from .towers import TextTower, get_tokenizer


def prompt_tokens(texts: list[str], n_ctx: int, context_length: int) -> torch.Tensor:
    """Token ids "[SOS] X*n_ctx text [EOS]" padded to context_length (X slots get replaced)."""
    tok = get_tokenizer(context_length)
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    room = context_length - 2 - n_ctx
    for i, text in enumerate(texts):
        ids = tok.encode(text)[:room] if text else []
        row = [tok.sot_token_id] + [tok.sot_token_id] * n_ctx + ids + [tok.eot_token_id]
        out[i, : len(row)] = torch.tensor(row)
    return out


def text_tokens(texts: list[str], context_length: int) -> torch.Tensor:
    """Plain CLIP token ids for transcripts (truncated, always ending in EOS)."""
    return prompt_tokens(texts, 0, context_length)


class PromptLabelEncoder(nn.Module):
    def __init__(self, text: TextTower, n_ctx: int, query_word: str | None):
        super().__init__()
        self.text = text
        for p in self.text.parameters():
            p.requires_grad_(False)
        self.n_ctx = n_ctx
        self.query_word = query_word
        self.label_ctx = nn.Parameter(torch.randn(n_ctx, text.width) * 0.02)
        self.query_ctx = nn.Parameter(torch.randn(n_ctx, text.width) * 0.02)
        self.register_buffer(
            "query_tokens", prompt_tokens([query_word or ""], n_ctx, text.context_length), persistent=False
        )

    def train(self, mode: bool = True):
        super().train(mode)
        self.text.eval()  # frozen: no dropout, no statistics updates
        return self

    def tokens(self, labels: list[str]) -> torch.Tensor:
        return prompt_tokens(labels, self.n_ctx, self.text.context_length)

    def encode_labels(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens, prompt=self.label_ctx)

    def encode_query(self) -> torch.Tensor:
        return self.text(self.query_tokens, prompt=self.query_ctx)[0]
