"""Whisper's log-Mel features in numpy, owned here so that the Whisper audio tower's input cannot
change with another package's release (faster-whisper computes the same for its own decoding;
a test holds the two together).

    mel = whisper_log_mel(segments)   # [N, samples] 16 kHz -> [N, 80, samples // 160]

Per segment: a centred STFT (400-sample periodic Hann window, hop 160, reflected edges, the frame
past the end dropped), power spectrum, 80 Slaney-style Mel filters (linear to 1 kHz, then
logarithmic, area-normalised), log10 floored at 1e-10, then clamped to 8 below the segment's own
maximum and mapped by (x + 4) / 4, as Whisper was trained.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's Mel scale: 3 Mel per 200 Hz up to 1 kHz, then 27 Mel per factor 6.4."""
    f = np.asarray(f, dtype=np.float64)
    return np.where(f < 1000.0, f * 3.0 / 200.0, 15.0 + 27.0 * np.log(np.maximum(f, 1e-9) / 1000.0) / np.log(6.4))


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m < 15.0, m * 200.0 / 3.0, 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27.0))


@lru_cache(maxsize=4)
def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters between Mel-spaced edges from 0 Hz to Nyquist,
    each scaled by 2 / its width in Hz (equal area), float32."""
    edges = _mel_to_hz(np.linspace(0.0, float(_hz_to_mel(sample_rate / 2)), n_mels + 2))
    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lo) / (mid - lo)
    falling = (hi - bins[None, :]) / (hi - mid)
    tri = np.clip(np.minimum(rising, falling), 0.0, None)
    out = (tri * (2.0 / (hi - lo))).astype(np.float32)
    out.setflags(write=False)  # cached: shared by every caller
    return out


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    n = np.arange(N_FFT)
    out = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)).astype(np.float32)  # periodic Hann
    out.setflags(write=False)
    return out


def whisper_log_mel(segments: np.ndarray, n_mels: int = N_MELS) -> np.ndarray:
    """[N, samples] float 16 kHz -> [N, n_mels, samples // 160] float32, each segment scaled on its
    own (its loudest bin sets the floor)."""
    x = np.asarray(segments, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"segments must be [N, samples], got shape {x.shape}")
    n, length = x.shape
    frames = length // HOP
    if n == 0 or frames == 0:
        return np.zeros((n, n_mels, frames), np.float32)
    pad = N_FFT // 2
    x = np.pad(x, ((0, 0), (pad, pad)), mode="reflect")
    starts = np.arange(frames) * HOP  # the frame past the end (1 + length // HOP) is dropped
    windows = x[:, starts[:, None] + np.arange(N_FFT)[None, :]] * _window()  # [N, frames, n_fft]
    spec = np.fft.rfft(windows, n=N_FFT, axis=-1).astype(np.complex64)
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)  # [N, frames, bins]
    mel = np.ascontiguousarray((power @ mel_filters(n_mels).T).transpose(0, 2, 1))  # [N, n_mels, frames]
    log = np.log10(np.maximum(mel, 1e-10))
    log = np.maximum(log, log.max(axis=(1, 2), keepdims=True) - 8.0)
    return ((log + 4.0) / 4.0).astype(np.float32)
