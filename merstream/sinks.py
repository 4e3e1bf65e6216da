"""Timeline writers: JSONL and CSV (each window flushed as soon as it is scored), a PNG plot of
scores over time, and a summary of the run."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from functools import lru_cache
from pathlib import Path

from .atomic import replaced_whole
from .engine.windows import WindowResult
from .errors import MerstreamError


class TimelineWriter:
    """Appends each window to ``<stem>.partial.jsonl`` and ``<stem>.partial.csv`` and flushes, so an
    interrupted run keeps every window scored so far; :meth:`close` renames them ``<stem>.jsonl`` /
    ``<stem>.csv`` when the run ended normally. After an error (a full disk included) or SIGKILL only
    the ``.partial`` files exist, cut back to their last whole line: a timeline under its final name is
    always whole."""

    def __init__(self, out_dir: Path, stem: str, labels: list[str], meta: dict | None = None):
        self.labels = list(labels)
        self.final_paths = (out_dir / f"{stem}.jsonl", out_dir / f"{stem}.csv")
        self.jsonl_path = out_dir / f"{stem}.partial.jsonl"  # the final names once close() renames them
        self.csv_path = out_dir / f"{stem}.partial.csv"
        self.png_path = out_dir / f"{stem}.png"
        self.results: list[WindowResult] = []
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            for p in self.final_paths:  # an older run's timeline must not pass for this one's
                if p.is_file() or p.is_symlink():
                    p.unlink()
            self._jsonl = open(self.jsonl_path, "w", encoding="utf-8")
            self._csv_file = open(self.csv_path, "w", encoding="utf-8", newline="")
        except OSError as e:
            raise MerstreamError(f"cannot write the timeline in {out_dir}: {e.strerror or e}") from None
        self._csv = csv.writer(self._csv_file)
        try:
            self._append(self._csv_file, lambda: self._csv.writerow(["start", "end", *self.labels, "predicted", "top", "modalities", "text"]))
            if meta:
                self._append(self._jsonl, lambda: self._jsonl.write(json.dumps({"meta": meta}) + "\n"))
        except MerstreamError:
            for f in (self._jsonl, self._csv_file):
                try:
                    f.close()
                except OSError:
                    pass
                cut_to_last_line(Path(f.name))
            raise

    def _append(self, f, write) -> None:
        """Write and flush one line; a failed write (a full disk) is one error naming the file."""
        try:
            write()
            f.flush()
        except OSError as e:
            raise MerstreamError(f"cannot write the timeline {f.name}: {e.strerror or e}") from None

    def write(self, r: WindowResult) -> None:
        self._append(self._jsonl, lambda: self._jsonl.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n"))
        self._append(self._csv_file, lambda: self._csv.writerow(
            [f"{r.start:.3f}", f"{r.end:.3f}", *("" if r.scores[k] is None else f"{r.scores[k]:.5f}" for k in self.labels),
             "" if r.top is None else json.dumps(r.labels, ensure_ascii=False), r.top or "", r.modalities, r.text]
        ))
        self.results.append(r)

    def close(self, error: str | None = None, info: dict | None = None) -> None:
        """Close the files; the JSONL ends with a status line, so a cut-short timeline never looks
        complete: {"end": {"complete": true, "windows": N}} or {"end": {"complete": false, "error": ...}}.
        Without an error the files get their final names; with one they stay ``.partial``, cut back
        to their last whole line. Raises MerstreamError (naming the file) when the end cannot be written."""
        failed = None
        if not self._jsonl.closed:
            status = {"complete": error is None, "windows": len(self.results), **(info or {})}
            if error is not None:
                status["error"] = error
            try:
                self._append(self._jsonl, lambda: self._jsonl.write(json.dumps({"end": status}) + "\n"))
            except MerstreamError as e:
                failed = e
        for f in (self._jsonl, self._csv_file):
            if not f.closed:
                try:
                    f.close()
                except OSError as e:  # the last buffered bytes did not fit
                    failed = failed or MerstreamError(f"cannot write the timeline {f.name}: {e.strerror or e}")
        if error is None and failed is None:
            for attr, final in zip(("jsonl_path", "csv_path"), self.final_paths):
                getattr(self, attr).replace(final)
                setattr(self, attr, final)
        else:
            for p in (self.jsonl_path, self.csv_path):
                cut_to_last_line(p)
            if failed is not None:  # the cut may have freed room for the status line
                try:
                    with open(self.jsonl_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps({"end": {"complete": False, "windows": len(self.results), "error": str(failed)}}) + "\n")
                except OSError:
                    cut_to_last_line(self.jsonl_path)
        if failed is not None:
            raise failed

    def plot(self, title: str = "") -> Path | None:
        if not self.results:
            return None
        return plot_timeline(self.results, self.labels, self.png_path, title)


def cut_to_last_line(path: Path) -> None:
    """Drop a trailing partial line (a write cut short by a full disk)."""
    try:
        with open(path, "rb+") as f:
            data = f.read()
            keep = data.rfind(b"\n") + 1
            if keep < len(data):
                f.truncate(keep)
    except OSError:
        pass


def plot_timeline(results: list[WindowResult], labels: list[str], path: Path, title: str = "") -> Path:
    """Scores over time as a PNG: drawn with OpenCV (fast) when its fonts can write the labels and
    the title, with matplotlib otherwise."""
    from .plot import drawable, write_timeline_png

    mids = [(r.start + r.end) / 2 for r in results]
    if drawable(title, *labels):
        with replaced_whole(path) as tmp:  # never a half-written PNG under the final name
            write_timeline_png(mids, {lab: [r.scores[lab] for r in results] for lab in labels}, tmp, title)
        return path
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    for i, lab in enumerate(labels):
        ys = [math.nan if r.scores[lab] is None else r.scores[lab] for r in results]  # no input: a gap
        ax.plot(mids, ys, marker="o", markersize=3, label=lab if _has_glyphs(lab) else f"label {i + 1} (see the CSV)")
    title = title if _has_glyphs(title) else ""
    ax.set_xlabel("time (s, window centre)")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    try:
        with replaced_whole(path) as tmp:  # never a half-written PNG under the final name
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return path


def _has_glyphs(text: str) -> bool:
    """Whether matplotlib's default font draws every character of ``text`` (CJK and emoji labels
    would be boxes and a "Glyph missing" warning each; the legend then names them by number)."""
    font = _default_font()
    return all(c.isspace() or font.get_char_index(ord(c)) for c in text)


@lru_cache(maxsize=1)
def _default_font():
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    return FT2Font(font_manager.findfont(font_manager.FontProperties()))


def summary(results: list[WindowResult]) -> list[tuple[str, int, float]]:
    """(label, windows where it was the top label, mean score) sorted by count; windows without
    any input (no scores) are left out."""
    results = [r for r in results if r.top is not None]
    if not results:
        return []
    tops = Counter(r.top for r in results)
    labels = list(results[0].scores)
    means = {lab: sum(r.scores[lab] for r in results) / len(results) for lab in labels}
    return sorted(((lab, tops.get(lab, 0), means[lab]) for lab in labels), key=lambda x: (-x[1], -x[2]))
