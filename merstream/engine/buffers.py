"""Bounded, thread-safe ring buffers between the source threads and their consumers.

Every item carries its media time and the monotonic clock time at which it was captured
(``captured_at``), so the live driver can measure capture-to-score latency.

- :class:`FrameRing`: the last ``capacity`` video frames. A real-time producer never waits: when
  the ring is full the oldest frame is dropped (and counted). A fast (file) producer waits instead.
- :class:`AudioRing`: the last ``capacity`` samples of a contiguous mono stream, addressed by
  absolute sample position, with any number of readers that each keep their own position (the
  engine and the transcriber read the same audio). A reader that falls more than ``capacity``
  behind loses the oldest samples and is told how many.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    t: float  # media time (s)
    rgb: np.ndarray
    captured_at: float  # clock time (s since the clock started)


class FrameRing:
    def __init__(self, capacity: int = 64):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._items: deque[Frame] = deque()
        self._cond = threading.Condition()
        self.total = 0  # frames put
        self.dropped = 0  # frames pushed out unread because the ring was full
        self.closed = False  # the producer has finished (end of stream, stop or error)

    def put(self, frame: Frame, block: bool = False, stop: threading.Event | None = None) -> bool:
        """Add a frame; when full, drop the oldest (``block=False``) or wait for room. Returns
        False when ``stop`` was set while waiting."""
        with self._cond:
            while block and len(self._items) >= self.capacity:
                if stop is not None and stop.is_set():
                    return False
                self._cond.wait(0.05)
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(frame)
            self.total += 1
            self._cond.notify_all()
            return True

    def drain(self, upto: float | None = None) -> list[Frame]:
        """Remove and return the buffered frames (only those with ``t <= upto`` when given)."""
        with self._cond:
            out = []
            while self._items and (upto is None or self._items[0].t <= upto):
                out.append(self._items.popleft())
            if out:
                self._cond.notify_all()
            return out

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


@dataclass
class AudioRead:
    start: int  # absolute sample position of samples[0]
    samples: np.ndarray
    lost: int  # samples between the reader's old position and ``start`` that were overwritten
    marks: list[tuple[int, float]]  # (end position, captured_at) of the chunks this read completes


class AudioRing:
    def __init__(self, capacity: int, sample_rate: int = 16000):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = int(capacity)
        self.sample_rate = sample_rate
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self.written = 0  # absolute position of the next sample to write
        self._marks: deque[tuple[int, float]] = deque()
        self._readers: dict[str, int] = {}
        self._cond = threading.Condition()
        self.closed = False

    # ---- producer ------------------------------------------------------------------------
    def write(self, samples: np.ndarray, captured_at: float, block: bool = False,
              stop: threading.Event | None = None) -> bool:
        """Append samples. With ``block`` wait until every reader has room for them (a fast
        producer must not overwrite unread audio); otherwise overwrite the oldest."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if len(x) == 0:
            return True
        if len(x) > self.capacity:  # only the newest capacity samples can be kept
            with self._cond:
                self.written += len(x) - self.capacity
            x = x[-self.capacity :]
        with self._cond:
            while block and self._readers and self.written + len(x) - min(self._readers.values()) > self.capacity:
                if stop is not None and stop.is_set():
                    return False
                self._cond.wait(0.05)
            i = self.written % self.capacity
            first = min(len(x), self.capacity - i)
            self._buf[i : i + first] = x[:first]
            self._buf[: len(x) - first] = x[first:]
            self.written += len(x)
            self._marks.append((self.written, captured_at))
            while self._marks and self._marks[0][0] <= self.written - self.capacity:
                self._marks.popleft()
            self._cond.notify_all()
            return True

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    # ---- readers -------------------------------------------------------------------------
    def add_reader(self, name: str) -> None:
        with self._cond:
            self._readers[name] = self.written - min(self.written, self.capacity) if self.written else 0

    def available(self, name: str) -> int:
        with self._cond:
            return self.written - self._readers[name]

    def skip(self, name: str, keep: int = 0) -> int:
        """Move a reader forward so at most ``keep`` unread samples remain; returns how many it
        skipped (the transcriber sheds a backlog this way)."""
        with self._cond:
            pos = self._readers[name]
            new = max(pos, self.written - keep)
            self._readers[name] = new
            self._cond.notify_all()
            return new - pos

    def read(self, name: str, max_samples: int | None = None) -> AudioRead:
        with self._cond:
            pos = self._readers[name]
            oldest = self.written - min(self.written, self.capacity)
            lost = max(0, oldest - pos)
            pos += lost
            end = self.written if max_samples is None else min(self.written, pos + max_samples)
            n = end - pos
            i = pos % self.capacity
            first = min(n, self.capacity - i)
            out = np.empty(n, dtype=np.float32)
            out[:first] = self._buf[i : i + first]
            out[first:] = self._buf[: n - first]
            marks = [m for m in self._marks if pos < m[0] <= end]
            self._readers[name] = end
            self._cond.notify_all()
            return AudioRead(pos, out, lost, marks)

    def wait(self, timeout: float) -> None:
        """Block until something is written or the ring is closed (or ``timeout`` passes)."""
        with self._cond:
            self._cond.wait(timeout)
