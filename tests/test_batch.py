"""Batch mode: a folder / glob of real clips with worker processes, and the Ray mode on one machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import DATA

CREMA = DATA / "crema_d"


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "merstream", "file", *args], capture_output=True, text=True, timeout=600)


def windows(path: Path) -> list[dict]:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert rows[-1]["end"]["complete"]
    return rows[1:-1]


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "merstream", "file", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_folder_with_two_workers_matches_one_worker(tiny_ckpt, tiny_talk6_file_no_asr, tmp_path):
    # tiny_talk6_file_no_asr (conftest; other tests read it) has put the checkpoint's ONNX export in
    # the session's cache, so the two runs below, made at once (as in test_export), do not both export it
    one, two = tmp_path / "one", tmp_path / "two"
    procs = [start(str(CREMA / "*.flv"), "--model", str(tiny_ckpt), "--no-asr", "--no-plot", "--out", str(one), "-j", "1"),
             start(str(CREMA), "--model", str(tiny_ckpt), "--no-asr", "--no-plot", "--out", str(two), "-j", "2")]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    p1, p2 = (subprocess.CompletedProcess(p.args, p.returncode, *o) for p, o in zip(procs, outs))
    assert p1.returncode == 0 and p2.returncode == 0, p1.stderr + p2.stderr
    names = sorted(f.name for f in one.glob("*.jsonl"))
    assert len(names) == 6 and names == sorted(f.name for f in two.glob("*.jsonl"))
    for n in names:
        a, b = windows(one / n), windows(two / n)
        assert [w["scores"] for w in a] == [w["scores"] for w in b]
    assert "6 files, 2 worker(s)" in p2.stdout and "throughput:" in p2.stderr


def test_one_bad_file_does_not_lose_the_others(tiny_ckpt, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("not media")
    p = run(str(CREMA / "1001_DFA_HAP_XX.flv"), str(bad), "--model", str(tiny_ckpt), "--no-asr", "--no-plot",
            "--out", str(tmp_path / "o"))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert [x for x in p.stderr.splitlines() if x.startswith("error:")] == [
        f"error: {bad} is not a readable video or audio file (Invalid data found when processing input)"
    ]
    assert len(windows(tmp_path / "o" / "1001_DFA_HAP_XX.jsonl")) == 1


def test_ray_mode_on_one_machine(tiny_ckpt, tmp_path):
    p = run(str(CREMA / "1001_DFA_ANG_XX.flv"), str(CREMA / "1001_DFA_SAD_XX.flv"), "--ray", "-j", "2",
            "--model", str(tiny_ckpt), "--no-asr", "--no-plot", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "on Ray" in p.stdout
    assert len(windows(tmp_path / "1001_DFA_ANG_XX.jsonl")) == 2
    assert len(windows(tmp_path / "1001_DFA_SAD_XX.jsonl")) == 2


def test_unreachable_ray_cluster_is_one_line_error(tmp_path):
    """An address nothing listens on fails in seconds (ray.init retried it for minutes)."""
    from conftest import assert_one_line_error

    p = run(str(CREMA / "1001_DFA_ANG_XX.flv"), "--ray", "--ray-address", "127.0.0.1:1", "--no-asr", "--out", str(tmp_path))
    assert_one_line_error(p, "no Ray cluster answers at 127.0.0.1:1")
    assert_one_line_error(run(str(CREMA / "1001_DFA_ANG_XX.flv"), "--ray-address", "127.0.0.1:1"), "--ray-address needs --ray")


def test_glob_without_matches_is_one_line_error(tmp_path):
    p = run(str(tmp_path / "*.mp4"))
    assert p.returncode == 1 and p.stderr.strip().splitlines()[-1].startswith("error: no files match")
