"""ViT-B-32 vision tower: torch eager vs onnxruntime fp32 vs onnxruntime int8, and int8 accuracy.

    python benchmarks/bench_export.py [--video PATH] [--reps 7] [--windows 12]

Builds the ViT-B-32 architecture with random weights (vision modality only: vision tower, label
encoder, CMD head), exports it to ONNX fp32 (parity-checked) and int8, then
1. times encoding the same 12 real frames (one window) with each backend: median of ``--reps``
   runs after one warm-up, ratios to torch eager from this one run;
2. compares int8 scores with torch fp32 on ``--windows`` windows of 12 real frames each:
   score difference, predicted-label agreement, top-1 agreement.
Random weights: the accuracy figures measure quantisation error, not emotion accuracy.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_VIDEO = ROOT / ".." / "shared" / "data" / "talk" / "talk_6emotions.mp4"


def median_seconds(fn, reps: int) -> float:
    fn()  # warm-up (allocations, ORT graph caches)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(DEFAULT_VIDEO.resolve()))
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--windows", type=int, default=12, help="windows of 12 frames for the int8 accuracy check")
    args = ap.parse_args()

    from export import export_model, reference_from_media
    from merstream.config import ModelConfig
    from merstream.model import MerClip
    from merstream.onnx_scorer import OnnxScorer
    from merstream.torch_scorer import TorchScorer

    threads = torch.get_num_threads()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} ({threads} threads), "
          f"onnxruntime {__import__('onnxruntime').__version__}")
    torch.manual_seed(0)
    model = MerClip(ModelConfig(clip="ViT-B-32", fusion_order=["V"])).eval()
    frames_per_window = model.cfg.num_frames  # 12
    ref = reference_from_media(args.video, model.image_size, model.audio_front_end(), windows=args.windows, frames_per_window=frames_per_window)
    frames = ref.frames[ref.window_frames(0)]
    print(f"input: {len(frames)} real frames {tuple(frames.shape[1:])} from {Path(args.video).name}")

    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        t = time.perf_counter()
        fp32 = export_model(model, Path(tmp) / "fp32", precision="fp32", check=True)
        print(f"export fp32 + parity check: {time.perf_counter() - t:.1f} s, max |torch - onnx| {fp32.parity.worst.max_abs:.2e}")
        t = time.perf_counter()
        int8 = export_model(model, Path(tmp) / "int8", precision="int8", check=True, reference=ref)
        print(f"export int8 (+ fp32 parity, + accuracy on {ref.windows} windows): {time.perf_counter() - t:.1f} s")
        size = {p: (Path(tmp) / p / "vision.onnx").stat().st_size / 1e6 for p in ("fp32", "int8")}

        torch_s = TorchScorer(model)
        ort32 = OnnxScorer(Path(tmp) / "fp32", providers=["cpu"])
        ort8 = OnnxScorer(Path(tmp) / "int8", providers=["cpu"])
        runs = {
            "torch eager fp32": lambda: torch_s.encode_frames(frames),
            "onnxruntime fp32": lambda: ort32.encode_frames(frames),
            "onnxruntime int8": lambda: ort8.encode_frames(frames),
        }
        secs = {name: median_seconds(fn, args.reps) for name, fn in runs.items()}
        base = secs["torch eager fp32"]
        print(f"\nViT-B-32 vision tower, {len(frames)} frames, median of {args.reps} runs (one run of this script):")
        for name, s in secs.items():
            mb = f"  model {size['int8' if 'int8' in name else 'fp32']:.0f} MB" if name.startswith("onnx") else ""
            print(f"  {name:<18} {s * 1000:8.1f} ms  {len(frames) / s:6.1f} frames/s  x{base / s:.2f} vs torch{mb}")
        e32, e8 = ort32.encode_frames(frames), ort8.encode_frames(frames)
        cos = (e32 * e8).sum(-1) / (np.linalg.norm(e32, axis=-1) * np.linalg.norm(e8, axis=-1))
        print(f"  int8 vs fp32 frame embeddings: min cosine {cos.min():.4f}, max |diff| {np.abs(e32 - e8).max():.4f}")
        print()
        for line in int8.accuracy.lines():
            print(line)


if __name__ == "__main__":
    main()
