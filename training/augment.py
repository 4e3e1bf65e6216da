"""Training-time augmentation for faces (batched torch ops) and speech (waveform + spectrogram)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from merstream.model.spectrogram import LogMelImage
from merstream.preprocess import CLIP_MEAN, CLIP_STD


def augment_faces(faces: np.ndarray, size: int, gen: torch.Generator, zoom_out_p: float = 0.25) -> torch.Tensor:
    """[B, h, w] uint8 grey faces -> [B, 3, size, size] CLIP-normalised, randomly flipped, rotated,
    scaled, shifted, lit; with probability ``zoom_out_p`` the face is shrunk into a larger scene
    (plain random background) so that the tower also sees faces that fill part of a frame."""
    b = len(faces)
    x = torch.from_numpy(faces).float().div(255.0).unsqueeze(1)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=gen)  # noqa: E731
    angle = u(-12, 12) * math.pi / 180
    zoom = u(0.88, 1.12)
    small = torch.rand(b, generator=gen) < zoom_out_p
    zoom = torch.where(small, u(0.3, 0.75), zoom)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    shift = torch.stack([u(-0.08, 0.08), u(-0.08, 0.08)], 1)
    room = (1 - zoom).clamp_min(0).unsqueeze(1)
    shift = torch.where(small.unsqueeze(1), shift + torch.stack([u(-1, 1), u(-1, 0.3)], 1) * room, shift)
    # output pixel p samples input at A p + t, A = R / zoom (flip on x)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, :, 2] = -torch.einsum("bij,bj->bi", theta[:, :, :2], shift)
    grid = F.affine_grid(theta, (b, 1, size, size), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = F.grid_sample(torch.ones_like(x), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    background = u(0.1, 0.9).view(b, 1, 1, 1) + 0.05 * torch.randn(b, 1, size, size, generator=gen)
    out = torch.where(small.view(b, 1, 1, 1) & (inside < 0.5), background, out)
    contrast = u(0.7, 1.3).view(b, 1, 1, 1)
    bright = u(-0.12, 0.12).view(b, 1, 1, 1)
    out = ((out - 0.5) * contrast + 0.5 + bright).clamp(0, 1)
    out = out.expand(-1, 3, -1, -1)
    tint = 1 + 0.15 * (torch.rand(b, 3, 1, 1, generator=gen) - 0.5) * (torch.rand(b, 1, 1, 1, generator=gen) < 0.3)
    out = (out * tint).clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (out - mean) / std


def random_segment(wave: np.ndarray, seg: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``seg``-sample window of a clip (zero-padded at a random offset when shorter)."""
    out = np.zeros(seg, dtype=np.float32)
    if len(wave) >= seg:
        a = rng.integers(0, len(wave) - seg + 1)
        out[:] = wave[a: a + seg]
    else:
        a = rng.integers(0, seg - len(wave) + 1) if rng.random() < 0.5 else 0
        out[a: a + len(wave)] = wave
    return out


def augment_speech(waves: list[np.ndarray], mel: LogMelImage, rng: np.random.Generator,
                   offsets: np.ndarray | None = None) -> torch.Tensor:
    """One random 2 s segment per clip with gain, noise and SpecAugment masks -> [B, 3, S, S].
    ``offsets`` [B, S]: speaker normalisation of each clip, added to the image rows before masking."""
    seg = mel.segment_samples
    batch = np.stack([random_segment(w, seg, rng) for w in waves])
    batch *= (10 ** (rng.uniform(-8, 6, size=(len(waves), 1)) / 20)).astype(np.float32)
    noisy = rng.random(len(waves)) < 0.3
    rms = np.sqrt((batch ** 2).mean(1, keepdims=True)) + 1e-6
    snr = 10 ** (rng.uniform(15, 35, size=(len(waves), 1)) / 20)
    batch += noisy[:, None] * (rng.standard_normal(batch.shape).astype(np.float32) * rms / snr)
    img = torch.from_numpy(mel(batch))
    if offsets is not None:
        img = img + torch.from_numpy(np.asarray(offsets, dtype=np.float32))[:, None, :, None]
    s = img.shape[-1]
    for i in range(len(img)):
        for _ in range(2):
            f = int(rng.integers(0, s // 8))
            f0 = int(rng.integers(0, s - f + 1))
            img[i, :, f0: f0 + f, :] = 0.0
            t = int(rng.integers(0, s // 8))
            t0 = int(rng.integers(0, s - t + 1))
            img[i, :, :, t0: t0 + t] = 0.0
    return img


def perturb_wave(wave: np.ndarray, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """A copy of a clip as another microphone and moment might give it: gain -8..+6 dB, noise at
    15-35 dB SNR (30 % of the copies) and the 2 s segment grid moved by up to 0.5 s (leading
    silence or a cut start)."""
    w = np.asarray(wave, dtype=np.float32) * np.float32(10 ** (rng.uniform(-8, 6) / 20))
    shift = int(rng.uniform(-0.5, 0.5) * sample_rate)
    w = np.concatenate([np.zeros(shift, np.float32), w]) if shift > 0 else w[min(-shift, max(len(w) - sample_rate, 0)):]
    if rng.random() < 0.3:
        rms = float(np.sqrt(np.mean(np.square(w, dtype=np.float64)))) + 1e-6
        w = w + (rng.standard_normal(len(w)) * rms / 10 ** (rng.uniform(15, 35) / 20)).astype(np.float32)
    return w


def state_bank(waves: list[np.ndarray], front, copies: int, rng: np.random.Generator, segments, progress=None
               ) -> list[list[np.ndarray]]:
    """Frozen-encoder inputs of every clip, computed once: per clip, ``copies`` arrays [A, *item] (the
    clip as recorded, then ``perturb_wave`` copies), fp16. ``segments(wave, n)`` cuts a clip as the
    runtime does. Training draws a random segment of a random copy (``draw_states``)."""
    bank = []
    for i, w in enumerate(waves):
        versions = [w] + [perturb_wave(w, rng, front.audio.sample_rate) for _ in range(copies - 1)]
        bank.append([front(segments(v, front.segment_samples)).astype(np.float16) for v in versions])
        if progress is not None:
            progress(i + 1, len(waves))
    return bank


def draw_states(bank: list[list[np.ndarray]], idx: list[int], rng: np.random.Generator) -> torch.Tensor:
    """One random segment of a random copy of each clip in ``idx`` -> [B, *item] float32."""
    out = []
    for i in idx:
        copy = bank[i][int(rng.integers(len(bank[i])))]
        out.append(copy[int(rng.integers(len(copy)))])
    return torch.from_numpy(np.stack(out).astype(np.float32))
