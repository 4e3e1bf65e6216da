"""Start-up and short-clip cost of the serving path, as a user meets it: whole commands, timed
by ``/usr/bin/time -v`` (wall and peak RSS), the page cache emptied before each run.

    python benchmarks/bench_startup.py [--runs 5] [--media ../shared/data/talk/talk.mp4]

Prints, each the median of --runs:
- ``merstream file MEDIA --no-asr`` (JSONL, CSV and PNG written) with the embedded model;
- the same with ASR on (faster-whisper tiny.en);
- a cold first run: a fresh, empty HOME (no caches of any kind), once;
- a ~63 s clip (talk_6emotions.mp4 five times) with ASR on, once: wall and real-time factor;
- ``merstream live --camera TALK6 --no-mic --no-asr`` (a file played in real time): seconds from
  the command's start to its first window in the timeline, and that minus the window (2 s of media
  must arrive before the first window can be scored).
Emptying the page cache needs root (``/proc/sys/vm/drop_caches``); otherwise the runs are warm and
the script says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MERSTREAM = str(Path(sys.executable).with_name("merstream"))


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one command under /usr/bin/time -v; a failed run stops the benchmark."""
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed: {p.stderr.strip().splitlines()[-1:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", p.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    h, m, s = (float(g) if g else 0.0 for g in wall.groups())
    return h * 3600 + m * 60 + s, int(rss.group(1)) / 1024


def median_run(cmd: list[str], runs: int, cold: bool) -> tuple[float, float, list[float]]:
    walls, rss = [], []
    for _ in range(runs):
        if cold:
            drop_caches()
        w, r = timed(cmd)
        walls.append(w)
        rss.append(r)
    return statistics.median(walls), statistics.median(rss), walls


def live_first_window(media: Path, out: Path) -> float:
    """Seconds from starting `merstream live` on a file (real time) to its first window on disk."""
    t0 = time.perf_counter()
    p = subprocess.Popen([MERSTREAM, "live", "--camera", str(media), "--no-mic", "--no-asr", "--duration", "4", "--out", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while p.poll() is None and time.perf_counter() - t0 < 60:
            for f in out.glob("*.jsonl"):
                if any("scores" in json.loads(line) for line in f.read_text().splitlines() if line.strip().endswith("}")):
                    return time.perf_counter() - t0
            time.sleep(0.01)
    finally:
        p.terminate()
        p.wait(timeout=30)
    sys.exit(f"error: live wrote no window in 60 s: {p.stderr.read()[-300:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--media", type=Path, default=DATA / "talk" / "talk.mp4")
    ap.add_argument("--live-media", type=Path, default=DATA / "talk" / "talk_6emotions.mp4")
    args = ap.parse_args()
    cold = drop_caches()
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"page cache {'emptied before each run' if cold else 'NOT emptied (needs root): warm runs'}")
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        tmp = Path(tmp)
        base = [MERSTREAM, "file", str(args.media), "--out", str(tmp / "out")]
        rows = []
        for name, cmd in ((f"file {args.media.name} --no-asr", [*base, "--no-asr"]), (f"file {args.media.name} (ASR on)", base)):
            wall, rss, walls = median_run(cmd, args.runs, cold)
            rows.append((name, wall, rss, walls))
        home = tmp / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("MERSTREAM_CACHE", "XDG_CACHE_HOME")} | {"HOME": str(home)}
        if cold:
            drop_caches()
        wall, rss = timed([*base, "--no-asr"], env=env)
        rows.append((f"first run, fresh HOME, --no-asr", wall, rss, [wall]))
        long = tmp / "talk64.mp4"
        (tmp / "list.txt").write_text(f"file '{args.live_media}'\n" * 5)
        subprocess.run(["ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(tmp / "list.txt"), "-c", "copy", str(long)], check=True)
        if cold:
            drop_caches()
        wall, rss = timed([MERSTREAM, "file", str(long), "--out", str(tmp / "out")])
        media = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(long)],
                                     capture_output=True, text=True, check=True).stdout)
        rows.append((f"file talk64.mp4 ({media:.0f} s, ASR on), RTF {wall / media:.3f}", wall, rss, [wall]))
        for name, wall, rss, walls in rows:
            print(f"{name:42s} wall {wall:5.2f} s  peak RSS {rss:6.0f} MB  (runs: {', '.join(f'{w:.2f}' for w in walls)})")
        if cold:
            drop_caches()
        first = live_first_window(args.live_media, tmp / "live")
        print(f"{'live --camera FILE: first window after':42s} {first:5.2f} s  ({first - 2.0:.2f} s beyond the 2 s window of media)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
