"""A bad-input corpus generated at test time from real media, and signals during `merstream file`.

Each input gives either a correct timeline or a one-line error with a non-zero exit, never a
traceback, and never a partial timeline under a name that looks complete.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TALK6, ffmpeg

CORPUS = {
    # name: (ffmpeg args producing it from TALK6 (None: custom), expected windows, expected modalities)
    "audio_only.m4a": (["-vn", "-c:a", "copy"], 12, "A"),
    "video_only.mp4": (["-an", "-c:v", "copy"], 12, "V"),
    "vfr.mp4": (["-vf", "select='not(eq(mod(n\\,4)\\,1))'", "-fps_mode", "vfr", "-c:a", "aac"], 12, "VA"),
    "stereo48k.wav": (["-vn", "-ac", "2", "-ar", "48000"], 12, "A"),
    "mono8k.flac": (["-vn", "-ac", "1", "-ar", "8000"], 12, "A"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    for name, (args, _, _) in CORPUS.items():
        ffmpeg("-i", str(TALK6), *args, str(d / name))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=7680x4320:rate=2", "-t", "2", "-c:v", "libx264", "-preset", "ultrafast",
           str(d / "frames_8k.mp4"))
    ffmpeg("-i", str(TALK6), "-t", "0", str(d / "zero_frames.mp4"))
    (d / "corrupt.mp4").write_bytes(TALK6.read_bytes()[:4096] + os.urandom(50_000))
    (d / "truncated.mp4").write_bytes(TALK6.read_bytes()[:300_000])
    odd = os.fsencode(str(d)) + b"/caf\xe9_\xff.mp4"  # not valid UTF-8
    with open(odd, "wb") as f:
        f.write(TALK6.read_bytes())
    return d


def run(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "merstream", *args], capture_output=True, timeout=timeout)


def lines(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines()]


@pytest.mark.parametrize("name", [*CORPUS, "frames_8k.mp4"])
def test_odd_but_valid_media_gives_a_correct_timeline(corpus, tiny_ckpt, tmp_path, name):
    windows_expected, mods = CORPUS.get(name, (None, 1, "V"))[1:]
    p = run("file", str(corpus / name), "--model", str(tiny_ckpt), "--no-asr", "--no-plot", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr.decode()
    rows = lines(tmp_path / (Path(name).stem + ".jsonl"))
    windows = rows[1:-1]
    assert rows[-1]["end"]["complete"] is True
    assert len(windows) == windows_expected
    assert all(w["modalities"] == mods for w in windows)
    if "V" in mods:
        assert all(w["frames"] >= 11 for w in windows[:-1])


@pytest.mark.parametrize(
    "name,needle",
    [("zero_frames.mp4", "neither a video nor an audio stream"), ("corrupt.mp4", "truncated or corrupt"),
     ("truncated.mp4", "truncated")],
)
def test_broken_media_gives_one_line_error(corpus, tiny_ckpt, tmp_path, name, needle):
    p = run("file", str(corpus / name), "--model", str(tiny_ckpt), "--no-asr", "--no-plot", "--out", str(tmp_path))
    err = p.stderr.decode()
    assert p.returncode == 1 and "Traceback" not in err
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], err
    assert not (tmp_path / (Path(name).stem + ".jsonl")).exists()  # nothing that looks complete


def test_non_utf8_path(corpus, tiny_ckpt, tmp_path, monkeypatch):
    """A file name that is not valid UTF-8: timeline, and a report whose page shows the name with
    U+FFFD and links the media by its bytes (it failed with "unexpected UnicodeEncodeError" before)."""
    odd = os.fsencode(str(corpus)) + b"/caf\xe9_\xff.mp4"
    p = subprocess.run([os.fsencode(sys.executable), b"-m", b"merstream", b"file", odd, b"--model", os.fsencode(str(tiny_ckpt)),
                        b"--no-asr", b"--no-plot", b"--report", b"--out", os.fsencode(str(tmp_path))], capture_output=True, timeout=600)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    out = os.fsencode(str(tmp_path)) + b"/caf\xe9_\xff.jsonl"
    rows = [json.loads(x) for x in open(out, "rb").read().decode().splitlines()]
    assert rows[-1]["end"]["complete"] is True and rows[-1]["end"]["windows"] == 12
    page = open(os.fsencode(str(tmp_path)) + b"/caf\xe9_\xff.html", "rb").read().decode("utf-8")  # valid UTF-8
    assert "caf\ufffd_\ufffd" in page and 'src="data:video/mp4;base64,' in page
    from merstream import report

    monkeypatch.setattr(report, "EMBED_LIMIT", 0)  # linked, not embedded
    linked, _ = report.write_report(os.fsdecode(out), out=tmp_path / "pages" / "linked.html")
    text = linked.read_text(encoding="utf-8")
    src = text.split('id="player"')[1].split('src="')[1].split('"')[0]
    assert src.endswith("/caf%E9_%FF.mp4"), src
    from urllib.parse import unquote_to_bytes
    assert os.path.exists(os.path.join(os.fsencode(str(linked.parent)), unquote_to_bytes(src)))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_file_keeps_every_window(tiny_ckpt, media_dir, tmp_path, sig):
    long = media_dir / "long.mp4"
    if not long.exists():
        ffmpeg("-stream_loop", "6", "-i", str(TALK6), "-c", "copy", str(long))  # ~89 s
    proc = subprocess.Popen([sys.executable, "-m", "merstream", "file", str(long), "--model", str(tiny_ckpt), "--no-asr",
                             "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    live = tmp_path / "long.partial.jsonl"  # written under this name until the run ends normally
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not live.exists() or live.read_text().count("\n") < 4):
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err.decode()
    assert b"Traceback" not in err
    rows = lines(tmp_path / "long.partial.jsonl")
    windows = rows[1:-1]
    assert rows[-1]["end"]["complete"] is False and rows[-1]["end"]["windows"] == len(windows) >= 3
    assert [w["index"] for w in windows] == list(range(len(windows)))
    csv_rows = (tmp_path / "long.partial.csv").read_text().splitlines()
    assert len(csv_rows) == len(windows) + 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_the_transcript_is_still_being_made(tiny_ckpt, media_dir, tmp_path, sig):
    """faster-whisper runs in a background thread; signals then must still exit cleanly (the
    thread is stopped before the process exits, not killed inside CTranslate2), even two in a row."""
    long = media_dir / "long.mp4"
    if not long.exists():
        ffmpeg("-stream_loop", "6", "-i", str(TALK6), "-c", "copy", str(long))  # ~89 s: ~5 s of ASR
    proc = subprocess.Popen([sys.executable, "-m", "merstream", "file", str(long), "--model", str(tiny_ckpt),
                             "--out", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    live = tmp_path / "long.partial.jsonl"  # written under this name until the run ends normally
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not live.exists():  # created once the transcription has started
        time.sleep(0.05)
    assert live.exists() and live.read_text().count("\n") == 1  # the meta line: no window scored yet
    proc.send_signal(sig)
    time.sleep(0.2)
    proc.send_signal(sig)  # an impatient second one, during the clean-up
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err.decode()
    assert b"Traceback" not in err and b"terminate called" not in err
    rows = lines(tmp_path / "long.partial.jsonl")
    assert rows[-1]["end"]["complete"] is False and rows[-1]["end"]["windows"] == len(rows) - 2


def test_audio_starting_late_is_aligned_to_the_video_clock(media_dir):
    from merstream.media import read_audio

    late = media_dir / "audio_late.mp4"
    ffmpeg("-i", str(TALK6), "-itsoffset", "1.0", "-i", str(TALK6), "-map", "0:v", "-map", "1:a", "-c", "copy", str(late))
    a, b = read_audio(late), read_audio(TALK6)
    assert abs(a[:15000]).max() == 0.0  # the first second is silence
    lag = int(np.correlate(a[:60000], b[:44000], "valid").argmax())
    assert abs(lag - 16000) <= 40  # within 2.5 ms of the 1 s offset (AAC priming)


def test_cover_art_is_not_video(media_dir, tmp_path):
    from merstream.media import probe

    png = tmp_path / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x64", "-frames:v", "1", str(png))
    song = media_dir / "with_cover.m4a"
    ffmpeg("-i", str(TALK6), "-i", str(png), "-map", "0:a", "-map", "1", "-c:a", "copy", "-c:v", "png",
           "-disposition:v", "attached_pic", str(song))
    info = probe(song)
    assert info.has_audio and not info.has_video


def test_bad_options_and_labels_are_one_line_errors(tiny_ckpt, tmp_path):
    cases = [
        (["file", str(TALK6), "--window", "abc"], 2, "Invalid value for '--window'"),
        (["file", str(TALK6), "--workers", "0"], 2, "--workers"),
        (["nosuchcommand"], 2, "No such command"),
        (["file", str(TALK6), "--model", str(tiny_ckpt), "--labels", "happy,sad"], 1, "at least 3"),
        (["file", str(TALK6), "--model", str(tiny_ckpt), "--labels", "happy,sad,happy"], 1, "duplicate labels"),
        (["file", str(TALK6), "--model", str(tiny_ckpt), "--no-asr", "--out", str(TALK6)], 1, "cannot write the timeline"),
    ]
    for args, code, needle in cases:
        p = run(*args)
        err = p.stderr.decode()
        assert p.returncode == code and "Traceback" not in err, err
        errors = [x for x in err.splitlines() if x.startswith("error:")]
        assert len(errors) == 1 and needle in errors[0], err


def test_a_run_shorter_than_the_sentence_encoders_load_exits_cleanly(tmp_path):
    """The embedded model loads its sentence encoder in a background thread while media is read. A
    0.1 s clip with ASR on is scored before that load ends; the process must wait for it, not abort
    inside onnxruntime ("terminate called without an active exception", exit 134, every time before
    2026-12-03). The same holds when the run stops at once on an --out it cannot write."""
    from merstream.config import ModelConfig
    from merstream.model.text_frontends import text_front_end
    from merstream.models import DEFAULT_MODEL_DIR

    text_front_end(ModelConfig.load(DEFAULT_MODEL_DIR / "config.json")).load()  # the graph cached: the runs'
    clip = tmp_path / "tenth.mp4"  # loads then go straight into onnxruntime (where exiting aborted)
    ffmpeg("-i", str(TALK6), "-t", "0.1", str(clip))
    for attempt in (1, 2):
        p = run("file", str(clip), "--no-plot", "--out", str(tmp_path / "tl"))
        err = p.stderr.decode()
        assert p.returncode == 0 and "terminate called" not in err, (attempt, err)
        rows = lines(tmp_path / "tl" / "tenth.jsonl")
        assert rows[-1]["end"] == {"complete": True, "windows": 1} and len(rows) == 3
    p = run("file", str(TALK6), "--no-plot", "--out", str(TALK6 / "x"))
    err = p.stderr.decode()
    assert p.returncode == 1 and "terminate called" not in err, err
    assert [x for x in err.splitlines() if x.startswith("error:")], err
