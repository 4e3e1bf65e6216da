"""Manifest builders for the datasets in ``../shared/data`` and for generic layouts.

Emotion names are mapped onto merstream's six runtime labels (``EMOTIONS_6``: neutral, happy,
sad, angry, fear, disgust) by :data:`LABEL_MAP`; labels outside the set (surprise, boredom,
EmoryNLP's Peaceful/Powerful) are dropped, RAVDESS "calm" becomes neutral.

Raw MOSI/MOSEI/MELD/IEMOCAP videos are not available here: their builders read the text
(transcript + labels) that is, and :func:`segment_clips` turns a CSV of segment times into clip
samples cut from the raw videos once a user has them.
"""

from __future__ import annotations

import csv
from pathlib import Path

from merstream.config import EMOTIONS_6
from merstream.errors import MerstreamError

from .manifest import Sample

LABEL_MAP = {
    "neutral": "neutral", "calm": "neutral",
    "happy": "happy", "happiness": "happy", "joy": "happy", "joyful": "happy", "hap": "happy",
    "sad": "sad", "sadness": "sad",
    "angry": "angry", "anger": "angry", "mad": "angry", "ang": "angry",
    "fear": "fear", "fearful": "fear", "scared": "fear", "fea": "fear",
    "disgust": "disgust", "dis": "disgust",
    "neu": "neutral",
}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
AUDIO_EXTS = {".wav", ".flac", ".mp3", ".ogg", ".m4a"}
VIDEO_EXTS = {".mp4", ".mkv", ".avi", ".mov", ".flv", ".webm"}


def map_label(name: str, labels: list[str] = EMOTIONS_6) -> str | None:
    """A dataset's emotion name -> one of ``labels`` (or None: dropped)."""
    key = name.strip().lower()
    if key in labels:
        return key
    mapped = LABEL_MAP.get(key)
    return mapped if mapped in labels else None


def _require(path: Path) -> Path:
    if not path.exists():
        raise MerstreamError(f"dataset file not found: {path}")
    return path


def _rows(path: Path) -> list[dict]:
    with _require(path).open(newline="", encoding="utf-8", errors="replace") as f:
        return list(csv.DictReader(f))


def speaker_split(speaker: int, val: set[int], test: set[int]) -> str:
    return "test" if speaker in test else "val" if speaker in val else "train"


def acted_speech(root: Path, source: str, speaker_col: str, text_col: str, val, test) -> list[Sample]:
    """Acted-speech clips listed in ``labels.csv``: feed A only, split by speaker."""
    root = Path(root).resolve()
    out = []
    for r in _rows(root / "labels.csv"):
        label = map_label(r["emotion"])
        if label is None:
            continue
        out.append(Sample(
            id=f"{source}/{Path(r['path']).stem}", labels=[label], audio=str(root / r["path"]),
            text=r[text_col], modalities=["A"], split=speaker_split(int(r[speaker_col]), set(val), set(test)),
            source=source, speaker=f"{source}/{int(r[speaker_col])}",
        ))
    return out


def ravdess(root: Path, val_actors=(17, 18), test_actors=(19, 20)) -> list[Sample]:
    """RAVDESS speech (actors 01-20 here): feeds A only (two fixed neutral sentences)."""
    return acted_speech(root, "ravdess", "actor", "statement_text", val_actors, test_actors)


def emodb(root: Path, val_speakers=(14,), test_speakers=(15, 16)) -> list[Sample]:
    """Berlin EmoDB (German acted sentences): feeds A only; boredom is dropped."""
    return acted_speech(root, "emodb", "speaker", "transcript_de", val_speakers, test_speakers)


def label_folders(root: Path, labels: list[str], what: str):
    """(label folder, mapped label, its files sorted) for ``root/<label>/<file>`` layouts."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise MerstreamError(f"{what} not found: {root}")
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        label = map_label(d.name, labels)
        if label is not None:
            yield d, label, sorted(d.iterdir())


def image_folders(root: Path, split: str, source: str, labels: list[str] = EMOTIONS_6) -> list[Sample]:
    """Folder-per-label face images (``root/<label>/*.png``): feeds V only."""
    out = []
    for d, label, files in label_folders(root, labels, "image folder"):
        for f in files:
            if f.suffix.lower() in IMAGE_EXTS:
                out.append(Sample(id=f"{source}/{d.name}/{f.stem}", labels=[label], image=str(f),
                                  modalities=["V"], split=split, source=source))
    return out


def fer2013(root: Path, val_every: int = 20) -> list[Sample]:
    """FER2013: train/ (every ``val_every``-th image of each class -> val), validation/ -> test."""
    root = Path(root).resolve()
    train = image_folders(root / "train", "train", "fer2013")
    for i, s in enumerate(train):
        if i % val_every == 0:
            s.split = "val"
    return train + image_folders(root / "validation", "test", "fer2013")


def folder_per_label(root: Path, split: str = "train", labels: list[str] = EMOTIONS_6) -> list[Sample]:
    """Generic layout ``root/<label>/<file>``: images feed V, audio feeds A, video feeds V+A,
    .txt files are transcripts (L)."""
    root = Path(root).resolve()
    out = []
    for d, label, files in label_folders(root, labels, "dataset folder"):
        for f in files:
            ext = f.suffix.lower()
            kw = {}
            if ext in IMAGE_EXTS:
                kw = {"image": str(f)}
            elif ext in AUDIO_EXTS:
                kw = {"audio": str(f)}
            elif ext in VIDEO_EXTS:
                kw = {"video": str(f)}
            elif ext == ".txt":
                kw = {"text": f.read_text(encoding="utf-8", errors="replace").strip()}
            if kw:
                out.append(Sample(id=f"{root.name}/{d.name}/{f.stem}", labels=[label], split=split,
                                  source=root.name, **kw))
    return out


def crema_d(root: Path, split: str = "test") -> list[Sample]:
    """CREMA-D clips (video + audio + the read sentence): V and A; the words carry no emotion."""
    root = Path(root).resolve()
    out = []
    for r in _rows(root / "labels.csv"):
        label = map_label(r["intended_emotion"])
        if label is None:
            continue
        p = root / r["path"]
        if not p.exists():
            p = root / Path(r["path"]).name
        out.append(Sample(id=f"crema_d/{p.stem}", labels=[label], video=str(_require(p)), text=r["transcript"],
                          modalities=["V", "A"], split=split, source="crema_d",
                          speaker=f"crema_d/{r['actor']}"))
    return out


def meld_text(root: Path) -> list[Sample]:
    """MELD utterance transcripts (train/dev/test) with emotion -> L only (no raw videos here)."""
    root = Path(root).resolve()
    out = []
    for split, name in (("train", "train_sent_emo.csv"), ("val", "dev_sent_emo.csv"), ("test", "test_sent_emo.csv")):
        for r in _rows(root / name):
            label = map_label(r["Emotion"])
            text = r["Utterance"].replace("\u2019", "'").replace("\x92", "'").strip()
            if label is None or not text:
                continue
            out.append(Sample(id=f"meld/{split}/{r['Dialogue_ID']}_{r['Utterance_ID']}", labels=[label], text=text,
                              modalities=["L"], split=split, source="meld"))
    return out


def emorynlp_text(root: Path) -> list[Sample]:
    """EmoryNLP (Friends) transcripts: Joyful/Mad/Scared/Sad/Neutral kept, Peaceful/Powerful dropped."""
    root = Path(root).resolve()
    out = []
    for split, name in (("train", "emorynlp_train_final.csv"), ("val", "emorynlp_dev_final.csv"),
                        ("test", "emorynlp_test_final.csv")):
        for i, r in enumerate(_rows(root / name)):
            label = map_label(r["Emotion"])
            text = r["Utterance"].strip()
            if label is None or not text:
                continue
            out.append(Sample(id=f"emorynlp/{split}/{i}", labels=[label], text=text, modalities=["L"],
                              split=split, source="emorynlp"))
    return out


def sentiment_text(csv_path: Path, source: str) -> list[Sample]:
    """CMU-MOSI / CMU-MOSEI transcripts (``mosi_label.csv``/``mosei_label.csv``): sentiment task,
    positive (score > 0) vs negative (score < 0); neutral (0) rows are left out as in Acc-2."""
    out = []
    for i, r in enumerate(_rows(Path(csv_path))):
        try:
            score = float(r["label"])
        except (KeyError, ValueError):
            continue
        if score == 0 or not r.get("text"):
            continue
        split = {"train": "train", "valid": "val", "val": "val", "test": "test"}.get(r.get("mode", "train"), "train")
        sid = r.get("id") or f"{r.get('video_id')}_{r.get('clip_id')}"
        out.append(Sample(id=f"{source}/{sid}", labels=["positive" if score > 0 else "negative"], text=r["text"],
                          modalities=["L"], split=split, source=source, score=score))
    return out


def segment_clips(times_csv: Path, video_dir: Path, labels_of, split_of=lambda r: "train") -> list[Sample]:
    """Utterance clips cut from raw videos with segment times (MOSEI SDK / MELD / IEMOCAP style).

    ``times_csv`` rows need ``file``, ``start``, ``end``; ``labels_of(row)`` returns the labels.
    Rows whose video is missing are skipped; with no video at all this is an error.
    """
    video_dir = Path(video_dir)
    out, missing = [], 0
    for i, r in enumerate(_rows(Path(times_csv))):
        found = [video_dir / f"{r['file']}{ext}" for ext in (".mp4", ".mkv", ".avi", ".flv")]
        video = next((p for p in found if p.exists()), None)
        if video is None:
            missing += 1
            continue
        labels = labels_of(r)
        if labels:
            out.append(Sample(id=f"{r['file']}_{i}", labels=labels, video=str(video), start=float(r["start"]),
                              end=float(r["end"]), split=split_of(r), source=Path(times_csv).stem))
    if not out:
        raise MerstreamError(f"no videos for the segments in {times_csv} under {video_dir} ({missing} missing)")
    return out


def shared_emotion_sets(data: Path) -> dict[str, list[Sample]]:
    """Every 6-emotion sample in ``../shared/data`` by source."""
    data = Path(data)
    return {
        "fer2013": fer2013(data / "fer2013"),
        "ravdess": ravdess(data / "ravdess"),
        "emodb": emodb(data / "emodb"),
        "meld": meld_text(data / "text" / "meld" / "data" / "MELD"),
        "emorynlp": emorynlp_text(data / "text" / "meld" / "data" / "emorynlp"),
        "crema_d": crema_d(data / "crema_d"),
    }
