"""The CLIP text tokeniser at run time, without torch or open_clip: Hugging Face ``tokenizers`` over
the vocabulary an export writes beside its graphs (``tokenizer.json``).

The text towers were trained with open_clip's ``SimpleTokenizer`` (byte-level BPE, 49,408 ids).
``build_clip_tokenizer`` turns the same vocabulary and merges into a ``tokenizers`` model at export
time; the text is cleaned exactly as open_clip cleans it (ftfy, HTML entities, whitespace, lower
case) before it reaches the tokenizer. tests/test_tokenizer.py checks the ids against open_clip on
every MELD test utterance and on unicode, emoji and over-length strings.
"""

from __future__ import annotations

import gzip
import html
from pathlib import Path

import numpy as np

from .errors import MerstreamError

TOKENIZER_FILE = "tokenizer.json"
SOT, EOT = "<start_of_text>", "<end_of_text>"
# open_clip's split pattern (after lower-casing): contractions, letter runs, single digits, other symbols
SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
N_MERGES = 49152 - 256 - 2  # the merges CLIP uses from its vocabulary file


def clean(text: str) -> str:
    """open_clip's "lower" cleaning: ftfy, HTML entities twice, whitespace runs to one space, lower case."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


def build_clip_tokenizer(bpe_path: str | Path, out: str | Path) -> Path:
    """Write ``tokenizer.json`` for CLIP's byte-level BPE vocabulary file (open_clip's
    ``bpe_simple_vocab_16e6.txt.gz``); ids are those open_clip gives."""
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1 : N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    alphabet = list(_BYTE_TO_UNICODE.values())  # CLIP's order (printable bytes first): the ids depend on it
    vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
    tok = Tokenizer(models.BPE(
        vocab={v: i for i, v in enumerate(vocab)}, merges=merges, end_of_word_suffix="</w>",
        continuing_subword_prefix="", fuse_unk=False,
    ))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.add_special_tokens([AddedToken(SOT, normalized=False), AddedToken(EOT, normalized=False)])
    out = Path(out)
    tok.save(str(out))
    return out


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible map of bytes to printable characters (vocabulary order)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


_BYTE_TO_UNICODE = _bytes_to_unicode()


class ClipTokenizer:
    """Token ids for transcripts and label prompts, from an export's ``tokenizer.json``."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        try:
            self.tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises its own exception type
            raise MerstreamError(f"cannot load the tokenizer {path}: {(str(e).splitlines() or [''])[0]}") from None
        self.sot, self.eot = self.tok.token_to_id(SOT), self.tok.token_to_id(EOT)
        if self.sot is None or self.eot is None:
            raise MerstreamError(f"{path} is not a CLIP tokenizer (no {SOT} / {EOT} tokens)")

    def encode(self, texts: list[str]) -> list[list[int]]:
        cleaned = [clean(t) for t in texts]
        return [e.ids for e in self.tok.encode_batch(cleaned, add_special_tokens=False)]

    def prompt_tokens(self, texts: list[str], n_ctx: int, context_length: int) -> np.ndarray:
        """[N, context_length] int64 "[SOS] X*n_ctx text [EOS]", zero-padded (the X slots are replaced
        by learned context vectors); text that does not fit is cut, the EOS is always kept."""
        out = np.zeros((len(texts), context_length), dtype=np.int64)
        room = context_length - 2 - n_ctx
        for i, ids in enumerate(self.encode(texts)):
            row = [self.sot] * (1 + n_ctx) + ids[:room] + [self.eot]
            out[i, : len(row)] = row
        return out

    def text_tokens(self, texts: list[str], context_length: int) -> np.ndarray:
        """Plain token ids for transcripts."""
        return self.prompt_tokens(texts, 0, context_length)
