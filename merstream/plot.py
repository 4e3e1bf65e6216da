"""The timeline plot (scores over time, one line per label) drawn with OpenCV.

OpenCV is loaded anyway (frames, face crops), while importing matplotlib costs ~0.4 s warm and more
from a cold disk: a third of `merstream file` on a 2-second clip. OpenCV's Hershey fonts draw ASCII
only, so a plot with other labels or titles (CJK, emoji, accents) is drawn by matplotlib instead
(:func:`merstream.sinks.plot_timeline` decides). Windows without a score (no modality) are gaps.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# matplotlib's "tab10" colours, as BGR
PALETTE = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
           (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]
WIDTH, HEIGHT = 1000, 400
LEFT, RIGHT, TOP, BOTTOM = 64, 180, 40, 52  # margins around the axes (legend on the right)
SHIFT = 4  # sub-pixel drawing: coordinates in 1/16 px
FONT_SCALE = 0.45


def drawable(*texts: str) -> bool:
    """Whether OpenCV's Hershey fonts can draw these strings (printable ASCII only)."""
    return all(t.isascii() and t.isprintable() for t in texts)


def nice_step(span: float, most: int = 10) -> float:
    """A tick step of 1, 2 or 5 x 10^k giving at most ``most`` ticks over ``span``."""
    raw = max(span, 1e-9) / most
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= raw)


def draw_timeline(mids: list[float], series: dict[str, list[float | None]], title: str = "") -> np.ndarray:
    """A [HEIGHT, WIDTH, 3] BGR image: each label's scores (0..1) at the window centres ``mids``."""
    import cv2

    img = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    x0, x1 = (min(mids), max(mids)) if mids else (0.0, 1.0)
    pad = max((x1 - x0) * 0.03, 0.5)
    x0, x1 = x0 - pad, x1 + pad
    ax_l, ax_r, ax_t, ax_b = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM

    def px(t: float, s: float) -> tuple[int, int]:
        x = ax_l + (t - x0) / (x1 - x0) * (ax_r - ax_l)
        y = ax_b - s * (ax_b - ax_t)
        return int(round(x * (1 << SHIFT))), int(round(y * (1 << SHIFT)))

    def text(s: str, org: tuple[int, int], align: str = "left", color=(40, 40, 40)) -> None:
        (w, h), _ = cv2.getTextSize(s, cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, 1)
        x = org[0] - (w if align == "right" else w // 2 if align == "centre" else 0)
        cv2.putText(img, s, (x, org[1] + h // 2), cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, color, 1, cv2.LINE_AA)

    grid = (225, 225, 225)
    for s in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        y = int(round(ax_b - s * (ax_b - ax_t)))
        cv2.line(img, (ax_l, y), (ax_r, y), grid, 1)
        text(f"{s:.1f}", (ax_l - 8, y), "right")
    step = nice_step(x1 - x0)
    t = math.ceil(x0 / step) * step
    while t <= x1:
        x = int(round(ax_l + (t - x0) / (x1 - x0) * (ax_r - ax_l)))
        cv2.line(img, (x, ax_t), (x, ax_b), grid, 1)
        text(f"{t:g}", (x, ax_b + 14), "centre")
        t += step
    cv2.rectangle(img, (ax_l, ax_t), (ax_r, ax_b), (90, 90, 90), 1)
    text("time (s, window centre)", ((ax_l + ax_r) // 2, HEIGHT - 14), "centre")
    text("score", (8, ax_t - 16))
    if title:
        text(title, ((ax_l + ax_r) // 2, 16), "centre")

    rows = max(1, (ax_b - ax_t) // 18)
    for i, (label, scores) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        run: list[tuple[int, int]] = []
        for t, s in [*zip(mids, scores), (None, None)]:  # a None score (or the end) closes a line
            if s is None or t is None:
                if len(run) > 1:
                    cv2.polylines(img, [np.array(run, np.int32)], False, color, 2, cv2.LINE_AA, SHIFT)
                run = []
                continue
            p = px(t, min(max(s, 0.0), 1.0))
            run.append(p)
            cv2.circle(img, p, 3 << SHIFT, color, -1, cv2.LINE_AA, SHIFT)
        if i < rows:
            y = ax_t + 9 + 18 * i
            cv2.line(img, (ax_r + 12, y), (ax_r + 34, y), color, 2, cv2.LINE_AA)
            text(label if len(label) <= 18 else label[:17] + "~", (ax_r + 40, y))
        elif i == rows:
            text(f"+{len(series) - rows} more", (ax_r + 40, ax_t + 9 + 18 * i))
    return img


def write_timeline_png(mids: list[float], series: dict[str, list[float | None]], path: Path, title: str = "") -> None:
    import cv2

    if not cv2.imwrite(str(path), draw_timeline(mids, series, title)):
        raise OSError(f"OpenCV could not write {path}")
