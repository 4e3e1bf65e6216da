"""Decode manifest samples into model inputs, with an on-disk cache of decoded media.

Faces are kept as uint8 images, speech as 16 kHz float16 waveforms, video clips as a few
sampled frames plus their audio. The cache lives outside the repository (default
``$MERSTREAM_CACHE`` or ``/tmp/merstream-cache``) and is keyed by the sample list.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from merstream.errors import MerstreamError
from merstream.config import AudioConfig
from merstream.model.spectrogram import LogMelImage, SpeakerNorm, voiced_columns
from merstream.preprocess import CLIP_MEAN, CLIP_STD, FramePrep

from .manifest import Sample


def cache_dir() -> Path:
    d = Path(os.environ.get("MERSTREAM_CACHE", "/tmp/merstream-cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _key(kind: str, samples: list[Sample], extra: str = "") -> Path:
    h = hashlib.sha1((kind + extra + "\n".join(f"{s.id}|{s.image}|{s.audio}|{s.video}|{s.start}|{s.end}"
                                               for s in samples)).encode()).hexdigest()[:16]
    return cache_dir() / f"{kind}-{h}.npz"


def read_face(path: str, size: int = 48) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise MerstreamError(f"cannot read image {path}")
    if img.shape != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def load_faces(samples: list[Sample], size: int = 48) -> np.ndarray:
    """[N, size, size] uint8 grey faces (cached)."""
    f = _key("faces", samples, str(size))
    if f.exists():
        return np.load(f)["x"]
    x = np.stack([read_face(s.image, size) for s in samples]) if samples else np.zeros((0, size, size), np.uint8)
    np.savez(f, x=x)
    return x


def read_waveform(s: Sample, sr: int) -> np.ndarray:
    from merstream.media import read_audio

    path = s.audio or s.video
    try:
        a = read_audio(path, sr)
    except MerstreamError:
        raise
    except Exception as e:  # decoder errors -> one line
        raise MerstreamError(f"cannot decode audio of {path}: {e}") from None
    if a is None:
        raise MerstreamError(f"{path} has no audio track")
    a = np.asarray(a, dtype=np.float32)
    if s.start is not None or s.end is not None:
        a = a[int((s.start or 0) * sr): int(s.end * sr) if s.end is not None else None]
    return a


def load_waveforms(samples: list[Sample], sr: int = 16000) -> list[np.ndarray]:
    """16 kHz mono waveforms (cached as float16, concatenated)."""
    f = _key("audio", samples, str(sr))
    if f.exists():
        z = np.load(f)
        cuts = np.cumsum(z["n"])[:-1]
        return [a.astype(np.float32) for a in np.split(z["x"], cuts)]
    waves = [read_waveform(s, sr) for s in samples]
    np.savez(f, x=np.concatenate(waves).astype(np.float16) if waves else np.zeros(0, np.float16),
             n=np.array([len(w) for w in waves]))
    return waves


def read_frames(s: Sample, count: int, side: int) -> list[np.ndarray]:
    """``count`` RGB frames sampled regularly over the clip (or its start/end cut), shorter side ``side``."""
    from merstream.media import iter_frames
    from merstream.preprocess import shrink

    frames = [(t, shrink(rgb, side)) for t, rgb in iter_frames(s.video)]
    if s.start is not None:
        frames = [x for x in frames if x[0] >= s.start and (s.end is None or x[0] < s.end)]
    if not frames:
        raise MerstreamError(f"no frames in {s.video}")
    idx = np.linspace(0, len(frames) - 1, count).round().astype(int) if len(frames) > count else range(len(frames))
    return [frames[i][1] for i in idx]


def load_video_frames(samples: list[Sample], count: int, side: int) -> list[np.ndarray]:
    f = _key("frames", samples, f"{count}-{side}")
    if f.exists():
        z = np.load(f)
        return [z[f"v{i}"] for i in range(len(samples))]
    out = [np.stack(read_frames(s, count, side)) for s in samples]
    np.savez(f, **{f"v{i}": v for i, v in enumerate(out)})
    return out


# ---- tensors for the model ----------------------------------------------------------------------
def faces_to_input(faces: np.ndarray, size: int) -> torch.Tensor:
    """[N, h, w] uint8 grey faces -> [N, 3, size, size] CLIP-normalised (no augmentation)."""
    x = torch.from_numpy(faces).float().div(255.0).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def frames_to_input(frames: np.ndarray, prep: FramePrep) -> torch.Tensor:
    """[T, H, W, 3] uint8 RGB video frames (kept at ``prep.side``) -> [T, 3, size, size] exactly as
    the runtime does (face crops first for models with ``face_crop``)."""
    return torch.from_numpy(prep.to_input(frames))


def segments(wave: np.ndarray, seg_samples: int, hop_samples: int | None = None) -> np.ndarray:
    """Cut a waveform into fixed segments (the last one zero-padded), at least one."""
    hop = hop_samples or seg_samples
    n = max(1, int(np.ceil(max(len(wave) - seg_samples, 0) / hop)) + 1)
    out = np.zeros((n, seg_samples), dtype=np.float32)
    for i in range(n):
        piece = wave[i * hop: i * hop + seg_samples]
        out[i, : len(piece)] = piece
    return out


def clip_spectrograms(wave: np.ndarray, mel, offset: np.ndarray | None = None) -> torch.Tensor:
    """All 2 s segments of a clip -> [A, *item] audio tower inputs (as the runtime cuts windows):
    ``mel`` is the model's audio front end (log-Mel images [A, 3, S, S], Whisper encoder states
    [A, T, W]) or a LogMelImage. ``offset`` [S]: a log-Mel clip's speaker normalisation
    (``speaker_offsets``), added to every image row."""
    return with_offset(torch.from_numpy(mel(segments(wave, mel.segment_samples))), offset)


def with_offset(images: torch.Tensor, offset: np.ndarray | None) -> torch.Tensor:
    """[A, 3, S, S] log-Mel images with a speaker offset [S] added to every row (unchanged when None)."""
    return images if offset is None or not np.any(offset) else images + torch.from_numpy(np.asarray(offset, np.float32))[None, None, :, None]


def speaker_of(s: Sample) -> str:
    """Who speaks in ``s``: its speaker, or the clip itself when unknown (normalised by its own voice)."""
    return s.speaker or s.id


def speaker_reference(samples: list[Sample], images) -> np.ndarray:
    """[S] the average over speakers of each speaker's mean voiced log-Mel column (training data):
    ``AudioConfig.speaker_mean`` for speaker normalisation. ``images``: each clip's [A, 3, S, S]
    log-Mel images (``clip_spectrograms``), in the order of ``samples``."""
    by: dict[str, list[np.ndarray]] = {}
    for s, x in zip(samples, images):
        by.setdefault(speaker_of(s), []).append(voiced_columns(x))
    return np.stack([np.concatenate(v).mean(axis=0) for v in by.values()]).mean(axis=0).astype(np.float32)


def speaker_offsets(samples: list[Sample], waves, mel: LogMelImage, cfg: AudioConfig) -> np.ndarray:
    """[N, S] per clip: what speaker normalisation adds to each row of the clip's log-Mel images,
    the speaker estimated from all of their clips here (``SpeakerNorm``, as the runtime does); zeros
    when ``cfg.speaker_mean`` is not set. ``waves`` may be any iterable (read once, in order)."""
    return offsets_from_images(samples, (clip_spectrograms(w, mel).numpy() for w in waves), cfg)


def offsets_from_images(samples: list[Sample], images, cfg: AudioConfig) -> np.ndarray:
    """``speaker_offsets`` from each clip's log-Mel images (an iterable, read in order; not read when off)."""
    if cfg.speaker_mean is None:
        return np.zeros((len(samples), cfg.image_size), np.float32)
    norms: dict[str, SpeakerNorm] = {}
    for s, x in zip(samples, images):
        norms.setdefault(speaker_of(s), SpeakerNorm(cfg)).update(x)
    return np.stack([norms[speaker_of(s)].offset for s in samples]) if samples else np.zeros((0, cfg.image_size), np.float32)


def speech_inputs(samples: list[Sample], waves: list[np.ndarray], mel: LogMelImage,
                  cfg: AudioConfig) -> list[torch.Tensor]:
    """Each clip's log-Mel images [A, 3, S, S] as the model expects them: speaker-normalised when
    ``cfg.speaker_mean`` is set (each speaker by all of their clips here, like a whole session)."""
    specs = [clip_spectrograms(w, mel) for w in waves]
    if cfg.speaker_mean is None:
        return specs
    offsets = offsets_from_images(samples, (x.numpy() for x in specs), cfg)  # the images made once
    return [with_offset(x, o) for x, o in zip(specs, offsets)]
