"""Should the Whisper tiny.en encoder be used frozen or with its last layer(s) tuned, as the audio
tower (2 s segments -> encoder -> [100, 384] states -> head)? Measured on the validation speakers.

    python -m training.whisper_tuning_probe [--data ../shared/data] [--steps 1500] [--batch 4]

Clips of RAVDESS (actors 1-16 train, 17-18 val) and EmoDB (speakers 3-13 train, 14 val), six labels
(neutral happy sad angry fear disgust); test speakers are never read. Each clip is cut into
consecutive 2 s segments (the last zero-padded), each segment -> faster-whisper's log-Mel (80 x 200,
not padded to 30 s) -> the encoder (our torch copy of the CTranslate2 weights,
``training.whisper_weights``). Cached per segment: the states after layers 2 and 3 and the final
states; for training clips also the final states of ``--copies`` augmented versions (random gain
+-6 dB, white noise at 20-30 dB SNR, the segment grid shifted by a random 0-2 s).

Every setting trains the same head (mean+std pooling over frames -> Linear(768, 256) -> GELU ->
Dropout(0.1) -> Linear(256, 6)) on clip logits = the mean of the clip's segment logits, with
class-balanced clip sampling, AdamW (head lr 1e-3, tuned encoder layers 1e-4, warm-up + cosine),
the same seed, batches and number of steps:
  frozen          head on the final states
  frozen + aug    the same, training clips plus their augmented copies
  tune last 1     layer 4 + final layer norm from Whisper, trained, fed the cached states after layer 3
  tune last 2     layers 3-4 + final layer norm, fed the states after layer 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from merstream.config import EMOTIONS_6
from merstream.errors import MerstreamError

from . import data as D
from .manifest import Sample, split_of
from .metrics import single_label_scores
from .sources import emodb, ravdess
from .whisper_weights import TunedTop, WhisperEncoder, default_model_dir, parity

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
SEG = 2 * SR  # 2 s segments
FRAMES = SEG // 160  # 200 log-Mel frames -> 100 encoder states


# ---- data ---------------------------------------------------------------------------------------
def load_samples(data: Path, labels: list[str]) -> list[Sample]:
    """Training then validation clips of RAVDESS and EmoDB with one of ``labels`` (never test)."""
    speech = ravdess(data / "ravdess") + emodb(data / "emodb")
    out = [s for split in ("train", "val") for s in split_of(speech, split) if s.labels[0] in labels]
    assert not any(s.split == "test" for s in out)
    if not out:
        raise MerstreamError(f"no RAVDESS/EmoDB clips under {data}")
    return out


def augment(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random gain (+-6 dB), white noise at 20-30 dB SNR, segment grid shifted by 0-2 s (leading silence)."""
    w = np.concatenate([np.zeros(int(rng.integers(0, SEG)), np.float32), wave]) * 10 ** (rng.uniform(-6, 6) / 20)
    rms = float(np.sqrt(np.mean(w[-len(wave):] ** 2))) + 1e-8
    w = w + rng.standard_normal(len(w)).astype(np.float32) * rms / 10 ** (rng.uniform(20, 30) / 20)
    return np.clip(w, -1, 1).astype(np.float32)


class Extractor:
    """Waveform -> its segments' log-Mel -> encoder states (kept in float16)."""

    def __init__(self, encoder: WhisperEncoder):
        from faster_whisper.feature_extractor import FeatureExtractor

        self.fe = FeatureExtractor(feature_size=encoder.conv1.in_channels)
        self.encoder = encoder

    def mels(self, waves: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """All segments' log-Mel [S, 80, 200] and each wave's segment rows."""
        feats, rows = [], []
        for w in waves:
            segs = D.segments(w, SEG)
            rows.append(np.arange(len(feats), len(feats) + len(segs)))
            feats += [self.fe(s)[:, :FRAMES] for s in segs]
        return np.stack(feats).astype(np.float32), rows

    @torch.no_grad()
    def states(self, mels: np.ndarray, after: tuple[int, ...], batch: int = 32) -> list[np.ndarray]:
        """[S, 100, 384] float16 states after each layer in ``after``, then the final states."""
        out: list[list[np.ndarray]] = [[] for _ in range(len(after) + 1)]
        for i in range(0, len(mels), batch):
            kept, final = self.encoder.states(torch.from_numpy(mels[i: i + batch]), after)
            for o, x in zip(out, kept + [final]):
                o.append(x.numpy().astype(np.float16))
        return [np.concatenate(o) for o in out]


def build_cache(samples: list[Sample], encoder: WhisperEncoder, copies: int, seed: int) -> dict:
    """Per segment: states after layers 2 and 3 and final states (all clips); final states of the
    training clips' augmented copies. Cached on disk (``data.cache_dir()``)."""
    f = D._key("whisper-tuning", samples, f"v1-{copies}-{seed}")
    if f.exists():
        z = np.load(f, allow_pickle=False)
        c = {k: z[k] for k in z.files}
        c["cached"] = True
        return c
    t0 = time.time()
    waves = D.load_waveforms(samples)
    ex = Extractor(encoder)
    mels, rows = ex.mels(waves)
    h2, h3, final = ex.states(mels, (2, 3))
    t1 = time.time()
    train = [i for i, s in enumerate(samples) if s.split == "train"]
    rng = np.random.default_rng(seed)
    aug_waves = [augment(waves[i], rng) for _ in range(copies) for i in train]
    aug_clip = np.array([i for _ in range(copies) for i in train], np.int64)
    if aug_waves:
        amels, arows = ex.mels(aug_waves)
        (aug_final,) = ex.states(amels, ())
    else:
        arows, aug_final = [], np.zeros((0,) + final.shape[1:], np.float16)
    t2 = time.time()
    c = {"h2": h2, "h3": h3, "final": final, "aug_final": aug_final, "aug_clip": aug_clip,
         "seg_clip": np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)]),
         "aug_seg_clip": np.concatenate([np.full(len(r), j) for j, r in enumerate(arows)]) if arows else np.zeros(0, np.int64),
         "seconds": np.array([t1 - t0, t2 - t1])}
    np.savez(f, **c)
    c["cached"] = False
    return c


# ---- the head and its training -------------------------------------------------------------------
class Head(nn.Module):
    """[S, T, d] states -> mean+std over frames -> MLP -> [S, classes] segment logits."""

    def __init__(self, d: int = 384, hidden: int = 256, classes: int = 6):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * d, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([x.mean(1), x.std(1, unbiased=False)], 1))


class Clips:
    """Clips as lists of rows of a segment-state array; ``y`` their labels."""

    def __init__(self, states: np.ndarray, seg_clip: np.ndarray, y: np.ndarray):
        self.states = torch.from_numpy(states)
        self.seg_clip = seg_clip
        order = np.argsort(seg_clip, kind="stable")
        bounds = np.searchsorted(seg_clip[order], np.arange(len(y) + 1))
        self.rows = [order[bounds[i]: bounds[i + 1]] for i in range(len(y))]
        self.y = y

    def batch(self, clips) -> tuple[torch.Tensor, torch.Tensor]:
        """States of the clips' segments (float32) and each segment's position in ``clips``."""
        rows = [self.rows[c] for c in clips]
        idx = torch.from_numpy(np.concatenate(rows))
        owner = torch.from_numpy(np.concatenate([np.full(len(r), k) for k, r in enumerate(rows)]))
        return self.states[idx].float(), owner


def clip_logits(seg_logits: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of each clip's segment logits."""
    s = torch.zeros(n, seg_logits.shape[1]).index_add_(0, owner, seg_logits)
    return s / torch.bincount(owner, minlength=n).clamp(min=1)[:, None].float()


@torch.no_grad()
def predict(head: Head, top: nn.Module | None, clips: Clips, chunk: int = 64) -> np.ndarray:
    head.eval()
    if top is not None:
        top.eval()
    out = []
    for i in range(0, len(clips.y), chunk):
        ids = list(range(i, min(i + chunk, len(clips.y))))
        x, owner = clips.batch(ids)
        out.append(clip_logits(head(top(x) if top is not None else x), owner, len(ids)))
    return torch.cat(out).numpy()


def scores(logits: np.ndarray, y: np.ndarray, source: np.ndarray) -> dict:
    out = {}
    for name, m in (("ravdess", source == "ravdess"), ("emodb", source == "emodb"), ("all", np.ones(len(y), bool))):
        sc = single_label_scores(logits[m], y[m])
        out[name] = {"bal_acc": round(sc.balanced_accuracy, 3), "top1": round(sc.top1, 3), "n": int(m.sum())}
    return out


def train(train_clips: Clips, val_clips: Clips, val_source: np.ndarray, top: nn.Module | None, classes: int,
          steps: int, batch: int, seed: int, head_lr: float = 1e-3, tower_lr: float = 1e-4,
          eval_every: int = 500) -> tuple[dict, list[tuple[int, float]]]:
    """Train a fresh head (and ``top``), class-balanced batches of ``batch`` clips; validation scores
    at the end and the combined balanced accuracy every ``eval_every`` steps."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = Head(classes=classes)
    groups = [{"params": head.parameters(), "lr": head_lr}]
    if top is not None:
        groups.append({"params": top.parameters(), "lr": tower_lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(t, steps) / steps)))
    by_label = [np.flatnonzero(train_clips.y == k) for k in range(classes)]
    labels_present = [k for k in range(classes) if len(by_label[k])]
    curve = []
    for step in range(1, steps + 1):
        head.train()
        if top is not None:
            top.train()
        picked = [int(rng.choice(by_label[k])) for k in rng.choice(labels_present, size=batch)]
        x, owner = train_clips.batch(picked)
        logits = clip_logits(head(top(x) if top is not None else x), owner, len(picked))
        loss = F.cross_entropy(logits, torch.from_numpy(train_clips.y[picked]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        sched.step()
        if step % eval_every == 0 and step < steps:
            curve.append((step, scores(predict(head, top, val_clips), val_clips.y, val_source)["all"]["bal_acc"]))
    final = scores(predict(head, top, val_clips), val_clips.y, val_source)
    curve.append((steps, final["all"]["bal_acc"]))
    return final, curve


# ---- main -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=4, help="clips per step (each ~2 segments)")
    ap.add_argument("--copies", type=int, default=2, help="augmented copies per training clip (0: no aug setting)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--settings", default="frozen,frozen+aug,tune1,tune2,frozen:1,frozen:2,frozen+aug:1,frozen+aug:2",
                    help="comma-separated; NAME:SEED trains with another seed (the seed-to-seed spread)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    labels = list(EMOTIONS_6)
    try:
        samples = load_samples(Path(a.data).resolve(), labels)
        encoder = WhisperEncoder.from_model_bin(default_model_dir())
    except MerstreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    y = np.array([labels.index(s.labels[0]) for s in samples])
    split = np.array([s.split for s in samples])
    source = np.array([s.source for s in samples])
    tr, va = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    print(f"{len(tr)} training clips, {len(va)} validation clips "
          f"(RAVDESS {int((source[va] == 'ravdess').sum())}, EmoDB {int((source[va] == 'emodb').sum())})")

    t = time.time()
    val_waves = D.load_waveforms([samples[i] for i in va[:: max(1, len(va) // 8)]])
    diff = parity(val_waves)
    print(f"parity vs CTranslate2 encode (float32), {len(val_waves)} validation segments: max |diff| {diff:.2e} "
          f"({time.time() - t:.1f} s)")

    c = build_cache(samples, encoder, a.copies, a.seed)
    print(f"cache: {len(c['seg_clip'])} segments, {len(c['aug_seg_clip'])} augmented segments; extraction took "
          f"{c['seconds'][0]:.0f} s + {c['seconds'][1]:.0f} s (aug)" + (" [read from disk now]" if c["cached"] else ""))

    def subset(states, clips):  # the clips' segment rows of ``states``, renumbered
        keep = np.isin(c["seg_clip"], clips)
        remap = {int(k): j for j, k in enumerate(clips)}
        return Clips(states[keep], np.array([remap[int(k)] for k in c["seg_clip"][keep]]), y[clips])

    val_src = source[va]
    runs = []
    for label in a.settings.split(","):
        name, _, seed = label.partition(":")
        seed = int(seed) if seed else a.seed
        t = time.time()
        if name in ("frozen", "frozen+aug"):
            val_c, top = subset(c["final"], va), None
            train_c = subset(c["final"], tr)
            if name == "frozen+aug":
                if not len(c["aug_seg_clip"]):
                    continue
                n0 = len(tr)
                states = np.concatenate([train_c.states.numpy(), c["aug_final"]])
                seg = np.concatenate([train_c.seg_clip, c["aug_seg_clip"] + n0])
                ys = np.concatenate([y[tr], y[c["aug_clip"]]])
                train_c = Clips(states, seg, ys)
        elif name in ("tune1", "tune2"):
            n = int(name[-1])
            key = {1: "h3", 2: "h2"}[n]
            train_c, val_c, top = subset(c[key], tr), subset(c[key], va), TunedTop(encoder, n)
        else:
            print(f"error: unknown setting {name}", file=sys.stderr)
            return 2
        sc, curve = train(train_c, val_c, val_src, top, len(labels), a.steps, a.batch, seed)
        runs.append({"setting": label, "scores": sc, "curve": curve, "seconds": round(time.time() - t, 1)})
        print(f"  {label}: {sc['all']['bal_acc']:.3f} ({runs[-1]['seconds']:.0f} s)", flush=True)

    print(f"\nvalidation speakers, {a.steps} steps x {a.batch} clips, seed {a.seed} unless NAME:SEED")
    print(f"{'setting':<14} {'RAVDESS bal':>11} {'EmoDB bal':>9} {'all bal':>8} {'all top1':>8} {'secs':>6}  curve (all bal.acc)")
    for r in runs:
        s = r["scores"]
        print(f"{r['setting']:<14} {s['ravdess']['bal_acc']:>11.3f} {s['emodb']['bal_acc']:>9.3f} {s['all']['bal_acc']:>8.3f} "
              f"{s['all']['top1']:>8.3f} {r['seconds']:>6.0f}  " + " ".join(f"{k}:{v:.3f}" for k, v in r["curve"]))
    if a.json:
        Path(a.json).write_text(json.dumps({"parity_max_abs": diff, "extraction_seconds": c["seconds"].tolist(),
                                            "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
