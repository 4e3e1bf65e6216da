"""`merstream file` speed on a ~60 s clip with the ViT-B-32 architecture, ASR included.

    python benchmarks/bench_file.py [--video PATH] [--loops 4] [--skip-naive]

Builds a ~63 s clip by looping ../shared/data/talk/talk_6emotions.mp4, builds MER-CLIP on the
ViT-B-32 architecture (random weights: timing only), exports it to ONNX fp32 and int8, then runs
the whole `merstream file` pipeline (decode, faster-whisper tiny.en, windows, encoders, CMD,
timeline writing) with:
  1. torch eager, naive baseline: decode + transcribe first, then every window on its own,
     re-encoding all 12 of its frames (no cache, no batching)
  2. torch eager, the engine as `merstream file` runs it: embedding cache, 8 windows per batch,
     faster-whisper in a background thread while frames are decoded and encoded
  3. onnxruntime fp32, the same (the default engine)
  4. onnxruntime int8, the same
and prints the real-time factor (wall / media seconds) of each and speed-ups versus the naive
baseline, all from this one run. It also prints the compute floor: FLOPs per second of media
for this sampling (counted with torch's FlopCounterMode) against the machine's measured fp32
matmul throughput.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_VIDEO = (ROOT / ".." / "shared" / "data" / "talk" / "talk_6emotions.mp4").resolve()


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def time_model_calls(scorer) -> dict:
    """Wrap the scorer's encoder and head calls with timers; returns the running totals."""
    spent = {"seconds": 0.0}
    for name in ("encode_frames", "encode_audio", "encode_text", "score"):
        fn = getattr(scorer, name)

        def timed(*args, _fn=fn, **kw):
            t = time.perf_counter()
            try:
                return _fn(*args, **kw)
            finally:
                spent["seconds"] += time.perf_counter() - t
        setattr(scorer, name, timed)
    return spent


def flops_of(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(DEFAULT_VIDEO))
    ap.add_argument("--loops", type=int, default=4, help="extra loops of the clip (4 -> ~63 s)")
    ap.add_argument("--skip-naive", action="store_true", help="skip the slow naive baseline")
    ap.add_argument("--keep", help="keep the ViT-B-32 exports in this directory (fp32/, int8/), e.g. for soak_live.py")
    args = ap.parse_args()

    from export import export_model
    from merstream.asr import Transcriber
    from merstream.config import ModelConfig, StreamConfig
    from merstream.model import MerClip
    from merstream.onnx_scorer import OnnxScorer
    from merstream.run_file import score_file
    from merstream.torch_scorer import TorchScorer

    print(f"date {date.today()}, machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), onnxruntime {__import__('onnxruntime').__version__}")
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-file-"))
    tmp.mkdir(parents=True, exist_ok=True)
    clip = tmp / "clip60.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", str(args.loops), "-i", args.video,
                    "-c", "copy", str(clip)], check=True)

    torch.manual_seed(0)
    model = MerClip(ModelConfig(clip="ViT-B-32")).eval()
    t = time.perf_counter()
    export_model(model, tmp / "fp32", precision="fp32", check=False)
    export_model(model, tmp / "int8", precision="int8", check=False)
    print(f"exported ViT-B-32 MER-CLIP to ONNX fp32 + int8 in {time.perf_counter() - t:.0f} s")

    asr = Transcriber()
    stream = StreamConfig()
    backends = {}
    if not args.skip_naive:
        backends["torch eager, naive (no cache)"] = (TorchScorer(model), False)
    backends["torch eager, cached"] = (TorchScorer(model), True)
    backends["onnxruntime fp32, cached"] = (OnnxScorer(tmp / "fp32", providers=["cpu"]), True)
    backends["onnxruntime int8, cached"] = (OnnxScorer(tmp / "int8", providers=["cpu"]), True)

    runs, model_seconds = {}, {}
    for name, (scorer, reuse) in backends.items():
        spent = time_model_calls(scorer)
        run = score_file(clip, scorer, asr, stream, tmp / name.split(",")[0].replace(" ", "_"), plot=False, reuse=reuse,
                         on_note=lambda m: None)
        runs[name], model_seconds[name] = run, spent["seconds"]
        c = run.counters
        asr_note = f"decode+ASR {run.asr_seconds:4.1f} s first" if not reuse else f"ASR {run.asr_seconds:4.1f} s in parallel"
        print(f"  {name:<32} wall {run.seconds:6.1f} s ({asr_note}; encoders+head {spent['seconds']:5.1f} s)  "
              f"RTF {run.seconds / run.duration:.3f}  frames encoded {c.frames_encoded}, segments {c.segments_encoded}, "
              f"texts {c.texts_encoded}")
    media = next(iter(runs.values())).duration
    print(f"\nmedia: {media:.1f} s, {next(iter(runs.values())).windows} windows (window 2 s, hop 1 s, 12 frames)")
    print("real-time factor (lower is better; targets: fp32 <= 0.5, int8 <= 0.25):")
    base = runs.get("torch eager, naive (no cache)")
    for name, run in runs.items():
        speed = f"  x{base.seconds / run.seconds:.2f} vs naive" if base else ""
        print(f"  {name:<32} RTF {run.seconds / media:.3f}{speed}")

    # compute floor for this sampling
    s = model.image_size
    f_img = flops_of(lambda: model.encode_frames(torch.randn(1, 3, s, s)))
    tokens = model.tokenize(["don't forget a jacket"])
    tokens = tokens[:, : int(tokens.argmax(-1).max()) + 1]  # trimmed after EOS, as at run time
    f_txt = flops_of(lambda: model.encode_text(tokens))
    pooled = {m: torch.randn(1, model.embed_dim) for m in "LVA"}
    with torch.no_grad():  # computed once per label set at run time, not per window
        query, labels = model.query_embedding(), model.label_embeddings()
    f_head = flops_of(lambda: model.similarity(model.fuse(pooled, {m: torch.ones(1) for m in "LVA"}, query=query), labels))
    cached = runs["onnxruntime fp32, cached"].counters
    per_s = (cached.frames_encoded * f_img + cached.segments_encoded * f_img + cached.texts_encoded * f_txt
             + cached.windows_scored * f_head) / media
    gflops = matmul_gflops()
    print(f"\ncompute floor: image tower {f_img / 1e9:.2f} GFLOP/image, text tower {f_txt / 1e9:.2f} GFLOP, CMD+head "
          f"{f_head / 1e6:.1f} MFLOP; with the cache {per_s / 1e9:.2f} GFLOP per second of media (ASR not counted)")
    print(f"machine fp32 matmul (2048^3, torch): {gflops:.0f} GFLOP/s -> floor RTF {per_s / 1e9 / gflops:.3f} for the "
          f"encoders; the ORT fp32 run's encoder and head calls reach "
          f"{per_s / 1e9 * media / model_seconds['onnxruntime fp32, cached'] / gflops:.0%} of matmul peak "
          f"(ASR running beside them)")


if __name__ == "__main__":
    main()
