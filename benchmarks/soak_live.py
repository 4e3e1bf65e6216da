"""Soak test of the live engine: a looping file source played in real time for N minutes.

Prints, every --every seconds: process RSS, windows scored / dropped, capture-to-score latency
(p50 / p95 over that interval), frames dropped by the capture ring, transcript deadline hits and
audio the transcriber skipped; then a summary (RSS growth after the first minute, overall
latency percentiles, dropped-work counts).

    python benchmarks/soak_live.py --minutes 10                  # merstream-tiny (random), tiny.en ASR
    python benchmarks/soak_live.py --minutes 3 --model ViT-B-32   # the real architecture (random weights)
    python benchmarks/soak_live.py --model path/to/checkpoint_or_export --no-asr
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / ".." / "shared" / "data" / "talk" / "talk_6emotions.mp4"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_scorer(spec: str):
    import torch

    from merstream.config import ModelConfig
    from merstream.model import MerClip
    from merstream.models import resolve_scorer
    from merstream.torch_scorer import TorchScorer

    if Path(spec).exists():
        return resolve_scorer(spec)
    arch = "merstream-tiny" if spec == "tiny" else spec
    torch.manual_seed(0)
    return TorchScorer(MerClip(ModelConfig(clip=arch)).eval())


def pct(xs, q):
    return f"{np.percentile(xs, q):.3f}" if len(xs) else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--clip", default=str(CLIP), help="media file to loop (video + audio)")
    ap.add_argument("--model", default="tiny", help="tiny | an open_clip architecture (random weights) | checkpoint/export path")
    ap.add_argument("--no-asr", action="store_true", help="no rolling transcript")
    ap.add_argument("--every", type=float, default=30.0, help="seconds between report lines")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--text-deadline", type=float, default=None,
                    help="seconds a window may wait for committed words (default: merstream live's)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from merstream.asr import Transcriber
    from merstream.engine.live import LiveOptions, LiveRunner
    from merstream.engine.sources import AudioFileSource, VideoFileSource
    from merstream.preprocess import stored_frame_side
    from merstream.sinks import TimelineWriter

    scorer = make_scorer(args.model)
    transcriber = None if args.no_asr else Transcriber()
    video = VideoFileSource(args.clip, realtime=True, loop=True, frame_size=stored_frame_side(scorer.image_size, scorer.cfg.face_crop))
    audio = AudioFileSource(args.clip, realtime=True, loop=True)
    video.open()
    audio.open()
    out_dir = Path(tempfile.mkdtemp(prefix="soak-"))
    writer = TimelineWriter(out_dir, "soak", scorer.labels)  # as `merstream live` does: flushed per window
    seconds = args.minutes * 60
    opts = LiveOptions() if args.text_deadline is None else LiveOptions(text_deadline=args.text_deadline)
    with_words = [0]

    def on_result(r):
        writer.write(r)
        with_words[0] += bool(r.text)

    runner = LiveRunner(scorer, video, audio, transcriber, opts, on_result=on_result, until=seconds)

    print(f"# soak: {args.minutes:g} min of {Path(args.clip).name} looping in real time; model {args.model}; "
          f"ASR {'off' if args.no_asr else 'tiny.en'}; text deadline {opts.text_deadline:g} s; torch threads {args.threads}")
    print(f"# {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}, torch {torch.__version__}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'t(s)':>6} {'rss MB':>7} {'scored':>6} {'dropped':>7} {'lat p50':>8} {'lat p95':>8} "
          f"{'fr drop':>7} {'deadline':>8} {'asr skip s':>10} {'load1':>5}")
    rss0 = rss_mb()
    samples = []  # (t, rss)
    seen = 0
    t_start = time.monotonic()
    runner.start()
    try:
        while not runner.wait(args.every):
            s = runner.snapshot()
            lat = list(runner.latencies)[seen:]
            seen += len(lat)
            rss = rss_mb()
            samples.append((s.clock, rss))
            print(f"{s.clock:6.0f} {rss:7.1f} {s.windows_scored:6d} {s.windows_dropped:7d} {pct(lat, 50):>8} {pct(lat, 95):>8} "
                  f"{s.frames_dropped:7d} {s.text_forced:8d} {s.asr_skipped_seconds:10.1f} {os.getloadavg()[0]:5.1f}", flush=True)
    except KeyboardInterrupt:
        runner.stop()
        runner.wait()
    runner.join()
    writer.close(error=runner.error)
    wall = time.monotonic() - t_start
    s = runner.snapshot()
    lat = np.array(runner.latencies)
    after1 = [r for t, r in samples if t >= 60]
    print("# summary")
    print(f"wall {wall:.0f} s, media {s.media_time:.0f} s, windows scored {s.windows_scored}, dropped {s.windows_dropped}, "
          f"frames captured {s.frames_captured}, frames dropped {s.frames_dropped}, "
          f"transcript deadline hits {s.text_forced}, windows with words {with_words[0]}, "
          f"ASR skipped {s.asr_skipped_seconds:.1f} s, error {s.error}")
    print(f"latency (capture -> score): p50 {pct(lat, 50)} s, p95 {pct(lat, 95)} s, max {lat.max() if len(lat) else 0:.3f} s")
    if len(lat) >= 20:
        q = len(lat) // 4
        print(f"latency p50 first quarter {pct(lat[:q], 50)} s, last quarter {pct(lat[-q:], 50)} s")
    rss_end = rss_mb()
    print(f"RSS start {rss0:.0f} MB, at 1 min {after1[0] if after1 else float('nan'):.0f} MB, end {rss_end:.0f} MB, "
          f"max {max([r for _, r in samples] + [rss_end]):.0f} MB")
    c = s.counters
    print(f"encoded {c.frames_encoded} frames ({c.frame_cache_hits} cache hits), {c.segments_encoded} segments, "
          f"{c.texts_encoded} transcripts ({c.text_cache_hits} cache hits)")
    if s.asr is not None:
        print(f"ASR: {s.asr.iterations} iterations, {s.asr.asr_seconds:.0f} s in whisper")
    print(f"timeline: {writer.jsonl_path}")
    return 0 if runner.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
