"""Reading a timeline JSONL back: its meta line, its windows and its end line, whatever state the
run that wrote it was left in (complete, cut short and renamed ``.partial``, or still running)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import MerstreamError

WINDOW_KEYS = ("start", "end")


@dataclass
class Timeline:
    path: Path
    meta: dict
    windows: list[dict]  # as written; a window with no modality has "scores": null and "top": null
    end: dict | None  # the end line, None while a run is still writing (or died without one)
    skipped_tail: bool = False  # a half-written last line (a live run mid-write) was left out

    @property
    def state(self) -> str:
        """``complete``, ``partial`` (cut short: an error, a signal) or ``unfinished`` (no end line)."""
        if self.end is not None:
            return "complete" if self.end.get("complete") else "partial"
        if ".partial" in self.path.suffixes:
            return "partial"
        return "unfinished"

    @property
    def labels(self) -> list[str]:
        labels = list(self.meta.get("labels") or [])
        for w in self.windows:
            for lab in w.get("scores") or {}:
                if lab not in labels:
                    labels.append(lab)
        return labels

    @property
    def covered(self) -> float:
        """Seconds from 0 to the end of the last window."""
        return max((w["end"] for w in self.windows), default=0.0)

    @property
    def live(self) -> bool:
        return "realtime" in self.meta


def scored(w: dict) -> bool:
    """Did this window get scores? (no modality at all: scores and top are null)"""
    return bool(w.get("scores")) and w.get("top") is not None


def read_timeline(path: str | Path) -> Timeline:
    """Parse ``path``; anything that is not a merstream timeline is a one-line MerstreamError."""
    path = Path(path)
    if not path.exists():
        raise MerstreamError(f"no such timeline: {path}")
    if path.is_dir():
        raise MerstreamError(f"{path} is a directory, not a timeline (.jsonl)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise MerstreamError(f"{path} is not a timeline: not UTF-8 text (expected JSONL written by merstream file/live)") from None
    lines = text.split("\n")
    meta, windows, end, skipped = {}, [], None, False
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines) and not text.endswith("\n") and windows:  # a live run is writing this line
                skipped = True
                continue
            raise MerstreamError(f"{path} is not a timeline: line {n} is not JSON (expected JSONL written by merstream file/live)") from None
        if not isinstance(row, dict):
            raise MerstreamError(f"{path} is not a timeline: line {n} is not a JSON object")
        if "meta" in row and n == 1:
            meta = row["meta"] if isinstance(row["meta"], dict) else {}
        elif isinstance(row.get("end"), dict) and len(row) == 1:  # the end line; a window's "end" is a number
            end = row["end"]
        elif all(isinstance(row.get(k), (int, float)) for k in WINDOW_KEYS):
            scores = row.get("scores")
            if scores is not None and not (isinstance(scores, dict) and all(isinstance(v, (int, float)) for v in scores.values())):
                raise MerstreamError(f"{path}: line {n} has scores that are not label: number pairs")
            windows.append(row)
        else:
            raise MerstreamError(f"{path} is not a timeline: line {n} is neither a window (start, end, scores) nor a meta or end line")
    if not meta and not windows:
        raise MerstreamError(f"{path} is not a timeline: no meta line and no windows")
    windows.sort(key=lambda w: (w["start"], w["end"]))
    return Timeline(path, meta, windows, end, skipped)
