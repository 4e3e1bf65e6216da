"""Audio segment -> log-Mel "image" (MER-CLIP: 224 Mel bins, 64 ms window, 32 ms hop, 2 s).

The spectrogram (n_mels x frames, 224 x 63 for 2 s at 16 kHz) is log-compressed, scaled to
roughly unit range with fixed constants (so loudness is kept, unlike per-image normalisation),
resized to ``image_size`` x ``image_size`` and repeated over 3 channels. With ``level_db`` set, each
segment is first scaled to that RMS level (gain at most +/- ``MAX_GAIN_DB``, so near-silence stays
quiet): a microphone's gain then does not change what the audio tower hears.
"""

from __future__ import annotations

import numpy as np

from ..config import AudioConfig

LOG_OFFSET = 1e-6
LOG_MEAN = -6.0  # fixed scaling of log-Mel power to about [-1, 1] for speech at normal levels
LOG_SCALE = 6.0
MAX_GAIN_DB = 30.0


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int) -> np.ndarray:
    """[n_freqs, n_mels] triangular filters on the HTK mel scale from 0 Hz to Nyquist, unnormalised:
    torchaudio's ``melscale_fbanks`` (which the models were trained with), computed in float64."""
    f_max = float(sample_rate // 2)
    freqs = np.linspace(0.0, f_max, n_freqs)
    mels = np.linspace(0.0, 2595.0 * np.log10(1.0 + f_max / 700.0), n_mels + 2)
    edges = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    width = np.diff(edges)
    slopes = edges[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / width[:-1]
    up = slopes[:, 2:] / width[1:]
    return np.maximum(0.0, np.minimum(down, up))


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """[N, H, W] -> [N, height, width], bilinear with half-pixel centres and no antialiasing (as
    torch's ``interpolate(mode="bilinear", align_corners=False)``, which the models were trained with)."""

    def taps(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(src.astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w1 = (src - i0).astype(np.float32)
        return i0, i1, w1

    r0, r1, wr = taps(x.shape[1], height)
    c0, c1, wc = taps(x.shape[2], width)
    rows = x[:, r0] * (1 - wr)[None, :, None] + x[:, r1] * wr[None, :, None]
    return rows[:, :, c0] * (1 - wc) + rows[:, :, c1] * wc


class LogMelImage:
    """The audio front end of the log-Mel image towers, in numpy (no torch at run time)."""

    def __init__(self, cfg: AudioConfig):
        self.cfg = cfg
        self.segment_samples = int(round(cfg.segment_seconds * cfg.sample_rate))
        self.win_length = int(round(cfg.win_ms * cfg.sample_rate / 1000))
        self.hop_length = int(round(cfg.hop_ms * cfg.sample_rate / 1000))
        n = self.win_length
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float64)  # periodic Hann
        self.filters = mel_filterbank(n // 2 + 1, cfg.n_mels, cfg.sample_rate)

    def mel_spectrogram(self, segments: np.ndarray) -> np.ndarray:
        """[N, samples] -> [N, n_mels, frames] log-Mel with fixed scaling (centred frames, reflect padding)."""
        x = np.asarray(segments, dtype=np.float64)
        n, hop = self.win_length, self.hop_length
        x = np.pad(x, ((0, 0), (n // 2, n // 2)), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(x, n, axis=1)[:, ::hop]  # [N, T, n]
        power = np.abs(np.fft.rfft(frames * self.window, axis=-1)) ** 2  # [N, T, F]
        mel = (power @ self.filters).transpose(0, 2, 1)  # [N, n_mels, T]
        return ((np.log(mel + LOG_OFFSET) - LOG_MEAN) / LOG_SCALE).astype(np.float32)

    def __call__(self, segments) -> np.ndarray:
        """[N, samples] float waveform (zero-padded or cut to the segment length) -> [N, 3, S, S]."""
        rows = fitted_segments(segments, self.segment_samples, self.cfg.level_db)
        if not len(rows):
            size = self.cfg.image_size
            return np.zeros((0, 3, size, size), np.float32)
        spec = self.mel_spectrogram(rows)[:, ::-1]  # low frequencies at the bottom of the image
        size = self.cfg.image_size
        img = resize_bilinear(spec, size, size).astype(np.float32)
        return np.ascontiguousarray(np.broadcast_to(img[:, None], (len(img), 3, size, size)))


def fitted_segments(segments, n: int, level_db: float | None) -> np.ndarray:
    """Segments (one waveform or several) cut or zero-padded to ``n`` samples -> [N, n] float32, each
    first scaled to ``level_db`` dBFS RMS when that is set."""
    if isinstance(segments, np.ndarray) and segments.ndim == 1:
        segments = [segments]
    rows = []
    for seg in segments:
        seg = np.asarray(seg, dtype=np.float32).reshape(-1)[:n]
        if level_db is not None and len(seg):
            seg = seg * level_gain(seg, level_db)
        rows.append(np.pad(seg, (0, n - len(seg))))
    return np.stack(rows) if rows else np.zeros((0, n), np.float32)


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
