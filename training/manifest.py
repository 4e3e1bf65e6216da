"""Dataset manifests: one labelled sample per line (JSONL) or row (CSV).

A sample names its media and which modalities it feeds:

    {"id": "ravdess/01-01", "labels": ["happy"], "audio": "/data/x.flac", "video": null,
     "image": null, "text": "Kids are talking by the door", "start": null, "end": null,
     "modalities": ["A"], "split": "train", "source": "ravdess"}

``image`` is a still face image (feeds V), ``video`` a video file (frames feed V; its audio track
feeds A unless ``audio`` names another file), ``audio`` a speech file (feeds A), ``text`` a
transcript (feeds L). ``start``/``end`` (seconds) cut an utterance out of a longer file.
``modalities`` lists what the sample may feed: an acted sentence's words carry no emotion, so a
speech clip with its transcript can be limited to ["A"]. In CSV, ``labels`` and ``modalities``
are ``;``-separated.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from merstream.errors import MerstreamError

SPLITS = ("train", "val", "test")


@dataclass
class Sample:
    id: str
    labels: list[str]
    image: str | None = None
    video: str | None = None
    audio: str | None = None
    text: str | None = None
    start: float | None = None
    end: float | None = None
    modalities: list[str] = field(default_factory=list)
    split: str = "train"
    source: str = ""
    score: float | None = None  # e.g. MOSI/MOSEI sentiment in [-3, 3]
    speaker: str | None = None  # who speaks (speaker normalisation groups a speaker's clips)

    def __post_init__(self) -> None:
        if not self.modalities:
            mods = []
            if self.text:
                mods.append("L")
            if self.image or self.video:
                mods.append("V")
            if self.audio or self.video:
                mods.append("A")
            self.modalities = mods
        self.modalities = [m.upper() for m in self.modalities]
        if not self.modalities:
            raise MerstreamError(f"manifest sample {self.id!r} has no image, video, audio or text")
        if self.split not in SPLITS:
            raise MerstreamError(f"manifest sample {self.id!r}: split must be one of {SPLITS}, got {self.split!r}")

    @property
    def has_media(self) -> bool:
        return bool(self.image or self.video or self.audio)


def _from_dict(d: dict, where: str) -> Sample:
    if not isinstance(d, dict):
        raise MerstreamError(f"{where}: expected a JSON object")
    known = set(Sample.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise MerstreamError(f"{where}: unknown keys {unknown}")
    if "id" not in d or "labels" not in d:
        raise MerstreamError(f"{where}: every sample needs 'id' and 'labels'")
    d = dict(d)
    for key in ("labels", "modalities"):
        v = d.get(key)
        if isinstance(v, str):
            d[key] = [x.strip() for x in v.split(";") if x.strip()]
    for key in ("start", "end", "score"):
        if d.get(key) in ("", None):
            d[key] = None
        else:
            try:
                d[key] = float(d[key])
            except (TypeError, ValueError):
                raise MerstreamError(f"{where}: {key} must be a number, got {d[key]!r}") from None
    if d.get("start") is not None and d.get("end") is not None and not 0 <= d["start"] < d["end"]:
        raise MerstreamError(f"{where}: needs 0 <= start < end, got start {d['start']:g}, end {d['end']:g}")
    for key in ("image", "video", "audio", "text", "speaker"):
        if d.get(key) == "":
            d[key] = None
    return Sample(**d)


def read_manifest(path: str | Path) -> list[Sample]:
    """Samples of a JSONL or CSV manifest; relative media paths are relative to the manifest."""
    p = Path(path)
    if not p.exists():
        raise MerstreamError(f"manifest not found: {p}")
    samples: list[Sample] = []
    try:
        if p.suffix.lower() == ".csv":
            with p.open(newline="", encoding="utf-8") as f:
                for i, row in enumerate(csv.DictReader(f), start=2):
                    if any(v.strip() for v in row.get(None, [])):  # more (non-empty) fields than the header names
                        raise MerstreamError(f"{p}:{i}: {len(row) - 1 + len(row[None])} fields, the header names {len(row) - 1}")
                    samples.append(_from_dict({k: v for k, v in row.items() if k is not None}, f"{p}:{i}"))
        else:
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MerstreamError(f"{p}:{i}: not valid JSON ({e.msg})") from None
                samples.append(_from_dict(d, f"{p}:{i}"))
    except UnicodeDecodeError:
        raise MerstreamError(f"manifest {p} is not UTF-8 text") from None
    if not samples:
        raise MerstreamError(f"manifest {p} holds no samples")
    for s in samples:
        for key in ("image", "video", "audio"):
            v = getattr(s, key)
            if v and not Path(v).is_absolute():
                setattr(s, key, str((p.parent / v).resolve()))
    return samples


def write_manifest(samples: list[Sample], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() == ".csv":
        names = list(Sample.__dataclass_fields__)
        with p.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=names)
            w.writeheader()
            for s in samples:
                row = asdict(s)
                row["labels"] = ";".join(s.labels)
                row["modalities"] = ";".join(s.modalities)
                w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    else:
        p.write_text("".join(json.dumps(asdict(s), ensure_ascii=False) + "\n" for s in samples), encoding="utf-8")
    return p


def split_of(samples: list[Sample], split: str) -> list[Sample]:
    return [s for s in samples if s.split == split]
