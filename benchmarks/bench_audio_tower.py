"""Cost of the audio tower per 2 s segment, as the runtime pays it: the model's audio front end
(Whisper tiny.en: log-Mel features + the CTranslate2 encoder; or log-Mel images) and the exported
audio graph (onnxruntime), on real speech, at batch 1 (live: one segment a second) and batch 8 (a
file's windows are scored 8 at a time).

    python benchmarks/bench_audio_tower.py [--model EXPORT_DIR] [--media ../shared/data/talk/talk.mp4] [--runs 30]

Prints the median milliseconds per segment of each part.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def per_segment_ms(fn, batch: np.ndarray, runs: int) -> float:
    fn(batch)  # warm (sessions, thread pools)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times) / len(batch)


def main() -> int:
    from merstream.media import read_audio
    from merstream.models import DEFAULT_EXPORT_DIR, resolve_scorer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_EXPORT_DIR))
    ap.add_argument("--media", default=str(ROOT.parent / "shared" / "data" / "talk" / "talk.mp4"))
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    scorer = resolve_scorer(args.model)
    front = scorer.audio_front_end
    audio = read_audio(args.media, 16000)
    n = front.segment_samples
    audio = np.tile(audio, 1 + 5 * n // max(len(audio), 1))  # a short clip repeated: 8 overlapping segments
    segs = np.stack([audio[i * n // 2: i * n // 2 + n] for i in range(8)])
    card = scorer.card or {}
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()} {platform.processor() or ''}, model {card.get('name', args.model)}, "
          f"audio tower {scorer.cfg.audio_tower.type}, front end {type(front).__name__} -> {front.item_shape}")
    for b in (1, 8):
        x = segs[:b]
        fe = per_segment_ms(front, x, args.runs)
        inputs = front(x)
        head = per_segment_ms(scorer.encode_audio, inputs, args.runs)
        print(f"batch {b}: front end {fe:.1f} ms/segment, audio graph {head:.2f} ms/segment, total {fe + head:.1f} ms/segment")
    return 0


if __name__ == "__main__":
    sys.exit(main())
