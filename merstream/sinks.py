"""Timeline writers: JSONL and CSV (each window flushed as soon as it is scored), a PNG plot of
scores over time, and a summary of the run."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from .atomic import replaced_whole
from .engine.windows import WindowResult
from .errors import MerstreamError


class TimelineWriter:
    """Appends each window to ``<stem>.jsonl`` and ``<stem>.csv`` and flushes, so an interrupted
    run keeps every window scored so far."""

    def __init__(self, out_dir: Path, stem: str, labels: list[str], meta: dict | None = None):
        self.labels = list(labels)
        self.jsonl_path = out_dir / f"{stem}.jsonl"
        self.csv_path = out_dir / f"{stem}.csv"
        self.png_path = out_dir / f"{stem}.png"
        self.results: list[WindowResult] = []
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.jsonl_path, "w", encoding="utf-8")
            self._csv_file = open(self.csv_path, "w", encoding="utf-8", newline="")
        except OSError as e:
            raise MerstreamError(f"cannot write the timeline in {out_dir}: {e.strerror or e}") from None
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(["start", "end", *self.labels, "predicted", "top", "modalities", "text"])
        self._csv_file.flush()
        if meta:
            self._jsonl.write(json.dumps({"meta": meta}) + "\n")
            self._jsonl.flush()

    def write(self, r: WindowResult) -> None:
        self.results.append(r)
        self._jsonl.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
        self._jsonl.flush()
        self._csv.writerow(
            [f"{r.start:.3f}", f"{r.end:.3f}", *(f"{r.scores[k]:.5f}" for k in self.labels),
             ";".join(r.labels), r.top, r.modalities, r.text]
        )
        self._csv_file.flush()

    def close(self, error: str | None = None) -> None:
        """Close the files; the JSONL ends with a status line, so a cut-short timeline never looks
        complete: {"end": {"complete": true, "windows": N}} or {"end": {"complete": false, "error": ...}}."""
        if not self._jsonl.closed:
            status = {"complete": error is None, "windows": len(self.results)}
            if error is not None:
                status["error"] = error
            self._jsonl.write(json.dumps({"end": status}) + "\n")
        for f in (self._jsonl, self._csv_file):
            if not f.closed:
                f.close()
        if error is not None:  # keep what was scored, under a name that says it is partial
            for attr in ("jsonl_path", "csv_path"):
                p = getattr(self, attr)
                if p.exists():
                    q = p.with_name(p.stem + ".partial" + p.suffix)
                    p.replace(q)
                    setattr(self, attr, q)

    def plot(self, title: str = "") -> Path | None:
        if not self.results:
            return None
        return plot_timeline(self.results, self.labels, self.png_path, title)


def plot_timeline(results: list[WindowResult], labels: list[str], path: Path, title: str = "") -> Path:
    """Scores over time as a PNG: drawn with OpenCV (fast) when its fonts can write the labels and
    the title, with matplotlib otherwise."""
    from .plot import drawable, write_timeline_png

    if drawable(title, *labels):
        mids = [(r.start + r.end) / 2 for r in results]
        with replaced_whole(path) as tmp:  # never a half-written PNG under the final name
            write_timeline_png(mids, {lab: [r.scores[lab] for r in results] for lab in labels}, tmp, title)
        return path
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mids = [(r.start + r.end) / 2 for r in results]
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    for lab in labels:
        ax.plot(mids, [r.scores[lab] for r in results], marker="o", markersize=3, label=lab)
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


def summary(results: list[WindowResult]) -> list[tuple[str, int, float]]:
    """(label, windows where it was the top label, mean score) sorted by count."""
    if not results:
        return []
    tops = Counter(r.top for r in results)
    labels = list(results[0].scores)
    means = {lab: sum(r.scores[lab] for r in results) / len(results) for lab in labels}
    return sorted(((lab, tops.get(lab, 0), means[lab]) for lab in labels), key=lambda x: (-x[1], -x[2]))
