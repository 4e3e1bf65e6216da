"""How well a voice representation carries emotion to speakers it has not heard: linear probes on
frozen clip embeddings of merstream's audio tower and, for comparison, of a pretrained speech
encoder (the encoder of the faster-whisper tiny.en model merstream ships for ASR).

    python -m training.voice_probe [--model merstream/assets/merstream-small-v4] [--data ../shared/data]

Each clip becomes one vector (the audio tower: mean over its 2 s segments, speaker normalised when
the model is; Whisper: mean over its encoder frames). The same probe (class-weighted logistic
regression on standardised features, fixed L2) is fitted per setting: training speakers -> the
validation speakers (RAVDESS 17-18, EmoDB 14), and all of those speakers -> CREMA-D actor 1001
(one clip per emotion, an English speaker neither has heard). Test speakers are never read. With
``centred`` each speaker's vectors have that speaker's mean removed first (on CREMA-D that mean is
over one clip of each emotion, which flatters it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track

from merstream.errors import MerstreamError
from merstream.model import load_checkpoint
from merstream.models import DEFAULT_MODEL_DIR

from . import data as D
from .manifest import Sample
from .metrics import single_label_scores
from .sources import crema_d, emodb, ravdess

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ProbeResult:
    embedding: str
    setting: str
    centred: bool
    n: int
    top1: float
    balanced_accuracy: float
    predictions: list[str] | None = None  # CREMA-D: the predicted label of each clip, in clip order


@torch.no_grad()
def tower_embeddings(model, samples: list[Sample], waves: list[np.ndarray]) -> np.ndarray:
    mel = model.audio_front_end()
    images = D.speech_inputs(samples, waves, mel, model.cfg.audio)
    return np.stack([model.audio(x.to(torch.float32)).mean(0).numpy()
                     for x in track(images, description="audio tower", transient=True)])


def whisper_embeddings(waves: list[np.ndarray], asr_model: str) -> np.ndarray:
    from merstream.asr import Transcriber

    whisper = Transcriber(asr_model, compute_type="float32").model
    out = []
    for w in track(waves, description="whisper encoder", transient=True):
        feats = whisper.feature_extractor(w)[:, :3000]  # at most 30 s, not padded to it
        out.append(np.array(whisper.encode(np.ascontiguousarray(feats)))[0].mean(0))
    return np.stack(out)


def centre(x: np.ndarray, speakers: list[str]) -> np.ndarray:
    x = x.copy()
    spk = np.array(speakers)
    for k in set(speakers):
        x[spk == k] -= x[spk == k].mean(0)
    return x


def probe(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, classes: int, l2: float = 1e-2) -> np.ndarray:
    """Class-weighted logistic regression on standardised features -> [N_eval, classes] logits."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    xt = torch.tensor((x_train - mu) / sd, dtype=torch.float32)
    yt = torch.tensor(y_train)
    weight = torch.tensor(np.bincount(y_train, minlength=classes).clip(1) ** -1.0, dtype=torch.float32)
    weight = weight / weight.mean()
    torch.manual_seed(0)
    lin = torch.nn.Linear(xt.shape[1], classes)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=500)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(xt), yt, weight=weight) + l2 * (lin.weight ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return lin(torch.tensor((x_eval - mu) / sd, dtype=torch.float32)).numpy()


def settings(samples: list[Sample]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (train indices, eval indices) over ``samples`` (RAVDESS, EmoDB train/val; CREMA-D).
    No cross-corpus setting: merstream's audio tower was trained on both corpora's training speakers."""
    src = np.array([s.source for s in samples])
    split = np.array([s.split for s in samples])
    speech = np.isin(src, ["ravdess", "emodb"])
    return {
        "validation speakers": (np.flatnonzero(speech & (split == "train")), np.flatnonzero(speech & (split == "val"))),
        "CREMA-D 1001": (np.flatnonzero(speech), np.flatnonzero(src == "crema_d")),
    }


def run_probes(embeddings: dict[str, np.ndarray], samples: list[Sample], labels: list[str]) -> list[ProbeResult]:
    y = np.array([labels.index(s.labels[0]) for s in samples])
    speakers = [D.speaker_of(s) for s in samples]
    out = []
    for name, x in embeddings.items():
        for centred in (False, True):
            xs = centre(x, speakers) if centred else x
            for setting, (tr, ev) in settings(samples).items():
                if len(tr) == 0 or len(ev) == 0:
                    continue
                logits = probe(xs[tr], y[tr], xs[ev], len(labels))
                pred = logits.argmax(1)
                sc = single_label_scores(logits, y[ev])
                out.append(ProbeResult(name, setting, centred, len(ev), round(sc.top1, 3), round(sc.balanced_accuracy, 3),
                                       [labels[k] for k in pred] if setting.startswith("CREMA") else None))
    return out


def load_samples(data: Path, labels: list[str], per_label: int | None) -> list[Sample]:
    out = []
    for speech in (ravdess(data / "ravdess"), emodb(data / "emodb")):
        for split in ("train", "val"):  # never the test speakers
            taken: dict[str, int] = {}
            for s in speech:
                if s.split == split and s.labels[0] in labels and taken.get(s.labels[0], 0) < (per_label or 10 ** 9):
                    taken[s.labels[0]] = taken.get(s.labels[0], 0) + 1
                    out.append(s)
    crema = [s for s in crema_d(data / "crema_d") if s.labels[0] in labels]
    if not out or not crema:
        raise MerstreamError(f"the model's labels ({', '.join(labels)}) name none of the speech clips' emotions")
    return out + crema


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    ap.add_argument("--asr-model", default="tiny.en", help="faster-whisper model whose encoder is compared")
    ap.add_argument("--per-label", type=int, default=None, help="at most N clips per label, corpus and split (quick runs)")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args(argv)
    if a.per_label is not None and a.per_label < 1:
        print("error: --per-label must be >= 1", file=sys.stderr)
        return 2
    try:
        if a.json:  # an unwritable report path fails now, not after the run
            j = Path(a.json)
            if j.is_dir() or not j.parent.is_dir() or not os.access(j.parent, os.W_OK):
                raise MerstreamError(f"--json: cannot write {j}")
        model = load_checkpoint(a.model).float().eval()
        labels = list(model.cfg.labels)
        samples = load_samples(Path(a.data).resolve(), labels, a.per_label)
        waves = D.load_waveforms(samples)
        results = run_probes({"merstream audio tower": tower_embeddings(model, samples, waves),
                              f"whisper {a.asr_model} encoder": whisper_embeddings(waves, a.asr_model)}, samples, labels)
    except MerstreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    crema = [s.labels[0] for s in samples if s.source == "crema_d"]
    print(f"{'embedding':<28} {'setting':<22} {'centred':<8} {'n':>5} {'top-1':>6} {'bal.acc':>7}  CREMA-D (intended -> probe)")
    for r in results:
        named = "" if r.predictions is None else " ".join(
            f"{t}->{p}" for t, p in zip(crema, r.predictions)) + f"  ({sum(t == p for t, p in zip(crema, r.predictions))}/{len(crema)})"
        print(f"{r.embedding:<28} {r.setting:<22} {'yes' if r.centred else 'no':<8} {r.n:>5} {r.top1:>6.3f} "
              f"{r.balanced_accuracy:>7.3f}  {named}")
    if a.json:
        Path(a.json).write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
