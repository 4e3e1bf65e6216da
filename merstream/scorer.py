"""One scorer interface for the runtime (torch-free): onnxruntime in merstream.onnx_scorer, torch in
merstream.torch_scorer.

Inputs and outputs are numpy arrays so backends are interchangeable:

    encode_frames([N, 3, S, S] float32)  -> [N, D]
    encode_audio([N, *item] float32)     -> [N, D]  (item: ``audio_front_end.item_shape``)
    encode_text(text_inputs(texts))      -> [N, D]  (CLIP token ids, or a text front end's vectors)
    score({m: [B, D]}, {m: [B]})         -> [B, K] probabilities for the current labels
"""

from __future__ import annotations

import numpy as np

from .config import AudioConfig, ModelConfig, duplicate_labels


def check_labels(labels: list[str], task: str, use_le: bool) -> None:
    """Label sets the scoring rule can use: distinct, and at least 3 for multi-label emotion
    scoring (it standardises similarities across labels: with 2 labels it always gives 0.73 / 0.27
    whatever the input, with 1 always 0.5), at least 2 for softmax scoring."""
    from .errors import MerstreamError

    dupes = duplicate_labels(labels)
    if dupes:
        raise MerstreamError(f"duplicate labels: {', '.join(dupes)}")
    need = 3 if task == "emotion" and use_le else 2
    if len(labels) < need:
        raise MerstreamError(
            f"{len(labels)} label(s) given: {'emotion scoring standardises similarities across labels, so it needs at least 3' if need == 3 else 'scoring needs at least 2 labels'}"
        )


class Scorer:
    name = "base"
    cfg: ModelConfig
    labels: list[str]
    embed_dim: int
    image_size: int
    context_length: int
    provider = "cpu"
    notice: str | None = None
    card: dict | None = None  # merstream version, model name, weights sha256, licence (model_card.ModelCard)

    @property
    def modalities(self) -> list[str]:
        return self.cfg.modalities

    @property
    def audio_cfg(self) -> AudioConfig:
        return self.cfg.audio

    @property
    def audio_front_end(self):
        """The model's audio front end: raw 2 s segments -> what ``encode_audio`` takes."""
        from .model.frontends import audio_front_end

        return audio_front_end(self.cfg)

    trim_tokens = True  # the text encoder accepts sequences shorter than context_length

    def text_tokens(self, texts: list[str]) -> np.ndarray:
        """[N, context_length] int64 token ids of transcripts (the backend's tokenizer)."""
        raise NotImplementedError

    def tokenize(self, texts: list[str]) -> np.ndarray:
        """Token ids; trimmed after the last EOS of the batch when the encoder allows it (the
        EOS output is exactly the same under causal attention, at a fraction of the compute)."""
        tokens = self.text_tokens(texts)
        if self.trim_tokens and len(tokens):
            tokens = tokens[:, : int(tokens.argmax(-1).max()) + 1]
        return tokens

    @property
    def text_front_end(self):
        """The model's text front end (``merstream.model.text_frontends``); None for the CLIP text tower."""
        from .model.text_frontends import text_front_end

        return text_front_end(self.cfg)

    def text_inputs(self, texts: list[str]) -> np.ndarray:
        """What ``encode_text`` takes for transcripts: token ids (:meth:`tokenize`) for the CLIP text
        tower, the text front end's sentence vectors otherwise."""
        front = self.text_front_end
        return self.tokenize(texts) if front is None else front(texts)

    def predict(self, probs: np.ndarray) -> np.ndarray:
        if self.cfg.task == "emotion":
            return probs >= self.cfg.threshold
        out = np.zeros_like(probs, dtype=bool)
        out[np.arange(len(probs)), probs.argmax(-1)] = True
        return out

    def encode_frames(self, x: np.ndarray) -> np.ndarray: ...
    def encode_audio(self, x: np.ndarray) -> np.ndarray: ...
    def encode_text(self, tokens: np.ndarray) -> np.ndarray: ...
    def score(self, pooled: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> np.ndarray: ...
    def set_labels(self, labels: list[str]) -> None: ...
