"""int8 vs fp32 on held-out shared data, with the trained default model (or --model).

    python benchmarks/bench_int8_accuracy.py [--model DIR] [--data ../shared/data] [--faces 1200]

Exports the model to ONNX fp32 (parity-checked) and int8 (dynamically quantised towers), then
scores held-out data the model never trained on, one modality at a time, with torch fp32 and with
the int8 export:

  V  FER2013 validation faces (every k-th, ``--faces`` of them), each as a one-frame window
  A  RAVDESS actors 19-20 and EmoDB speakers 15-16, every 2 s segment as a window, scores averaged
     per clip
  L  MELD test transcripts (``--texts`` of them)

and prints, per set: the score difference, top-1 and label-set agreement, and the accuracy of each
precision against the intended labels. Unlike ``bench_export.py`` (random ViT-B-32 weights, which
measures quantisation error only), this measures what quantisation does to real decisions.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT / ".." / "shared" / "data"


@dataclass
class SetResult:
    name: str
    n: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    label_set_agreement: float
    top1_fp32: float
    top1_int8: float
    balanced_fp32: float
    balanced_int8: float

    def row(self) -> str:
        return (f"| {self.name} | {self.n} | {self.max_abs_diff:.4f} / {self.mean_abs_diff:.4f} | "
                f"{self.top1_agreement:.1%} | {self.label_set_agreement:.1%} | "
                f"{self.top1_fp32:.3f} / {self.top1_int8:.3f} | {self.balanced_fp32:.3f} / {self.balanced_int8:.3f} |")


def one_modality_scores(scorer, modality: str, emb: np.ndarray) -> np.ndarray:
    """Score windows that carry only ``modality`` (its pooled embedding), as the runtime does."""
    n = len(emb)
    pooled = {m: np.zeros((n, scorer.embed_dim), dtype=np.float32) for m in scorer.modalities}
    present = {m: np.zeros(n, dtype=np.float32) for m in scorer.modalities}
    pooled[modality], present[modality] = emb.astype(np.float32), np.ones(n, dtype=np.float32)
    return scorer.score(pooled, present)


def compare(name: str, a: np.ndarray, b: np.ndarray, la: np.ndarray, lb: np.ndarray, y: np.ndarray) -> SetResult:
    from training.metrics import single_label_scores

    s32, s8 = single_label_scores(a, y), single_label_scores(b, y)
    diff = np.abs(a - b)
    return SetResult(name, len(y), float(diff.max()), float(diff.mean()), float((a.argmax(1) == b.argmax(1)).mean()),
                     float((la == lb).all(1).mean()), s32.top1, s8.top1, s32.balanced_accuracy, s8.balanced_accuracy)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint (default: the embedded default model)")
    ap.add_argument("--data", default=str(DEFAULT_DATA.resolve()))
    ap.add_argument("--faces", type=int, default=1200, help="FER2013 validation faces to score")
    ap.add_argument("--texts", type=int, default=1000, help="MELD test transcripts to score")
    args = ap.parse_args()

    import onnxruntime
    import torch

    from export import export_model
    from merstream.models import resolve_model
    from merstream.onnx_scorer import OnnxScorer
    from merstream.torch_scorer import TorchScorer
    from training import data as D
    from training.manifest import split_of
    from training.sources import shared_emotion_sets

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")
    model = resolve_model(args.model).model.eval()
    labels = list(model.cfg.labels)
    sets = shared_emotion_sets(Path(args.data))
    y_of = lambda ss: np.array([labels.index(s.labels[0]) for s in ss])  # noqa: E731

    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        t = time.perf_counter()
        export_model(model, Path(tmp) / "int8", precision="int8", check=True)
        print(f"exported fp32 (parity-checked) and int8 in {time.perf_counter() - t:.1f} s")
        fp32, int8 = TorchScorer(model, labels), OnnxScorer(Path(tmp) / "int8", providers=["cpu"])
        results = []

        faces = split_of(sets["fer2013"], "test")
        faces = faces[:: max(1, len(faces) // args.faces)][: args.faces]
        x = D.faces_to_input(D.load_faces(faces), model.image_size).numpy()
        a, b = (one_modality_scores(s, "V", s.encode_frames(x)) for s in (fp32, int8))
        results.append(compare("V FER2013 validation faces", a, b, fp32.predict(a), int8.predict(b), y_of(faces)))

        mel = model.audio_front_end()
        speech = split_of(sets["ravdess"], "test") + split_of(sets["emodb"], "test")
        per_clip = {"fp32": [], "int8": []}
        for spec in D.speech_inputs(speech, D.load_waveforms(speech), mel, model.cfg.audio):
            spec = spec.numpy()
            for key, s in (("fp32", fp32), ("int8", int8)):
                per_clip[key].append(one_modality_scores(s, "A", s.encode_audio(spec)).mean(0))
        a, b = np.stack(per_clip["fp32"]), np.stack(per_clip["int8"])
        results.append(compare("A RAVDESS 19-20 + EmoDB 15-16 clips", a, b, fp32.predict(a), int8.predict(b), y_of(speech)))

        texts = split_of(sets["meld"], "test")[: args.texts]
        tok = fp32.text_inputs([s.text for s in texts])
        a, b = (one_modality_scores(s, "L", s.encode_text(tok)) for s in (fp32, int8))
        results.append(compare("L MELD test transcripts", a, b, fp32.predict(a), int8.predict(b), y_of(texts)))

    print("\n| held-out set | n | score abs diff max / mean | same top-1 | same label set | top-1 fp32 / int8 | balanced fp32 / int8 |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(r.row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
