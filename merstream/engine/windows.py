"""Window planning: which windows cover a stream, which frames / audio segments / words each gets.

Window k covers [k * hop, k * hop + window). Its T_V frame times are the centres of T_V equal
slices of the window, so with hop = window / 2 (the default 1 s / 2 s) every second window reuses
half the frame times of the one before, and the embedding cache turns that into saved encodes.
Audio segments of ``segment_seconds`` start at the window start (T_A = ceil(window / segment)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..asr import Word

EPS = 1e-6


@dataclass
class Window:
    index: int
    start: float
    end: float  # start + window (may pass the end of the media; results report the clipped end)

    def frame_times(self, n: int) -> list[float]:
        step = (self.end - self.start) / n
        return [round(self.start + (i + 0.5) * step, 6) for i in range(n)]

    def segment_starts(self, segment_seconds: float, until: float = math.inf) -> list[float]:
        """Starts of the window's audio segments; with ``until`` (where the media ends) only those
        before it."""
        count = max(1, math.ceil((min(self.end, until) - self.start) / segment_seconds - EPS))
        return [round(self.start + j * segment_seconds, 6) for j in range(count)]


def window_at(index: int, window: float, hop: float) -> Window:
    start = round(index * hop, 6)
    return Window(index, start, round(start + window, 6))


def window_count(duration: float, window: float, hop: float) -> int:
    """Windows needed to cover ``duration`` s: starts 0, hop, ... < max(duration - window, 0) + hop,
    and never one that starts at or after the end (possible when hop > window)."""
    if duration <= 0:
        return 0
    covering = math.ceil((max(duration - window, 0.0) + hop) / hop - EPS)
    return max(1, min(covering, math.ceil(duration / hop - EPS)))


def words_in(words: list[Word], start: float, end: float, left_context: float = 0.0) -> str:
    """Transcript of the words whose midpoint falls in [start - left_context, end)."""
    lo = start - left_context
    return " ".join(w.text for w in words if lo <= (w.start + w.end) / 2 < end)


@dataclass
class WindowResult:
    index: int
    start: float
    end: float
    scores: dict[str, float | None]  # None: the window had no input at all (no modality)
    labels: list[str]  # predicted labels (above threshold, or the argmax for sentiment)
    top: str | None
    text: str
    modalities: str  # which modalities this window had, in fusion order, e.g. "LVA"
    frames: int
    segments: int
    latency: float | None = None  # live: seconds from the window's end being captured to its score

    def to_json(self) -> dict:
        d = {
            "index": self.index,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "top": self.top,
            "labels": self.labels,
            "scores": {k: None if v is None else round(v, 5) for k, v in self.scores.items()},
            "text": self.text,
            "modalities": self.modalities,
            "frames": self.frames,
            "segments": self.segments,
        }
        if self.latency is not None:
            d["latency"] = round(self.latency, 4)
        return d


@dataclass
class Counters:
    frames_encoded: int = 0
    frame_cache_hits: int = 0
    segments_encoded: int = 0
    segment_cache_hits: int = 0
    texts_encoded: int = 0
    text_cache_hits: int = 0
    windows_scored: int = 0
    windows_dropped: int = 0
    extra: dict = field(default_factory=dict)
