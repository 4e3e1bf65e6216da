"""How a model fuses a face and a voice that show different emotions (validation data only).

    python -m training.disagreement_check [--model merstream/assets/merstream-small-v4] [--data ../shared/data]

Every validation speech clip (RAVDESS actors 17-18, EmoDB speaker 14; first 2 s segment, speaker
normalised when the model is) is paired with a held-out FER2013 face of each other emotion, without
words, and the fused prediction is sorted into: top-1 is the face's label, the voice's label, or a
third one (neither input shows it), and whether the top 2 hold both. For comparison, the same clips
with a face of their own label. The data is the build's validation split, never its test split.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from merstream.errors import MerstreamError
from merstream.model import load_checkpoint
from merstream.models import DEFAULT_MODEL_DIR

from . import data as D
from .manifest import split_of
from .sources import shared_emotion_sets

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Disagreement:
    pairs: int
    face_top1: float
    voice_top1: float
    third_top1: float
    both_in_top2: float
    agreeing_top1: float  # same clips, a face of the voice's own label


@torch.no_grad()
def check(model, data: Path, faces_per_label: int = 1, seed: int = 0) -> Disagreement:
    labels = list(model.cfg.labels)
    sets = shared_emotion_sets(data)
    speech = split_of(sets["ravdess"], "val") + split_of(sets["emodb"], "val")
    fer = split_of(sets["fer2013"], "val")
    waves = D.load_waveforms(speech)
    mel = model.audio_front_end()
    spec = torch.cat([x[:1] for x in D.speech_inputs(speech, waves, mel, model.cfg.audio)])
    faces = D.faces_to_input(D.load_faces(fer), model.image_size)
    rng = np.random.default_rng(seed)
    by_face: dict[int, list[int]] = {}
    for i, s in enumerate(fer):
        by_face.setdefault(labels.index(s.labels[0]), []).append(i)
    voice = [labels.index(s.labels[0]) for s in speech]
    rows = []  # (voice label, face label, top-2 indices)
    for i, kv in enumerate(voice):
        for kf in range(len(labels)):
            for fi in rng.choice(by_face[kf], size=faces_per_label, replace=False):
                rows.append((i, kv, kf, int(fi)))
    top2 = []
    for a in range(0, len(rows), 128):
        chunk = rows[a: a + 128]
        sim = model(frames=faces[[r[3] for r in chunk]][:, None], spectrograms=spec[[r[0] for r in chunk]][:, None])
        top2.append(sim.topk(2, dim=-1).indices)
    return summarise(torch.cat(top2).numpy(), np.array([r[1] for r in rows]), np.array([r[2] for r in rows]))


def summarise(top2: np.ndarray, voice: np.ndarray, face: np.ndarray) -> Disagreement:
    """[N, 2] top-2 label indices of fused predictions, the voice's and the face's label of each pair."""
    mixed, same = voice != face, voice == face
    t1 = top2[:, 0]
    both = ((t1 == voice) & (top2[:, 1] == face)) | ((t1 == face) & (top2[:, 1] == voice))
    return Disagreement(
        pairs=int(mixed.sum()), face_top1=float((t1 == face)[mixed].mean()),
        voice_top1=float((t1 == voice)[mixed].mean()), third_top1=float(((t1 != face) & (t1 != voice))[mixed].mean()),
        both_in_top2=float(both[mixed].mean()), agreeing_top1=float((t1 == voice)[same].mean()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    a = ap.parse_args(argv)
    try:
        model = load_checkpoint(a.model).float().eval()
        r = check(model, Path(a.data).resolve())
    except MerstreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{r.pairs} face/voice pairs that disagree: top-1 = face {r.face_top1:.3f}, voice {r.voice_top1:.3f}, "
          f"a third label {r.third_top1:.3f}; both in the top 2: {r.both_in_top2:.3f}")
    print(f"same clips with a face of the voice's label: top-1 right {r.agreeing_top1:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
