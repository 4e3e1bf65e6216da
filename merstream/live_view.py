"""What `merstream live` shows and records: a rich terminal view, a one-line-per-window log for
non-terminals, an OpenCV overlay (for --show) and an annotated-video recorder (--record)."""

from __future__ import annotations

import os
import queue
import sys
import threading
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from .engine.windows import WindowResult
from .errors import MerstreamError

if TYPE_CHECKING:
    from .engine.live import LiveSnapshot

BAR = 28


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def status_line(s: LiveSnapshot) -> str:
    parts = [
        f"t {s.clock:6.1f} s", f"media {s.media_time:6.1f} s", f"fps {s.fps:4.1f}",
        f"latency {_fmt_s(s.latency_last)} (p50 {_fmt_s(s.latency_p50)}, p95 {_fmt_s(s.latency_p95)})",
        f"windows {s.windows_scored} scored / {s.windows_dropped} dropped",
    ]
    if s.frames_dropped:
        parts.append(f"frames dropped {s.frames_dropped}")
    if s.asr_skipped_seconds:
        parts.append(f"ASR skipped {s.asr_skipped_seconds:.1f} s")
    if s.text_forced:
        parts.append(f"transcript deadline hit {s.text_forced}x")
    for track, t in s.stopped.items():
        parts.append(f"{track} stopped at {t:.1f} s")
    return "  ".join(parts)


def render(s: LiveSnapshot, title: str):
    """The rich renderable of one snapshot: top emotions with bars, transcript, figures."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=None, pad_edge=False, expand=False)
    table.add_column(justify="right", style="bold")
    table.add_column()
    table.add_column(justify="right")
    r = s.last
    if r is not None and r.top is None:
        head = Text(f"window {r.start:.1f}-{r.end:.1f} s  no input (no frame, audio or words): not scored", style="dim")
    elif r is not None:
        for lab, score in sorted(r.scores.items(), key=lambda kv: -kv[1]):
            style = "green" if lab in r.labels else "white"
            bar = "█" * int(round(score * BAR))
            table.add_row(lab, Text(bar.ljust(BAR, "·"), style=style), f"{score:.2f}")
        head = Text(f"window {r.start:.1f}-{r.end:.1f} s  top: ", style="dim")
        head.append(r.top, style="bold green")
        head.append(f"   modalities {r.modalities}", style="dim")
    else:
        head = Text("waiting for the first window...", style="dim")
    words = Text(s.transcript or "")
    if s.pending:
        words.append((" " if s.transcript else "") + s.pending, style="dim italic")
    body = [head, table, Text(""), Panel(words, title="transcript", title_align="left", border_style="dim")]
    body.append(Text(status_line(s), style="cyan"))
    if s.error:
        body.append(Text(s.error, style="bold red"))
    return Panel(Group(*body), title=title, title_align="left")


def window_line(r: WindowResult) -> str:
    """One line per scored window (the log used when stderr is not a terminal)."""
    lat = f"  latency {r.latency:.2f} s" if r.latency is not None else ""
    text = f'  "{r.text}"' if r.text else ""
    if r.top is None:
        return f"[{r.start:6.1f}-{r.end:6.1f} s] {'-':>10s}  no input{lat}"
    return f"[{r.start:6.1f}-{r.end:6.1f} s] {r.top:>10s} {r.scores[r.top]:.2f}  {','.join(r.labels) or '-'}{lat}{text}"


# ---- OpenCV overlay -----------------------------------------------------------------------
def draw_overlay(bgr: np.ndarray, r: WindowResult | None, status: str = "", face=None) -> np.ndarray:
    """Label bars (predicted labels green), the window's transcript and a status line; ``face``
    (x, y, size in the frame's pixels): the face box a face-crop model is given."""
    import cv2

    out = bgr.copy()
    h, w = out.shape[:2]
    scale = max(0.5, min(w, h) / 480)
    lh = int(22 * scale) + 4
    if face is not None:
        x, y, s = face
        cv2.rectangle(out, (x, y), (x + s - 1, y + s - 1), (255, 200, 0), max(1, round(2 * scale)), cv2.LINE_AA)
    if r is not None and r.top is not None:
        items = sorted(r.scores.items(), key=lambda kv: -kv[1])
        box_h = lh * (len(items) + 1) + 8
        roi = out[0 : min(box_h, h), 0 : min(int(330 * scale), w)]
        roi[:] = (roi * 0.45).astype(out.dtype)
        for i, (lab, score) in enumerate(items):
            y = 6 + lh * (i + 1)
            color = (80, 220, 80) if lab in r.labels else (230, 230, 230)
            cv2.putText(out, f"{lab} {score:.2f}", (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, color, 1, cv2.LINE_AA)
            x0 = int(120 * scale)
            cv2.rectangle(out, (x0, y - lh + 8), (x0 + int(score * 200 * scale), y - 2), color, -1)
        if r.text:
            cv2.putText(out, r.text[-80:], (6, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (255, 255, 255), 1, cv2.LINE_AA)
    if status:
        cv2.putText(out, status, (6, h - 12 - lh if r is not None and r.top is not None and r.text else h - 12), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * scale, (0, 220, 255), 1, cv2.LINE_AA)
    return out


def check_display() -> None:
    """--show needs a window system and an OpenCV built with GUI support."""
    import cv2

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise MerstreamError("--show needs a display (DISPLAY is not set); use --record out.mp4 to keep an annotated video")
    info = cv2.getBuildInformation()
    gui = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.strip().startswith("GUI:")), "")
    if gui.upper() == "NONE":
        raise MerstreamError("--show: this OpenCV build has no GUI support (opencv-python-headless?)")


class Recorder:
    """Writes every captured frame, annotated with the latest scored window, to a video file
    (OpenCV VideoWriter, mp4v). Runs in its own thread; when it cannot keep up it drops frames
    (counted) instead of slowing the capture."""

    @staticmethod
    def check_path(path: Path) -> None:
        """A video file OpenCV can make at ``path``: checked before a live run starts."""
        path = Path(path)
        if path.suffix.lower() not in (".mp4", ".avi", ".mkv", ".mov"):
            raise MerstreamError(f"--record: {path} must end in .mp4, .avi, .mkv or .mov")
        if not path.parent.is_dir():
            raise MerstreamError(f"--record: folder {path.parent} does not exist")
        if path.is_dir() or not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise MerstreamError(f"--record: cannot write {path}")

    def __init__(self, path: Path, fps: float | None):
        self.path = Path(path)
        self.check_path(self.path)
        self.fps = fps if fps and 1 <= fps <= 240 else 30.0
        self._q: queue.Queue = queue.Queue(maxsize=64)
        self.latest: WindowResult | None = None
        self.status = ""
        self.written = 0
        self.dropped = 0
        self.error: str | None = None
        self._writer = None
        self._size = None
        self._thread = threading.Thread(target=self._loop, name="recorder", daemon=True)
        self._thread.start()

    def add(self, t: float, rgb: np.ndarray) -> None:  # from the source thread
        try:
            self._q.put_nowait(rgb)
        except queue.Full:
            self.dropped += 1

    def _loop(self) -> None:
        import cv2

        while True:
            rgb = self._q.get()
            if rgb is None:
                break
            if self.error is not None:
                continue
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            if self._writer is None:
                h, w = bgr.shape[:2]
                self._size = (w, h)
                self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
                if not self._writer.isOpened():
                    self.error = f"--record: OpenCV cannot write {self.path}"
                    continue
            if (bgr.shape[1], bgr.shape[0]) != self._size:
                bgr = cv2.resize(bgr, self._size)
            self._writer.write(draw_overlay(bgr, self.latest, self.status))
            self.written += 1

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        if self._writer is not None:
            self._writer.release()
