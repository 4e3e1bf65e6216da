"""Reference inputs for checking an export: real frames and audio from a media file, or noise.

A reference set is ``W`` windows, each with ``F`` frames (pooled by mean, as the engine does), one
2 s audio segment through the model's audio front end (a log-Mel image, Whisper encoder states) and one short sentence standing in for its transcript.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from merstream.config import AudioConfig
from merstream.errors import MerstreamError

REFERENCE_TEXTS = [
    "Don't forget a jacket.",
    "This is the best day of my life!",
    "I miss her so much, I can't stop crying.",
    "Get out of my house right now!",
    "Please don't leave me alone in here.",
    "Ugh, that smells absolutely disgusting.",
    "The meeting starts at three o'clock.",
    "I can't believe you actually did it, well done!",
]


@dataclass
class ReferenceSet:
    source: str  # a media path, or "random"
    frames: np.ndarray | None  # [W * F, 3, S, S] normalised frames (None: no video)
    frames_per_window: int
    spectrograms: np.ndarray | None  # [W, *item] audio front-end outputs (None: no audio)
    texts: list[str]  # [W]

    @property
    def windows(self) -> int:
        return len(self.texts)

    def window_frames(self, w: int) -> slice:
        f = self.frames_per_window
        return slice(w * f, (w + 1) * f)


def front_end_of(audio):
    """``audio``: a model's audio front end, or an AudioConfig (log-Mel images); None: no audio."""
    if audio is None or not isinstance(audio, AudioConfig):
        return audio
    from merstream.model.frontends import LogMelFrontEnd

    return LogMelFrontEnd(audio)


def reference_from_media(
    path: str | Path, image_size: int, audio, windows: int = 8, frames_per_window: int = 3,
    face_crop: bool = False,
) -> ReferenceSet:
    """Real frames and audio from ``path``: ``windows`` equal windows over the whole file (frames
    face-cropped as the runtime does for ``face_crop`` models). ``audio``: the model's audio front end
    (``MerClip.audio_front_end()``) or an AudioConfig for log-Mel images."""
    from merstream.media import iter_frames, probe, read_audio
    from merstream.preprocess import FramePrep

    front = front_end_of(audio)
    audio_cfg = front.audio if front is not None else AudioConfig()

    path = Path(path).expanduser()
    if not path.is_file():
        raise MerstreamError(f"reference media not found: {path}")
    info = probe(path)
    if info.duration <= 0:
        raise MerstreamError(f"reference media {path} has no duration (not a media file?)")
    step = info.duration / windows
    frames = None
    if info.has_video:
        targets = [(w + (j + 0.5) / frames_per_window) * step for w in range(windows) for j in range(frames_per_window)]
        picked: list[np.ndarray | None] = [None] * len(targets)
        best = [np.inf] * len(targets)
        for t, rgb in iter_frames(path):
            for i, target in enumerate(targets):
                if abs(t - target) < best[i]:
                    best[i], picked[i] = abs(t - target), rgb
        if any(p is None for p in picked):
            raise MerstreamError(f"reference media {path}: could not decode enough frames")
        prep = FramePrep(image_size, face_crop)
        frames = prep.to_input([prep.keep(p) for p in picked])
    spectrograms = None
    audio = read_audio(path, audio_cfg.sample_rate) if info.has_audio and front is not None else None
    if audio is not None and len(audio):
        n = int(round(audio_cfg.segment_seconds * audio_cfg.sample_rate))
        starts = [int(w * step * audio_cfg.sample_rate) for w in range(windows)]
        segs = np.stack([np.pad(audio[s : s + n], (0, max(0, n - len(audio[s : s + n])))) for s in starts])
        spectrograms = front(segs)
    if frames is None and spectrograms is None:
        raise MerstreamError(f"reference media {path} has neither video nor audio")
    texts = [REFERENCE_TEXTS[w % len(REFERENCE_TEXTS)] for w in range(windows)]
    return ReferenceSet(str(path), frames, frames_per_window, spectrograms, texts)


def random_reference(
    image_size: int, audio, windows: int = 8, frames_per_window: int = 3, seed: int = 0
) -> ReferenceSet:
    """Noise frames (normal, as normalised images are) and noise audio through the model's audio
    front end (``audio``: the front end, an AudioConfig for log-Mel images, or None)."""
    rng = np.random.default_rng(seed)
    frames = rng.standard_normal((windows * frames_per_window, 3, image_size, image_size)).astype(np.float32)
    front = front_end_of(audio)
    spectrograms = None
    if front is not None:
        audio_noise = (0.05 * rng.standard_normal((windows, front.segment_samples))).astype(np.float32)
        spectrograms = front(audio_noise)
    texts = [REFERENCE_TEXTS[w % len(REFERENCE_TEXTS)] for w in range(windows)]
    return ReferenceSet("random", frames, frames_per_window, spectrograms, texts)
