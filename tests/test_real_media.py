"""Real-world media and runs (issue 16): each case is media made here with ffmpeg from the shared
talk clip, and each test first checks that its media really has the property it is about."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DATA, TALK6, assert_one_line_error, ffmpeg

PY = [sys.executable, "-m", "merstream"]


def run(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*PY, *args], capture_output=True, text=True, timeout=timeout, **kw)


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def ffprobe(path: Path, *args: str) -> dict:
    p = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)], capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def talk64(tmp_path_factory) -> Path:
    """The clip five times over (~63 s, 63 windows)."""
    p = tmp_path_factory.mktemp("talk64") / "talk64.mp4"
    ffmpeg("-stream_loop", "4", "-i", str(TALK6), "-c", "copy", str(p))
    return p


# ---- 7: a timeline under its final name is always whole ----------------------------------------

def test_full_disk_leaves_only_partial_files_cut_to_whole_lines(talk64, tiny_ckpt, tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to mount a private tmpfs")
    full, keep = tmp_path / "full", tmp_path / "kept"
    full.mkdir()
    script = (
        f'mount -t tmpfs -o size=8k tmpfs {full} && df -B1 --output=size {full} | tail -1 > {tmp_path}/size && '
        f'{" ".join(PY)} file {talk64} --model {tiny_ckpt} --no-asr --out {full}/y; rc=$?; '
        f'cp -r {full}/y {keep}; exit $rc'
    )
    p = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=600)
    assert int((tmp_path / "size").read_text()) <= 8192  # the disk really is smaller than the timeline
    assert_one_line_error(p, "No space left on device", f"{full}/y/talk64.partial.")
    assert sorted(f.name for f in keep.iterdir()) == ["talk64.partial.csv", "talk64.partial.jsonl"]
    text = (keep / "talk64.partial.jsonl").read_text()
    assert text.endswith("\n")
    lines = [json.loads(x) for x in text.splitlines()]  # every line whole
    windows = [x for x in lines if "index" in x]
    assert 3 <= len(windows) < 63 and [w["index"] for w in windows] == list(range(len(windows)))
    if "index" not in lines[-1]:  # the status line, when the cut freed room for it
        assert lines[-1]["end"]["complete"] is False
    csv_text = (keep / "talk64.partial.csv").read_text()
    assert csv_text.endswith("\n") and all(len(r) == 12 for r in csv.reader(csv_text.splitlines()))


def test_sigkill_leaves_only_partial_files(talk64, tiny_ckpt, tmp_path):
    proc = subprocess.Popen([*PY, "file", str(talk64), "--model", str(tiny_ckpt), "--no-asr", "--out", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "talk64.partial.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not partial.exists() or partial.read_text().count("\n") < 4):
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=30)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["talk64.partial.csv", "talk64.partial.jsonl"]
    assert len([x for x in rows(partial) if "index" in x]) >= 3


def test_a_run_that_ends_normally_has_only_final_names(tiny_talk6_file_no_asr):
    # `file TALK6 --model TINY --no-asr --out DIR` (conftest: run once for the session into a folder of its own)
    p, out = tiny_talk6_file_no_asr
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in out.iterdir()) == ["talk_6emotions.csv", "talk_6emotions.jsonl", "talk_6emotions.png"]
    end = rows(out / "talk_6emotions.jsonl")[-1]["end"]
    assert end["complete"] is True and end["windows"] == 12 and "error" not in end


# ---- 5: bounded windows, signals honoured -------------------------------------------------------

@pytest.mark.parametrize("cmd,opt,value", [
    (["file", str(TALK6), "--no-asr"], "--window", "1e9"),
    (["file", str(TALK6), "--no-asr"], "--hop", "0.01"),
    (["live", "--camera", str(TALK6), "--no-mic", "--duration", "3"], "--window", "1e9"),
    (["live", "--camera", str(TALK6), "--no-mic"], "--hop", "nan"),
])
def test_window_and_hop_outside_a_sane_range_are_refused_at_once(tmp_path, cmd, opt, value):
    t0 = time.monotonic()
    p = run(*cmd, opt, value, "--out", str(tmp_path), timeout=60)
    assert time.monotonic() - t0 < 10
    assert_one_line_error(p, f"{opt} must be between 0.1 and 30 seconds")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra", [[], ["--window", "30", "--hop", "0.1"]])
def test_live_exits_within_5_s_of_sigterm(talk64, tiny_ckpt, tmp_path, extra):
    proc = subprocess.Popen([*PY, "live", "--camera", str(talk64), "--no-mic", "--model", str(tiny_ckpt), *extra,
                             "--out", str(tmp_path), "--no-plot"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if line.startswith("live:"):  # the sources run, the transcriber too
                break
        time.sleep(4)
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 5, err
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    files = sorted(f.name for f in tmp_path.iterdir())
    assert len(files) == 2 and not any(".partial" in f for f in files)
    end = rows(tmp_path / files[1])[-1]["end"]
    assert end["complete"] is True


# ---- 6: a frame on screen belongs to the window; no input, no label ---------------------------

def test_a_held_frame_belongs_to_the_windows_it_is_on_screen_in(tiny_ckpt, tmp_path):
    low = tmp_path / "lowfps.mp4"
    ffmpeg("-i", str(TALK6), "-r", "0.4", "-c:v", "libx264", "-c:a", "copy", str(low))
    v = ffprobe(low, "-count_frames", "-select_streams", "v", "-show_entries", "stream=nb_read_frames,duration")["streams"][0]
    assert int(v["nb_read_frames"]) == 7 and float(v["duration"]) == pytest.approx(17.5)  # the last frame held 2.5 s
    p = run("file", str(low), "--model", str(tiny_ckpt), "--no-asr", "--no-plot", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    windows = [x for x in rows(tmp_path / "lowfps.jsonl") if "index" in x]
    assert len(windows) == 17 and windows[-1]["start"] == 16.0 and windows[-1]["end"] == pytest.approx(17.5)
    assert all("V" in w["modalities"] and w["frames"] == 12 for w in windows)
    assert windows[-1]["modalities"] == "V" and windows[-1]["segments"] == 0  # the audio ended at 12.7 s
    assert rows(tmp_path / "lowfps.jsonl")[-1]["end"]["stopped"] == {"audio": pytest.approx(12.8, abs=0.2)}
    assert "note: the audio track stops at 12.9 s: the windows after it score without it" in p.stderr


def test_windows_with_no_input_have_no_scores_and_no_label(tiny_ckpt, tmp_path):
    late = tmp_path / "late.m4a"
    ffmpeg("-itsoffset", "5", "-i", str(TALK6), "-vn", str(late))
    a = ffprobe(late, "-show_entries", "stream=start_time")["streams"][0]
    assert float(a["start_time"]) > 4.9  # the audio really starts ~5 s after the container's zero
    p = run("file", str(late), "--model", str(tiny_ckpt), "--no-asr", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    windows = [x for x in rows(tmp_path / "late.jsonl") if "index" in x]
    assert windows[-1]["end"] == pytest.approx(17.69, abs=0.05)
    empty = [w for w in windows if w["end"] <= 5.0]
    assert len(empty) == 4
    for w in empty:
        assert w["top"] is None and w["labels"] == [] and w["modalities"] == "" and w["segments"] == 0
        assert set(w["scores"].values()) == {None}
    assert all(w["modalities"] == "A" and None not in w["scores"].values() for w in windows[5:])
    table = list(csv.reader((tmp_path / "late.csv").read_text().splitlines()))
    assert all(cell == "" for row in table[1:5] for cell in row[2:])  # empty cells, not numbers
    assert all(cell != "" for cell in table[6][2:10])
    assert (tmp_path / "late.png").stat().st_size > 10_000
    assert "late.m4a: 17 windows" in p.stdout
    r = run("report", str(tmp_path / "late.jsonl"))  # the report draws such windows as gaps
    assert r.returncode == 0, r.stderr
    assert "no modality" in (tmp_path / "late.html").read_text()


# ---- 2: media time starts at the container's zero for every stream -----------------------------

@pytest.mark.parametrize("offset", ["1", "2.5"])
def test_a_video_stream_that_starts_late(tiny_ckpt, tmp_path, offset):
    late = tmp_path / "late.mp4"
    ffmpeg("-itsoffset", offset, "-i", str(TALK6), "-i", str(TALK6), "-map", "0:v", "-map", "1:a", "-c", "copy", str(late))
    starts = {s["codec_type"]: float(s["start_time"]) for s in ffprobe(late, "-show_entries", "stream=codec_type,start_time")["streams"]}
    assert starts == {"video": float(offset), "audio": 0.0}
    p = run("file", str(late), "--model", str(tiny_ckpt), "--no-asr", "--no-plot", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "truncated" not in p.stderr
    lines = rows(tmp_path / "late.jsonl")
    assert lines[-1]["end"]["complete"] is True
    windows = lines[1:-1]
    assert windows[-1]["end"] == pytest.approx(12.67 + float(offset), abs=0.05)
    assert windows[0]["segments"] == 1 and "A" in windows[0]["modalities"]  # the leading audio is scored
    if offset == "2.5":
        assert windows[0]["modalities"] == "A" and windows[0]["frames"] == 0  # before the first frame: no vision
    assert 0 < windows[0]["frames"] < 12 or offset == "2.5"
    assert all(w["frames"] == 12 for w in windows[3:])


# ---- 4: the default audio track, --audio-track N ------------------------------------------------

@pytest.fixture(scope="module")
def two_tracks(tmp_path_factory) -> Path:
    """A sine as audio track 0 and the speech as track 1, marked default: the clip's first 4 s (its
    first sentence, "Don't forget a jacket", and 3 windows; which track is used needs no more)."""
    p = tmp_path_factory.mktemp("two") / "two.mp4"
    ffmpeg("-i", str(TALK6), "-f", "lavfi", "-i", "sine=f=440:d=4", "-map", "0:v", "-map", "1:a", "-map", "0:a",
           "-t", "4", "-c:v", "copy", "-c:a", "aac", "-disposition:a:0", "0", "-disposition:a:1", "default", str(p))
    audio = [s for s in ffprobe(p, "-show_streams")["streams"] if s["codec_type"] == "audio"]
    assert [s["disposition"]["default"] for s in audio] == [0, 1]
    return p


@pytest.mark.parametrize("track", [None, 0, 1])
def test_the_default_audio_track_is_used_and_audio_track_picks_one(two_tracks, tiny_ckpt, tmp_path, track):
    extra = [] if track is None else ["--audio-track", str(track)]
    p = run("file", str(two_tracks), "--model", str(tiny_ckpt), "--no-plot", "--out", str(tmp_path), *extra)
    assert p.returncode == 0, p.stderr
    used = 1 if track is None else track
    why = "marked default" if track is None else "asked for"
    assert f"note: audio: track {used} ({why}) of 2 audio tracks 0-1" in p.stderr
    lines = rows(tmp_path / "two.jsonl")
    assert lines[0]["meta"]["audio_track"] == used
    words = " ".join(w["text"] for w in lines[1:-1]).lower()
    if used == 1:
        assert "jacket" in words  # the speech is transcribed
    else:
        assert words.strip() == ""  # the sine has no words
    r = run("report", str(tmp_path / "two.jsonl"))  # the page says when the player's track is not the scored one
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "two.html").read_text()
    assert ("scored from audio track 0" in page) == (used == 0)


def test_audio_track_in_live_and_out_of_range(two_tracks, tiny_ckpt, tmp_path):
    p = run("live", "--camera", str(two_tracks), "--no-mic", "--fast", "--no-asr", "--model", str(tiny_ckpt),
            "--no-plot", "--out", str(tmp_path), "--audio-track", "0")
    assert p.returncode == 0, p.stderr
    assert "note: audio: track 0 (asked for) of 2 audio tracks 0-1" in p.stderr
    (jsonl,) = tmp_path.glob("live-*.jsonl")
    lines = rows(jsonl)
    assert lines[0]["meta"]["audio_track"] == 0 and all(w["modalities"] == "VA" for w in lines[1:-1])
    p = run("live", "--camera", str(two_tracks), "--no-mic", "--fast", "--no-asr", "--model", str(tiny_ckpt),
            "--out", str(tmp_path), "--audio-track", "2")
    assert_one_line_error(p, "--audio-track 2:", "has 2 audio tracks (0-1)")
    p = run("file", str(TALK6), "--audio-track", "1", "--out", str(tmp_path))
    assert_one_line_error(p, "--audio-track 1:", "has 1 audio track (0-0)")


# ---- 1: rotation metadata (every phone video) ----------------------------------------------------

@pytest.fixture(scope="module")
def portrait(tmp_path_factory) -> tuple[Path, Path]:
    """Sideways pixels with a display matrix that turns them upright (a phone video), and the same
    pixels as a player shows them (ffmpeg's own rotation, lossless)."""
    d = tmp_path_factory.mktemp("portrait")
    ffmpeg("-i", str(TALK6), "-vf", "transpose=2", "-c:a", "copy", str(d / "side.mp4"))
    ffmpeg("-i", str(d / "side.mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=270", str(d / "portrait.mp4"))
    ffmpeg("-i", str(d / "portrait.mp4"), "-c:v", "libx264", "-qp", "0", "-preset", "ultrafast", "-c:a", "copy",
           str(d / "upright.mp4"))
    v = ffprobe(d / "portrait.mp4", "-select_streams", "v", "-show_streams")["streams"][0]
    assert (v["width"], v["height"]) == (360, 480)
    assert abs(next(x["rotation"] for x in v["side_data_list"] if x["side_data_type"] == "Display Matrix")) == 90
    u = ffprobe(d / "upright.mp4", "-select_streams", "v", "-show_streams")["streams"][0]
    assert (u["width"], u["height"]) == (480, 360) and not u.get("side_data_list")
    return d / "portrait.mp4", d / "upright.mp4"


@pytest.fixture(scope="module")
def portrait_file_run(portrait, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """`merstream file portrait.mp4 --no-asr --no-plot --record R` with the default model, run once:
    (the process, its --out folder, R). Its timeline and its annotated video are checked by two tests."""
    out = tmp_path_factory.mktemp("portrait_run")
    rec = out / "file.annotated.mp4"
    p = run("file", str(portrait[0]), "--no-asr", "--no-plot", "--record", str(rec), "--out", str(out))
    assert p.returncode == 0, p.stderr
    return p, out, rec


def test_rotated_video_is_decoded_upright(portrait, portrait_file_run, tmp_path):
    import cv2

    from merstream.faces import FaceCropper
    from merstream.media import iter_frames

    faces = FaceCropper()

    def boxes(path):
        return [faces.find(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)) for i, (_, rgb) in enumerate(iter_frames(path)) if i % 10 == 0]

    got, want = boxes(portrait[0]), boxes(portrait[1])
    assert len(got) == len(want) == 38 and sum(b is not None for b in want) >= 36
    near = sum(a is not None and b is not None and max(abs(a.x - b.x), abs(a.y - b.y), abs(a.size - b.size)) <= 2
               for a, b in zip(got, want))
    assert near >= 36
    tops = {}
    # the default model crops the face: sideways frames change its labels. The portrait file's run
    # is the fixture's (with --record, which writes the annotated video after the timeline)
    _, portrait_out, _ = portrait_file_run
    p = run("file", str(portrait[1]), "--no-asr", "--no-plot", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    for path, out in zip(portrait, (portrait_out, tmp_path)):
        tops[path.stem] = [w["top"] for w in rows(out / f"{path.stem}.jsonl")[1:-1]]
    assert len(tops["portrait"]) == 12
    assert sum(a == b for a, b in zip(tops["portrait"], tops["upright"])) >= 11


def test_rotated_video_live_and_record_are_upright(portrait, tmp_path):
    import cv2

    rec = tmp_path / "rec.mp4"
    p = run("live", "--camera", str(portrait[0]), "--no-mic", "--no-asr", "--fast", "--no-plot", "--duration", "4",
            "--record", str(rec), "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    v = ffprobe(rec, "-select_streams", "v", "-show_streams")["streams"][0]
    assert (v["width"], v["height"]) == (480, 360) and not v.get("side_data_list")
    cap = cv2.VideoCapture(str(rec))
    ok, bgr = cap.read()
    cap.release()
    from merstream.faces import FaceCropper

    assert ok and FaceCropper().find(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)) is not None  # a face, so upright


# ---- 3: live keeps a file's audio; a track that stops is noted -----------------------------------

def test_live_keeps_the_audio_of_a_file_whose_video_starts_after_zero(tiny_ckpt, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"file '{TALK6}'\n" * 5)
    long = tmp_path / "long.mp4"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(long))
    starts = {s["codec_type"]: float(s["start_time"]) for s in ffprobe(long, "-show_entries", "stream=codec_type,start_time")["streams"]}
    assert 0.01 < starts["video"] < 0.05 and starts["audio"] == 0.0
    p = run("live", "--camera", str(long), "--no-mic", "--no-asr", "--fast", "--duration", "10", "--model", str(tiny_ckpt),
            "--no-plot", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    (jsonl,) = tmp_path.glob("live-*.jsonl")
    windows = rows(jsonl)[1:-1]
    assert len(windows) == 9 and all(w["modalities"] == "VA" and w["segments"] == 1 for w in windows)


def test_live_notes_a_track_that_stops_mid_run(tiny_ckpt, tmp_path):
    low = tmp_path / "lowfps.mp4"
    ffmpeg("-i", str(TALK6), "-r", "0.4", "-c:v", "libx264", "-c:a", "copy", str(low))  # video to 17.5 s, audio to 12.7 s
    p = run("live", "--camera", str(low), "--no-mic", "--no-asr", "--fast", "--model", str(tiny_ckpt), "--no-plot",
            "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "note: the audio stopped at 12.9 s: the windows after it score without it" in p.stderr, p.stderr
    (jsonl,) = tmp_path.glob("live-*.jsonl")
    lines = rows(jsonl)
    assert lines[-1]["end"]["stopped"] == {"audio": pytest.approx(12.8, abs=0.2)}
    assert lines[-2]["modalities"] == "V" and lines[-2]["frames"] == 12


# ---- minor cases ----------------------------------------------------------------------------------

def test_a_pipe_is_refused_in_one_line(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    assert fifo.is_fifo()
    p = run("file", str(fifo), "--no-asr", "--out", str(tmp_path), timeout=60)
    assert_one_line_error(p, "is not a regular file: pipes and devices are not supported")


@pytest.mark.parametrize("key,value", [("sample_rate", 0), ("segment_seconds", -1)])
def test_bad_audio_config_values_are_config_errors(key, value):
    from merstream.config import AudioConfig
    from merstream.errors import MerstreamError

    with pytest.raises(MerstreamError, match=f"config: audio.{key} must be"):
        AudioConfig(**{key: value})


def test_rotated_video_file_record_is_upright(portrait, portrait_file_run):
    p, _, rec = portrait_file_run  # `file portrait.mp4 --no-asr --no-plot --record REC`
    assert p.returncode == 0, p.stderr
    v = ffprobe(rec, "-select_streams", "v", "-show_streams")["streams"][0]
    assert (v["width"], v["height"]) == (480, 360)  # as a player shows the portrait file
    import numpy as np

    from merstream.media import iter_frames

    got = [img for _, img in iter_frames(rec)][::50]
    upright = [img for _, img in iter_frames(portrait[1])][::50]
    assert len(got) == len(upright) >= 7
    for a, b in zip(got, upright):  # away from the drawn overlays the pixels are the upright file's
        region = (slice(250, 350), slice(340, 470))
        assert np.abs(a[region].astype(int) - b[region].astype(int)).mean() < 8
        assert np.abs(a[region].astype(int) - np.rot90(b, 2)[region].astype(int)).mean() > 8  # and can tell


# ---- non-English speech is not scored as English words ------------------------------------------

def test_german_speech_is_left_out_of_the_transcript_with_a_note(tmp_path):
    clip = DATA / "emodb" / "wav" / "03a01Fa.flac"  # EmoDB: German ("Der Lappen liegt auf dem Eisschrank")
    assert "Eisschrank" in (DATA / "emodb" / "labels.csv").read_text(encoding="utf-8", errors="replace")
    p = run("file", str(clip), "--out", str(tmp_path), "--report")
    assert p.returncode == 0, p.stderr
    assert "left out of the transcript" in p.stderr and "English only" in p.stderr
    end = json.loads((tmp_path / "03a01Fa.jsonl").read_text().splitlines()[-1])["end"]
    assert any("left out of the transcript" in n for n in end["notes"])  # kept in the timeline
    assert "left out of the transcript" in (tmp_path / "03a01Fa.html").read_text()  # and said in the report
    windows = [json.loads(x) for x in (tmp_path / "03a01Fa.jsonl").read_text().splitlines() if '"scores"' in x]
    assert windows and all(w["text"] == "" and "L" not in w["modalities"] for w in windows)
    # English speech keeps its words (the same check does not drop them)
    q = run("file", str(DATA / "talk" / "talk.mp4"), "--out", str(tmp_path / "en"))
    assert q.returncode == 0 and "left out" not in q.stderr
    assert any(json.loads(x).get("text") for x in (tmp_path / "en" / "talk.jsonl").read_text().splitlines() if '"scores"' in x)


def test_language_other_than_english_turns_speech_recognition_off(tmp_path):
    p = run("file", str(DATA / "talk" / "talk.mp4"), "--language", "de", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "--language de: the text tower reads English only" in p.stderr
    windows = [json.loads(x) for x in (tmp_path / "talk.jsonl").read_text().splitlines() if '"scores"' in x]
    assert windows and all("L" not in w["modalities"] for w in windows)


def test_a_url_given_to_file_is_named_as_a_stream_not_mangled_into_a_path():
    p = run("file", "http://127.0.0.1:9/x.mp4")
    assert_one_line_error(p, "http://127.0.0.1:9/x.mp4 is a stream address", "merstream live --camera")


def test_record_from_matroska_with_audio_keeps_the_audio(tmp_path):
    mkv = tmp_path / "talk.mkv"  # the clip's first 4.5 s (packets copied): re-muxing needs no more
    ffmpeg("-i", str(TALK6), "-t", "4.5", "-c", "copy", str(mkv))
    assert ffprobe(mkv, "-show_format")["format"]["format_name"].startswith("matroska")
    src_seconds = float(ffprobe(mkv, "-show_format")["format"]["duration"])
    assert 4.4 < src_seconds < 5.0
    out = tmp_path / "rec.mp4"
    p = run("file", str(mkv), "--no-asr", "--no-plot", "--record", str(out), "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr  # Matroska's audio packets cannot be copied into MP4: re-encoded
    streams = {s["codec_type"]: s for s in ffprobe(out, "-show_streams")["streams"]}
    assert streams["audio"]["codec_name"] == "aac" and abs(float(streams["audio"]["duration"]) - src_seconds) < 0.3


def test_a_timeline_names_its_media_by_absolute_path_so_its_report_finds_it_from_anywhere(tmp_path):
    here, other = tmp_path / "scored_here", tmp_path / "elsewhere"
    here.mkdir()
    other.mkdir()
    shutil.copy(DATA / "talk" / "talk.mp4", here / "in.mp4")
    ffmpeg("-i", str(TALK6), "-c", "copy", str(other / "in.mp4"))  # another file of the same name
    p = run("file", "in.mp4", "--no-asr", "--out", str(tmp_path / "out"), cwd=here)
    assert p.returncode == 0, p.stderr
    meta = json.loads((tmp_path / "out" / "in.jsonl").read_text().splitlines()[0])["meta"]
    assert meta["source"] == str((here / "in.mp4").resolve())
    r = run("report", str(tmp_path / "out" / "in.jsonl"), cwd=other)
    assert r.returncode == 0, r.stderr  # the right file (1.9 s), not elsewhere/in.mp4 (12.7 s: an error)
    assert "media not found" not in (tmp_path / "out" / "in.html").read_text()


@pytest.mark.parametrize("code", ["en-US", "en_GB", "ENG"])
def test_english_regional_language_codes_keep_speech_recognition(code, tmp_path):
    p = run("file", str(DATA / "talk" / "talk.mp4"), "--language", code, "--no-plot", "--out", str(tmp_path))
    assert p.returncode == 0 and "--language" not in p.stderr, p.stderr
    assert "1 transcripts" in p.stderr


@pytest.mark.parametrize("code", ["xx", ""])
def test_an_unknown_language_code_is_one_line_error(code):
    assert_one_line_error(run("file", str(DATA / "talk" / "talk.mp4"), "--language", code), "not a language code")


def test_record_into_the_out_folder_that_the_run_makes(tmp_path):
    out = tmp_path / "not_yet"
    p = run("file", str(DATA / "talk" / "talk.mp4"), "--no-asr", "--no-plot", "--out", str(out), "--record", str(out / "a.mp4"))
    assert p.returncode == 0, p.stderr
    assert (out / "a.mp4").stat().st_size > 10_000 and (out / "talk.jsonl").exists()


def test_a_manifest_file_as_model_points_to_its_export_directory(tmp_path):
    from merstream.models import DEFAULT_EXPORT_DIR

    p = run("file", str(DATA / "talk" / "talk.mp4"), "--model", str(DEFAULT_EXPORT_DIR / "manifest.json"), "--out", str(tmp_path))
    assert_one_line_error(p, "is an export's manifest: pass the export directory")


def test_a_folder_scan_includes_mpeg_ts(tmp_path):
    from merstream.batch import expand_inputs

    ffmpeg("-i", str(DATA / "talk" / "talk.mp4"), "-c", "copy", "-f", "mpegts", str(tmp_path / "clip.ts"))
    assert [p.name for p in expand_inputs([str(tmp_path)])] == ["clip.ts"]


def test_a_hop_longer_than_the_window_is_noted(tmp_path):
    p = run("file", str(TALK6), "--no-asr", "--no-plot", "--window", "0.1", "--hop", "30", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "note: --hop 30 s is longer than --window 0.1 s: only 0.3% of the media is scored" in p.stderr
