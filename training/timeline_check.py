"""Compare a `merstream file` timeline (JSONL) with known emotion segments.

    python -m training.timeline_check out/talk_6emotions.jsonl \
        --segments 0:2.04:neutral,2.04:3.91:happy,3.91:5.91:sad,5.91:8.15:angry,8.15:10.32:fear,10.32:12.68:disgust

For each segment the scores of the windows whose midpoint falls inside it are averaged and the
top label is compared with the intended one.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from merstream.errors import MerstreamError

TALK_6EMOTIONS = [(0.0, 2.04, "neutral"), (2.04, 3.91, "happy"), (3.91, 5.91, "sad"), (5.91, 8.15, "angry"),
                  (8.15, 10.32, "fear"), (10.32, 12.68, "disgust")]


@dataclass
class SegmentResult:
    start: float
    end: float
    intended: str
    predicted: str | None
    windows: int
    scores: dict[str, float]

    @property
    def correct(self) -> bool:
        return self.predicted == self.intended


def read_windows(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise MerstreamError(f"timeline not found (a JSONL file from merstream file): {p}")
    rows = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise MerstreamError(f"cannot read timeline {p}: {e}") from None
    for n, line in enumerate(lines, 1):
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise MerstreamError(f"{p} line {n} is not JSON ({e.msg}): is it a timeline from merstream file?") from None
        if not (isinstance(d, dict) and "start" in d and "scores" in d):
            continue  # the meta and end lines
        if not (isinstance(d["start"], (int, float)) and isinstance(d.get("end"), (int, float)) and isinstance(d["scores"], dict)):
            raise MerstreamError(f"{p} line {n}: a window needs numeric start and end and a scores object")
        rows.append(d)
    if not rows:
        raise MerstreamError(f"{p} holds no scored windows (a JSONL timeline from merstream file is expected)")
    return rows


def check(windows: list[dict], segments=TALK_6EMOTIONS) -> list[SegmentResult]:
    out = []
    for a, b, label in segments:
        inside = [w for w in windows if a <= (w["start"] + w["end"]) / 2 < b]
        if not inside:
            out.append(SegmentResult(a, b, label, None, 0, {}))
            continue
        keys = list(inside[0]["scores"])
        mean = {k: sum(w["scores"][k] for w in inside) / len(inside) for k in keys}
        out.append(SegmentResult(a, b, label, max(mean, key=mean.get), len(inside), mean))
    return out


def parse_segments(spec: str):
    segs = []
    for part in spec.split(","):
        try:
            a, b, label = part.split(":")
            a, b = float(a), float(b)
        except ValueError:
            raise MerstreamError(f"--segments: {part!r} is not start:end:label (seconds, seconds, a label)") from None
        if not (0 <= a < b) or not label.strip():
            raise MerstreamError(f"--segments: {part!r} needs 0 <= start < end and a label")
        segs.append((a, b, label.strip()))
    return segs


def check_labels_known(windows: list[dict], segments) -> None:
    known = set(windows[0]["scores"])
    unknown = sorted({label for _, _, label in segments} - known)
    if unknown:
        raise MerstreamError(f"segment label(s) {', '.join(unknown)} not in the timeline's labels ({', '.join(sorted(known))})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("timeline")
    ap.add_argument("--segments", help="start:end:label,... (default: talk_6emotions.mp4)")
    a = ap.parse_args(argv)
    try:
        segments = parse_segments(a.segments) if a.segments else TALK_6EMOTIONS
        windows = read_windows(a.timeline)
        if Path(a.timeline).name.endswith(".partial.jsonl"):
            print("note: the timeline of an interrupted run: only the windows it holds are checked", file=sys.stderr)
        check_labels_known(windows, segments)
        res = check(windows, segments)
    except MerstreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in res:
        top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.scores.items(), key=lambda kv: -kv[1])[:3])
        print(f"{r.start:5.2f}-{r.end:5.2f} intended {r.intended:8s} predicted {r.predicted or '-':8s} "
              f"{'OK ' if r.correct else 'NO '} ({r.windows} windows: {top})")
    print(f"{sum(r.correct for r in res)}/{len(res)} segments named as intended")
    return 0


if __name__ == "__main__":
    sys.exit(main())
