"""Reading a timeline JSONL back: its meta line, its windows and its end line, whatever state the
run that wrote it was left in (complete, cut short and renamed ``.partial``, or still running)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import MerstreamError

WINDOW_KEYS = ("start", "end")
MAX_SECONDS = 7 * 24 * 3600  # a window past a week of media is not one merstream wrote


@dataclass
class Timeline:
    path: Path
    meta: dict
    windows: list[dict]  # as written, except that a window with no modality has "scores": None and "top": None
    end: dict | None  # the end line, None while a run is still writing (or died without one)
    skipped_tail: bool = False  # a half-written last line (a live run mid-write) was left out

    @property
    def missing_windows(self) -> int:
        """Windows the end line counts that the file does not hold (lines deleted or lost); 0 without
        an end line or a count, negative when the file holds more than it counts."""
        n = (self.end or {}).get("windows")
        return n - len(self.windows) if isinstance(n, int) and not isinstance(n, bool) else 0

    @property
    def state(self) -> str:
        """``complete``, ``partial`` (cut short: an error, a signal), ``unfinished`` (no end line) or
        ``damaged`` (the end line counts other windows than the file holds)."""
        if self.end is not None:
            if self.missing_windows:
                return "damaged"
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


def _window(row: dict, where: str) -> dict:
    """A window line checked and normalised: every score null (no modality; merstream writes each
    label with null) becomes ``scores: None``; anything that is not what merstream writes is an error."""
    start, end = row["start"], row["end"]
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end <= MAX_SECONDS):
        raise MerstreamError(f"{where} has a window from {start} to {end} s (expected 0 <= start < end)")
    scores = row.get("scores")
    if isinstance(scores, dict) and scores and all(v is None for v in scores.values()):
        scores = None
    if scores is not None and not (isinstance(scores, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scores.values())):
        raise MerstreamError(f"{where} has scores that are not label: number pairs")
    top = row.get("top")
    if top is not None and (scores is None or top not in scores):
        raise MerstreamError(f"{where} has a top label {top!r} that is not among its scores")
    for key in ("text", "modalities"):
        if not isinstance(row.get(key, ""), str):
            raise MerstreamError(f"{where} has a {key} that is not text")
    return {**row, "scores": scores, "top": top if scores is not None else None}


def read_timeline(path: str | Path) -> Timeline:
    """Parse ``path``; anything that is not a merstream timeline is a one-line MerstreamError."""
    path = Path(path)
    if not path.exists():
        raise MerstreamError(f"no such timeline: {path}")
    if path.is_dir():
        raise MerstreamError(f"{path} is a directory, not a timeline (.jsonl)")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a BOM (an editor's) is not part of the text
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
            labels = meta.get("labels")
            if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
                raise MerstreamError(f"{path}: the meta line's labels are not a list of label names")
        elif isinstance(row.get("end"), dict) and len(row) == 1:  # the end line; a window's "end" is a number
            end = row["end"]
        elif all(isinstance(row.get(k), (int, float)) for k in WINDOW_KEYS):
            windows.append(_window(row, f"{path}: line {n}"))
        else:
            raise MerstreamError(f"{path} is not a timeline: line {n} is neither a window (start, end, scores) nor a meta or end line")
    if not meta and not windows:
        raise MerstreamError(f"{path} is not a timeline: no meta line and no windows")
    windows.sort(key=lambda w: (w["start"], w["end"]))
    return Timeline(path, meta, windows, end, skipped)
