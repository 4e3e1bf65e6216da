"""Voice figures as `merstream file` gives them: each speech clip scored by the runtime (the model's
export through onnxruntime, the streaming engine with the model's window and hop, ASR off, the
video track ignored), the clip's answer being the top label of the mean of its windows' scores.

    python -m training.voice_check [--model merstream/assets/merstream-small-v4/onnx] [--split test|val]
                                   [--gain-db -10]

Sets: RAVDESS actors 19-20 and EmoDB speakers 15-16 (``--split test``; 17-18 and 14 with ``val``),
and the six CREMA-D clips of actor 1001 (one sentence, one per emotion: a smoke check, not a gate).
Balanced accuracy and top-1 are printed with 95 % bootstrap intervals (2000 resamples of the clips).
``--gain-db G`` scales every clip's decoded audio by G dB first (clipped to +/-1, as a recording
would be): how the voice figures hold up for a quieter (G < 0) or louder microphone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from merstream.config import StreamConfig
from merstream.errors import MerstreamError

from .manifest import Sample, split_of
from .metrics import bootstrap_interval, single_label_scores
from .sources import shared_emotion_sets

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class VoiceResult:
    name: str
    n: int
    balanced_accuracy: float
    balanced_ci: tuple[float, float]
    top1: float
    top1_ci: tuple[float, float]
    predictions: list[str]


def clip_scores(path: str, scorer, gain_db: float = 0.0) -> np.ndarray | None:
    """The mean over a clip's windows of the voice-only scores (None: no window had audio)."""
    from merstream.run_file import make_engine, prepare, score_job

    job = prepare(path, scorer, None, on_note=lambda m: None)
    job.info = dataclasses.replace(job.info, has_video=False)
    if gain_db and job.audio is not None:
        job.audio = np.clip(job.audio * np.float32(10 ** (gain_db / 20)), -1.0, 1.0)
    engine = make_engine(job, scorer, StreamConfig.for_model(scorer.cfg))
    rows = [[r.scores[k] for k in scorer.labels] for r in score_job(path, job, engine) if "A" in r.modalities]
    return np.mean(rows, axis=0) if rows else None


def evaluate(name: str, samples: list[Sample], scorer, gain_db: float = 0.0) -> VoiceResult:
    labels = list(scorer.labels)
    keep, rows = [], []
    for s in samples:
        sc = clip_scores(s.audio or s.video, scorer, gain_db)
        if sc is None:
            raise MerstreamError(f"{s.audio or s.video}: no window had audio")
        keep.append(s)
        rows.append(sc)
    scores, y = np.stack(rows), np.array([labels.index(s.labels[0]) for s in keep])
    r = single_label_scores(scores, y)
    return VoiceResult(name, len(y), r.balanced_accuracy, bootstrap_interval(scores, y), r.top1,
                       bootstrap_interval(scores, y, "top1"), [labels[i] for i in scores.argmax(1)])


def main(argv: list[str] | None = None) -> int:
    from merstream.models import DEFAULT_EXPORT_DIR, resolve_scorer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_EXPORT_DIR), help="an ONNX export or checkpoint (default: the embedded model)")
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    ap.add_argument("--split", choices=("test", "val"), default="test")
    ap.add_argument("--gain-db", type=float, default=0.0, help="scale each clip's audio by this many dB first")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    try:
        scorer = resolve_scorer(args.model)
        sets = shared_emotion_sets(Path(args.data).resolve())
        who = {"test": ("actors 19-20", "speakers 15-16"), "val": ("actors 17-18", "speaker 14")}[args.split]
        g = args.gain_db
        results = [evaluate(f"RAVDESS {who[0]}", split_of(sets["ravdess"], args.split), scorer, g),
                   evaluate(f"EmoDB {who[1]}", split_of(sets["emodb"], args.split), scorer, g),
                   evaluate("CREMA-D actor 1001 (voice only)", sets["crema_d"], scorer, g)]
    except MerstreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    card = getattr(scorer, "card", None) or {}
    print(f"model {card.get('name', args.model)} (weights {str(card.get('weights_sha256', ''))[:12]}), "
          f"window {scorer.cfg.window:g} s hop {scorer.cfg.hop:g} s, voice only, clip = mean of its windows"
          + (f", audio scaled by {args.gain_db:+g} dB" if args.gain_db else ""))
    for r in results:
        print(f"{r.name:<34} n={r.n:<4} balanced {r.balanced_accuracy:.3f} [{r.balanced_ci[0]:.3f}, {r.balanced_ci[1]:.3f}]"
              f"  top-1 {r.top1:.3f} [{r.top1_ci[0]:.3f}, {r.top1_ci[1]:.3f}]")
    crema = results[-1]
    print(f"CREMA-D 1001: {round(crema.top1 * crema.n)}/{crema.n} named ({', '.join(crema.predictions)})")
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
