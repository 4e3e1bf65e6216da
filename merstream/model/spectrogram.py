"""Audio segment -> log-Mel "image" (MER-CLIP: 224 Mel bins, 64 ms window, 32 ms hop, 2 s).

The spectrogram (n_mels x frames, 224 x 63 for 2 s at 16 kHz) is log-compressed, scaled to
roughly unit range with fixed constants (so loudness is kept, unlike per-image normalisation),
resized to ``image_size`` x ``image_size`` and repeated over 3 channels. With ``level_db`` set, each
segment is first scaled to that RMS level (gain at most +/- ``MAX_GAIN_DB``, so near-silence stays
quiet): a microphone's gain then does not change what the audio tower hears.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

from ..config import AudioConfig

LOG_OFFSET = 1e-6
LOG_MEAN = -6.0  # fixed scaling of log-Mel power to about [-1, 1] for speech at normal levels
LOG_SCALE = 6.0
MAX_GAIN_DB = 30.0


class LogMelImage:
    def __init__(self, cfg: AudioConfig):
        self.cfg = cfg
        self.segment_samples = int(round(cfg.segment_seconds * cfg.sample_rate))
        self.win_length = int(round(cfg.win_ms * cfg.sample_rate / 1000))
        self.hop_length = int(round(cfg.hop_ms * cfg.sample_rate / 1000))
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=self.win_length,
            win_length=self.win_length,
            hop_length=self.hop_length,
            n_mels=cfg.n_mels,
            power=2.0,
            center=True,
        )

    def mel_spectrogram(self, segments: torch.Tensor) -> torch.Tensor:
        """[N, samples] -> [N, n_mels, frames] log-Mel, fixed scaling."""
        with torch.no_grad():
            spec = self.mel(segments.float())
        return (torch.log(spec + LOG_OFFSET) - LOG_MEAN) / LOG_SCALE

    def __call__(self, segments) -> np.ndarray:
        """[N, samples] float waveform (zero-padded or cut to the segment length) -> [N, 3, S, S]."""
        n = self.segment_samples
        if isinstance(segments, np.ndarray) and segments.ndim == 1:
            segments = [segments]
        rows = []
        for seg in segments:
            seg = np.asarray(seg, dtype=np.float32).reshape(-1)[:n]
            if self.cfg.level_db is not None and len(seg):
                seg = seg * level_gain(seg, self.cfg.level_db)
            rows.append(np.pad(seg, (0, n - len(seg))))
        x = torch.from_numpy(np.stack(rows))
        spec = self.mel_spectrogram(x).flip(1)  # low frequencies at the bottom of the image
        size = self.cfg.image_size
        img = F.interpolate(spec[:, None], size=(size, size), mode="bilinear", align_corners=False)
        return img.expand(-1, 3, -1, -1).contiguous().numpy()


def level_gain(seg: np.ndarray, level_db: float) -> np.float32:
    """Gain that brings ``seg`` to ``level_db`` dBFS RMS (capped at +/- MAX_GAIN_DB)."""
    rms_db = 10 * np.log10(float(np.mean(np.square(seg, dtype=np.float64))) + 1e-12)
    gain_db = float(np.clip(level_db - rms_db, -MAX_GAIN_DB, MAX_GAIN_DB))
    return np.float32(10 ** (gain_db / 20))


VOICED_RANGE = 1.0  # columns within this (scaled log-Mel units, ~26 dB) of an image's loudest count as voiced
SPEECH_SPREAD = 0.2  # an image counts only if its loudest column is this far (~5 dB) above its median one


def voiced_columns(images: np.ndarray) -> np.ndarray:
    """[N, 3, S, S] log-Mel images -> [n, S]: the image columns (time steps) of each image whose mean
    level is within VOICED_RANGE of its loudest column, i.e. speech rather than pauses or padding.
    Images without the level changes of speech (silence, a muted microphone, steady noise: loudest
    column < SPEECH_SPREAD above the median one; speech here is >= 0.33) give none."""
    x = np.asarray(images, dtype=np.float32)[:, 0]  # [N, freq, time]
    level = x.mean(axis=1)  # [N, time]
    loudest = level.max(axis=1, keepdims=True)
    speech = loudest - np.median(level, axis=1, keepdims=True) >= SPEECH_SPREAD
    voiced = (level >= loudest - VOICED_RANGE) & speech
    return x.transpose(0, 2, 1)[voiced]


class SpeakerNorm:
    """Speaker normalisation of log-Mel images: the running average of a stream's voiced columns is
    replaced by the training speakers' average (``AudioConfig.speaker_mean``). What is left is how a
    segment differs from the speaker's usual voice and microphone, which is what carries emotion
    across speakers. The estimate starts as ``speaker_prior_columns`` columns of the reference, so the
    first seconds of a new voice are only partly normalised. Training estimates each speaker from all
    their clips the same way (``update`` with everything, then ``apply``)."""

    def __init__(self, cfg: AudioConfig):
        self.reference = np.asarray(cfg.speaker_mean, dtype=np.float32)
        self.total = self.reference * np.float32(cfg.speaker_prior_columns)
        self.columns = float(cfg.speaker_prior_columns)

    def update(self, images: np.ndarray) -> None:
        v = voiced_columns(images)
        self.total = self.total + v.sum(axis=0)
        self.columns += len(v)

    @property
    def mean(self) -> np.ndarray:
        return (self.total / self.columns).astype(np.float32)

    @property
    def offset(self) -> np.ndarray:
        """[S] what ``apply`` adds to each image row."""
        return self.reference - self.mean

    def apply(self, images: np.ndarray) -> np.ndarray:
        return (np.asarray(images, dtype=np.float32) + self.offset[None, None, :, None]).astype(np.float32)
