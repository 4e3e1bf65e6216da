"""Text front ends: what the model's text tower takes for transcripts, computed without torch.

The model config picks it with its text tower (``ModelConfig.text_tower.type``):

    clip     [N, C] int64 CLIP BPE token ids (each backend's tokenizer: ``Scorer.tokenize``)
    minilm   [N, 384] float32 sentence vectors of a frozen all-MiniLM-L6-v2, run in onnxruntime from
             the ``model.safetensors`` an installed package ships (checked by sha256)

    front = text_front_end(cfg)      # None for the clip tower
    x = front(["I can't believe it"])  # -> [1, 384]

Runtime, export and training all ask this module for the minilm inputs, so the trained head sees at
run time exactly what it learnt from.
"""

from __future__ import annotations

import json
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..config import ModelConfig, TextTowerConfig
from ..errors import MerstreamError
from ..user_cache import cache_root
from .frontends import cached_model, packaged_file

WEIGHTS_FILE = "model/model.safetensors"
BATCH = 32


class MiniLMFrontEnd:
    """Transcripts -> unit sentence vectors [N, width] of a frozen BERT sentence encoder. The
    word-piece tokenizer is the package's ``tokenizer.json`` (HF ``tokenizers``, cut to
    ``max_tokens``); the encoder graph is written from its weights (``minilm_onnx``) and kept in the
    user's cache, keyed by the weights' sha256 and the graph writer's version."""

    kind = "minilm"
    input_name = "sentence"
    dtype = np.float32

    def __init__(self, tower: TextTowerConfig):
        self.tower = tower
        self.weights_path = packaged_file(tower.package, WEIGHTS_FILE, tower.sha256, "the sentence encoder")
        self.model_dir = self.weights_path.parent
        self._session = None
        self._tokenizer = None
        self._lock = threading.Lock()

    @property
    def item_shape(self) -> tuple[int, ...]:
        return (self.tower.width,)

    @property
    def graph_cache_path(self) -> Path:
        return cache_root() / f"{self._graph_key()}.onnx"

    def _graph_key(self) -> str:
        from .minilm_onnx import GRAPH_VERSION

        return f"minilm-{self.tower.sha256[:16]}-v{GRAPH_VERSION}"

    def _build_graph(self) -> bytes:
        from .minilm_onnx import bert_weights, sentence_graph

        w = bert_weights(self.model_dir)
        if w.width != self.tower.width:
            raise MerstreamError(f"{self.model_dir}: a sentence encoder of width {w.width} does not fit text_tower "
                                 f"width {self.tower.width}")
        return sentence_graph(w).SerializeToString()

    def tokenizer(self):
        with self._lock:
            if self._tokenizer is None:
                from tokenizers import Tokenizer

                try:
                    tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
                except Exception as e:  # tokenizers raises its own exception type
                    raise MerstreamError(f"cannot read the sentence encoder's tokenizer in {self.model_dir}: "
                                         f"{(str(e).splitlines() or [''])[0]}") from None
                tok.no_padding()  # the file pads to a fixed length; batches are padded to their longest
                tok.enable_truncation(self.tower.max_tokens)
                self._tokenizer = tok
            return self._tokenizer

    def session(self):
        tok = self.tokenizer()
        with self._lock:
            if self._session is None:
                from .onnx_writer import cpu_session

                raw = os.environ.get("MERSTREAM_TEXT_THREADS", "0")
                if not raw.isdigit():
                    raise MerstreamError(f"MERSTREAM_TEXT_THREADS must be a whole number of threads, got {raw!r}")
                self._session = cpu_session(cached_model(self._graph_key(), self._build_graph), int(raw) or None)
            return self._session, tok

    def load(self) -> None:
        self.session()

    def token_ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """[N, T] int64 word-piece ids and attention mask, padded to the longest."""
        _, tok = self.session()
        enc = tok.encode_batch([str(t) for t in texts])
        n = max((len(e.ids) for e in enc), default=0)
        ids, mask = np.zeros((len(enc), n), np.int64), np.zeros((len(enc), n), np.int64)
        for i, e in enumerate(enc):
            ids[i, : len(e.ids)], mask[i, : len(e.ids)] = e.ids, 1
        return ids, mask

    def __call__(self, texts) -> np.ndarray:
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), self.tower.width), np.float32)
        if not texts:
            return out
        session, _ = self.session()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        for s in range(0, len(order), BATCH):
            idx = order[s: s + BATCH]
            ids, mask = self.token_ids([texts[i] for i in idx])
            out[idx] = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out

    def example(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Random unit vectors (export parity checks)."""
        x = rng.standard_normal((n, self.tower.width)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def text_front_end(cfg: ModelConfig) -> MiniLMFrontEnd | None:
    """The front end of ``cfg``'s text tower; None for the CLIP text tower, whose token ids each
    backend's tokenizer makes (shared per config: the encoder loads once)."""
    if cfg.text_tower.type == "clip":
        return None
    return _cached(json.dumps(cfg.to_dict()["text_tower"], sort_keys=True))


@lru_cache(maxsize=4)
def _cached(key: str) -> MiniLMFrontEnd:
    return MiniLMFrontEnd(TextTowerConfig(**json.loads(key)))
