"""Manifest samples -> model-ready tensors (the runtime's preprocessing), padded into batches.

Each item holds whichever of frames [T, 3, S, S], spectrograms [A, *item] and tokens (token ids [C], or
a text front end's sentence vector [W]) its
sample feeds, plus a multi-hot target over the model's labels. Missing modalities are zero-filled
and marked absent so one batch mixes face images, speech clips, transcripts and videos.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from merstream.config import ModelConfig
from merstream.errors import MerstreamError
from merstream.model.prompts import text_tokens
from merstream.preprocess import FramePrep

from . import data as D
from .manifest import Sample
from .sources import map_label


def target_vector(sample: Sample, labels: list[str]) -> torch.Tensor:
    t = torch.zeros(len(labels))
    for name in sample.labels:
        key = name.strip().lower()
        if key not in labels:
            key = map_label(key, labels) or key
        if key not in labels:
            raise MerstreamError(f"sample {sample.id!r}: label {name!r} is not one of the model's labels {labels}")
        t[labels.index(key)] = 1.0
    return t


class ManifestDataset(Dataset):
    """Decodes each sample once and keeps the tensors in memory (small and medium sets)."""

    def __init__(self, samples: list[Sample], cfg: ModelConfig, image_size: int, context_length: int,
                 max_segments: int = 8):
        if not samples:
            raise MerstreamError("no samples for this split")
        self.samples = samples
        self.cfg = cfg
        self.labels = [x.lower() for x in cfg.labels]
        self.size = image_size
        self.context_length = context_length
        self.max_segments = max_segments
        from merstream.model.frontends import audio_front_end

        from merstream.model.text_frontends import text_front_end

        self.mel = audio_front_end(cfg)  # log-Mel images or Whisper encoder states per 2 s segment
        self.text_front = text_front_end(cfg) if "L" in set(cfg.modalities) else None  # None: CLIP token ids
        self.mods = set(cfg.modalities)
        self.targets = [target_vector(s, self.labels) for s in samples]
        self._cache: dict[int, dict] = {}
        self.prep = FramePrep(image_size, cfg.face_crop)
        self.offsets: dict[int, np.ndarray] = {}
        self._spectrograms: dict[int, torch.Tensor] = {}  # made for the offsets, used once by _load
        if cfg.audio.speaker_mean is not None and "A" in self.mods:  # speaker normalisation: all clips first
            idx = [i for i, s in enumerate(samples) if "A" in s.modalities and (s.audio or s.video)]
            self.offsets = dict(zip(idx, D.offsets_from_images([samples[i] for i in idx], self._images(idx), cfg.audio)))

    def _images(self, idx: list[int]):
        """Each clip's log-Mel images in turn (all segments, for its speaker's estimate); the first
        ``max_segments`` are kept for ``_load`` so that no clip is decoded twice."""
        for i in idx:
            x = self._clip_images(self.samples[i])
            self._spectrograms[i] = x[: self.max_segments].clone()  # not a view that keeps the whole clip
            yield x.numpy()

    def _clip_images(self, s: Sample) -> torch.Tensor:
        """All of a clip's 2 s log-Mel images, without speaker normalisation."""
        return D.clip_spectrograms(D.read_waveform(s, self.cfg.audio.sample_rate), self.mel)

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, i: int) -> dict:
        s = self.samples[i]
        use = set(s.modalities) & self.mods
        item: dict = {"target": self.targets[i]}
        if "V" in use and s.image:
            item["frames"] = D.faces_to_input(D.read_face(s.image)[None], self.size)
        elif "V" in use and s.video:
            frames = np.stack(D.read_frames(s, self.cfg.num_frames, self.prep.side))
            item["frames"] = D.frames_to_input(frames, self.prep)
        if "A" in use and (s.audio or s.video):
            plain = self._spectrograms.pop(i, None)
            if plain is None:
                plain = self._clip_images(s)[: self.max_segments]
            item["spectrograms"] = D.with_offset(plain, self.offsets.get(i))
        if "L" in use and s.text:
            item["tokens"] = (text_tokens([s.text], self.context_length)[0] if self.text_front is None
                              else torch.from_numpy(self.text_front([s.text])[0]))
        if not any(k in item for k in ("frames", "spectrograms", "tokens")):
            raise MerstreamError(f"sample {s.id!r} feeds none of the model's modalities {sorted(self.mods)}")
        return item

    def __getitem__(self, i: int) -> dict:
        if i not in self._cache:
            self._cache[i] = self._load(i)
        return self._cache[i]


def _pad(items: list[torch.Tensor | None], shape_of: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    n = max((x.shape[0] for x in items if x is not None), default=1)
    out = torch.zeros(len(items), n, *shape_of)
    mask = torch.zeros(len(items), n)
    for i, x in enumerate(items):
        if x is not None:
            out[i, : len(x)] = x
            mask[i, : len(x)] = 1
    return out, mask


def collate(items: list[dict]) -> dict:
    batch: dict = {"targets": torch.stack([it["target"] for it in items]), "present": {}}
    b = len(items)
    for key, mask_key, mod in (("frames", "frame_mask", "V"), ("spectrograms", "segment_mask", "A")):
        got = [it.get(key) for it in items]
        if any(x is not None for x in got):
            shape = next(x for x in got if x is not None).shape[1:]
            batch[key], batch[mask_key] = _pad(got, shape)
            batch["present"][mod] = torch.tensor([float(x is not None) for x in got])
    toks = [it.get("tokens") for it in items]
    if any(x is not None for x in toks):
        first = next(x for x in toks if x is not None)
        batch["tokens"] = torch.stack([x if x is not None else torch.zeros_like(first) for x in toks])
        # an all-zero row still needs an EOS position for the text tower: argmax of zeros = 0, harmless
        batch["present"]["L"] = torch.tensor([float(x is not None) for x in toks])
    for key in ("frame_mask", "segment_mask"):
        if key in batch:  # fully padded rows: keep one slot so mean pooling stays finite
            m = batch[key]
            m[m.sum(1) == 0, 0] = 1
    assert len(batch["targets"]) == b
    return batch


def model_inputs(batch: dict, device) -> dict:
    """A collated batch -> keyword arguments of MerClip.forward / pooled_inputs."""
    kw = {}
    for k in ("frames", "frame_mask", "spectrograms", "segment_mask", "tokens"):
        if k in batch:
            kw[k] = batch[k].to(device, non_blocking=True)
    kw["present"] = {m: v.to(device) for m, v in batch["present"].items()}
    return kw
