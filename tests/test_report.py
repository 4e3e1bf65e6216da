"""The HTML report (`merstream file --report`, `merstream report`) opened in headless Chromium, and
the annotated video of `merstream file --record`: real media, the real embedded model."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import TALK, TALK6, assert_one_line_error, ffmpeg

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "merstream", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def talk6(tmp_path_factory):
    """talk_6emotions.mp4 scored by the embedded model with --report and --record."""
    out = tmp_path_factory.mktemp("talk6")
    p = run("file", str(TALK6), "--out", str(out), "--report", "--record", str(out / "annotated.mp4"))
    assert p.returncode == 0, p.stderr
    assert f"report: {out / 'talk_6emotions.html'}" in p.stderr
    return out


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system packages (never a download); missing is a failure, not a skip."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install -e '.[test]'")
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            pytest.fail(f"{exe} is missing: apt-get install chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="merstream-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
                "--window-size=1200,1000", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def wait_for(driver, script: str, timeout: float = 15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


PLAYER_STATE = """const v = document.getElementById('player');
return {readyState: v.readyState, duration: v.duration, currentTime: v.currentTime, error: v.error && v.error.code,
        paused: v.paused};"""


def test_report_plays_and_seeks_in_chromium(talk6, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    page = talk6 / "talk_6emotions.html"
    browser.get(page.as_uri())
    wait_for(browser, "return document.getElementById('player').readyState >= 1")
    assert console_errors(browser) == []

    wins = browser.find_elements(By.CSS_SELECTOR, "#track .win")
    assert len(wins) == 12 and all(w.is_displayed() and w.size["width"] > 20 for w in wins)
    jacket = [e for e in browser.find_elements(By.CSS_SELECTOR, "#track .win .words") if "jacket" in e.text]
    assert jacket and all(e.is_displayed() for e in jacket)  # .text is the rendered, visible text
    assert "jacket" in browser.find_element(By.TAG_NAME, "body").text
    assert not browser.find_element(By.ID, "media-note").is_displayed()

    browser.execute_script("""window.seekedAt = [];
        const v = document.getElementById('player');
        v.addEventListener('seeked', () => window.seekedAt.push(
            {readyState: v.readyState, currentTime: v.currentTime, duration: v.duration, error: v.error && v.error.code}));""")
    ActionChains(browser).scroll_to_element(wins[4]).move_to_element(wins[4]).click().perform()  # a real pointer click
    seeked = wait_for(browser, "return window.seekedAt.length && window.seekedAt[0]")
    assert seeked["readyState"] >= 1 and seeked["error"] is None
    assert seeked["duration"] == pytest.approx(12.7, abs=0.1)
    assert seeked["currentTime"] == pytest.approx(4.0, abs=0.05)
    assert "now" in wins[4].get_attribute("class").split()

    cursor = browser.find_element(By.ID, "cursor")
    x0 = cursor.location["x"]
    started = browser.execute_async_script(
        "const done = arguments[0]; document.getElementById('player').play().then(() => done(true), e => done(String(e)));")
    assert started is True
    time.sleep(1.0)
    browser.execute_script("document.getElementById('player').pause()")
    state = browser.execute_script(PLAYER_STATE)
    assert state["error"] is None and state["currentTime"] > 4.5
    pps = float(browser.find_element(By.ID, "track").get_attribute("data-pps"))
    moved = cursor.location["x"] - x0
    assert moved == pytest.approx((state["currentTime"] - 4.0) * pps, abs=0.1 * pps)  # the cursor follows the player
    shot = tmp_path / "report.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    assert console_errors(browser) == []


def test_report_is_one_offline_file(talk6):
    text = (talk6 / "talk_6emotions.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # nothing fetched from anywhere
    assert "<script src" not in text and "stylesheet" not in text
    scripts = re.findall(r"<script>(.*?)</script>", text, re.S)
    assert scripts and sum(len(s) for s in scripts) < 1_000_000
    assert 'src="data:video/mp4;base64,' in text  # 1 MB of media: embedded
    for needle in ("angry", "complete", "onnx", "2.0 s / 1.0 s", "share of time", "NON-COMMERCIAL use only (ravdess)", "weights"):
        assert needle in text, needle


def test_large_media_is_linked_and_plays(talk6, browser, tmp_path, monkeypatch):
    from merstream import report

    monkeypatch.setattr(report, "EMBED_LIMIT", 1000)  # a 1 MB video counts as large
    page, _ = report.write_report(talk6 / "talk_6emotions.jsonl", TALK6, tmp_path / "sub" / "linked.html")
    text = page.read_text()
    assert "data:video" not in text and 'src="../../' in text
    browser.get(page.as_uri())
    state = wait_for(browser, PLAYER_STATE.replace("return {", "return v.readyState >= 1 && {"))
    assert state["duration"] == pytest.approx(12.7, abs=0.1) and state["error"] is None
    assert console_errors(browser) == []


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def write_lines(path: Path, rows: list[dict], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path


def test_partial_unfinished_and_gap_windows(talk6, tmp_path, browser):
    from selenium.webdriver.common.by import By

    rows = lines(talk6 / "talk_6emotions.jsonl")
    partial = write_lines(tmp_path / "talk_6emotions.partial.jsonl",
                          rows[:6] + [{"end": {"complete": False, "windows": 5, "error": "interrupted (SIGINT)"}}])
    p = run("report", str(partial), "--media", str(TALK6))
    assert p.returncode == 0, p.stderr
    text = partial.with_suffix(".html").read_text()
    assert 'class="badge partial"' in text and "interrupted (SIGINT)" in text and "first 6.0 s of 12.7 s" in text

    # a window line lost (deleted by hand): the end line's count says so
    damaged = write_lines(tmp_path / "damaged.jsonl", rows[:4] + rows[5:])
    p = run("report", str(damaged), "--media", str(TALK6))
    assert p.returncode == 0, p.stderr
    assert "damaged: the end line counts 12 windows, the file holds 11" in p.stderr
    assert 'class="badge damaged"' in damaged.with_suffix(".html").read_text()

    # a live run still writing: no end line, the last line half-written; one window had no modality
    gap = dict(rows[3], scores=None, top=None, labels=[], modalities="", text="")
    live = write_lines(tmp_path / "live.jsonl", rows[:3] + [gap] + rows[4:7], tail='{"index": 7, "sta')
    p = run("report", str(live))  # the source in the meta line is found as written
    assert p.returncode == 0, p.stderr
    page = live.with_suffix(".html")
    text = page.read_text()
    assert 'class="badge unfinished"' in text and "half-written" in text
    browser.get(page.as_uri())
    assert len(browser.find_elements(By.CSS_SELECTOR, "#track .win")) == 6
    gaps = browser.find_elements(By.CSS_SELECTOR, "#track .win.gap")
    assert len(gaps) == 1 and "no modality" in gaps[0].text
    assert console_errors(browser) == []


def test_missing_media_is_said_on_the_page(talk6, tmp_path, browser):
    from selenium.webdriver.common.by import By

    rows = lines(talk6 / "talk_6emotions.jsonl")
    rows[0]["meta"]["source"] = "/nowhere/talk_6emotions.mp4"
    tl = write_lines(tmp_path / "moved.jsonl", rows)
    p = run("report", str(tl))
    assert p.returncode == 0, p.stderr
    assert "media not found: /nowhere/talk_6emotions.mp4" in p.stderr
    browser.get(tl.with_suffix(".html").as_uri())
    assert browser.find_elements(By.ID, "player") == []
    assert browser.find_element(By.ID, "media-note").text == "media not found: /nowhere/talk_6emotions.mp4"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#track .win")) == 12
    assert console_errors(browser) == []


def test_bad_inputs_are_one_line_errors(talk6, tmp_path):
    not_jsonl = tmp_path / "notes.jsonl"
    not_jsonl.write_text("start,end,happy\n0,2,0.5\n")
    assert_one_line_error(run("report", str(not_jsonl)), "is not a timeline", "line 1 is not JSON")
    binary = tmp_path / "image.jsonl"
    shutil.copy(talk6 / "talk_6emotions.png", binary)
    assert_one_line_error(run("report", str(binary)), "is not a timeline")
    assert_one_line_error(run("report", str(tmp_path / "none.jsonl")), "no such timeline")
    tl = talk6 / "talk_6emotions.jsonl"
    assert_one_line_error(run("report", str(tl), "--media", str(tmp_path / "gone.mp4")), "media not found", "gone.mp4")
    other = av.open(str(TALK)).duration / 1e6
    assert abs(other - 12.68) > 1
    assert_one_line_error(run("report", str(tl), "--media", str(TALK)), "talk.mp4", "not the file this timeline was scored from")
    assert_one_line_error(run("report", str(tl), "-o", str(tmp_path / "r.txt")), "must end in .html")
    assert_one_line_error(run("file", str(TALK6), "--record", str(tmp_path / "a.gif")), "--record", "must end in")
    assert_one_line_error(run("file", str(TALK6), "--record", str(tmp_path / "no" / "a.mp4")), "--record", "does not exist")
    sound = tmp_path / "sound.m4a"
    ffmpeg("-i", str(TALK), "-vn", "-c:a", "copy", str(sound))
    p = run("file", str(sound), "--out", str(tmp_path), "--record", str(tmp_path / "a.mp4"))
    assert_one_line_error(p, "--record needs a video track")
    assert not (tmp_path / "sound.jsonl").exists()  # said before any scoring


# ---- --record -------------------------------------------------------------------------------
def video_frames(path: Path) -> tuple[list[float], list[np.ndarray]]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        times, frames = [], []
        for f in c.decode(v):
            times.append(float(f.pts * v.time_base))
            frames.append(f.to_ndarray(format="rgb24").astype(np.int16))
        return times, frames


def audio_span(path: Path) -> tuple[float, float]:
    """(first sample time, last sample end) of the audio stream, decoded."""
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        first = end = None
        for f in c.decode(a):
            t = float(f.pts * f.time_base)
            first = t if first is None else first
            end = t + f.samples / f.sample_rate
        return first, end


def check_annotated(source: Path, annotated: Path, face_frames: int = 10) -> None:
    from merstream.faces import FaceCropper

    t_src, f_src = video_frames(source)
    t_out, f_out = video_frames(annotated)
    assert len(t_out) == len(t_src)
    assert np.max(np.abs(np.array(t_out) - np.array(t_src))) <= 0.001  # every frame keeps its timestamp
    a_src, a_out = audio_span(source), audio_span(annotated)
    assert abs(a_src[0] - a_out[0]) <= 0.05 and abs(a_src[1] - a_out[1]) <= 0.05
    h, w = f_src[0].shape[:2]
    bars = [np.abs(a - b)[4 : h // 4, 4 : w // 3].mean() for a, b in zip(f_src, f_out)]
    clear = [np.abs(a - b)[int(h * 0.4) : int(h * 0.7), int(w * 0.8) :].mean() for a, b in zip(f_src, f_out)]
    assert min(bars) > 15  # the score panel is drawn on every frame
    assert max(clear) < 6  # elsewhere: the source, re-encoded
    cropper = FaceCropper()
    import cv2

    edges = 0
    for i in range(0, len(f_src), max(1, len(f_src) // face_frames)):
        box = cropper.find(cv2.cvtColor(f_src[i].astype(np.uint8), cv2.COLOR_RGB2GRAY))
        if box is not None:
            right = np.abs(f_out[i] - f_src[i])[box.y + box.size // 2 : box.y + box.size - 4, box.x + box.size - 3 : box.x + box.size + 2]
            edges += right.mean() > 40  # the face box's right edge (the bars panel covers its top-left)
    assert edges >= face_frames // 2


def test_record_keeps_frames_timestamps_and_audio(talk6):
    check_annotated(TALK6, talk6 / "annotated.mp4")


def test_record_keeps_a_variable_frame_rate(tmp_path):
    vfr = tmp_path / "vfr.mp4"  # 30 fps for 1.5 s, then every third frame (10 fps), audio copied
    ffmpeg("-i", str(TALK6), "-t", "4", "-vf", r"select='lt(n\,45)+not(mod(n\,3))'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-preset", "veryfast", "-c:a", "copy", str(vfr))
    times, _ = video_frames(vfr)
    steps = np.diff(times)
    assert steps.min() == pytest.approx(1 / 30, abs=0.002) and steps.max() == pytest.approx(0.1, abs=0.002)
    p = run("file", str(vfr), "--out", str(tmp_path), "--no-asr", "--record", str(tmp_path / "vfr.annotated.mp4"))
    assert p.returncode == 0, p.stderr
    check_annotated(vfr, tmp_path / "vfr.annotated.mp4")


def test_batch_writes_a_report_per_input_and_an_index(tmp_path, browser):
    from selenium.webdriver.common.by import By

    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    # the 6-emotions clip's first 4.5 s under its own name (a batch of reports needs no more of it)
    head = tmp_path / "in" / TALK6.name
    head.parent.mkdir()
    ffmpeg("-i", str(TALK6), "-t", "4.5", "-c", "copy", str(head))
    with av.open(str(head)) as c:
        assert c.duration / 1e6 == pytest.approx(4.5, abs=0.1)
    windows = 4  # at window 2 / hop 1: starts 0, 1, 2 and 3 (clipped at the end of the media)
    out, videos = tmp_path / "out", tmp_path / "annotated"
    p = run("file", str(head), str(TALK), str(bad), "-j", "2", "--report", "--record", str(videos), "--out", str(out))
    assert p.returncode == 1  # one input failed; the others are all written
    assert f"reports: {out / 'index.html'}" in p.stderr
    for name in ("talk_6emotions", "talk"):
        assert (out / f"{name}.html").exists()
        source = head if name == "talk_6emotions" else TALK
        with av.open(str(source)) as a, av.open(str(videos / f"{name}.annotated.mp4")) as b:
            assert sum(1 for _ in a.decode(video=0)) == sum(1 for _ in b.decode(video=0))
    browser.get((out / "index.html").as_uri())
    rows = browser.find_elements(By.CSS_SELECTOR, "#index tr")[1:]
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == ["talk_6emotions.mp4", "talk.mp4", "bad.mp4"]
    assert "failed: " in rows[2].text and "not a readable video" in rows[2].text
    rows[0].find_element(By.LINK_TEXT, "talk_6emotions.html").click()
    wait_for(browser, "return document.getElementById('player') && document.getElementById('player').readyState >= 1")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#track .win")) == windows
    assert console_errors(browser) == []


def test_ray_batch_reports_and_a_codec_the_browser_cannot_play(tmp_path, browser):
    from selenium.webdriver.common.by import By

    from conftest import DATA

    flv = DATA / "crema_d" / "1001_DFA_ANG_XX.flv"  # FLV (Sorenson/MP3): no browser plays it
    p = run("file", str(flv), str(TALK), "--ray", "-j", "1", "--report", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "on Ray" in p.stdout and f"reports: {tmp_path / 'index.html'}" in p.stderr
    browser.get((tmp_path / "1001_DFA_ANG_XX.html").as_uri())
    note = browser.find_element(By.ID, "media-note")
    wait_for(browser, "return !document.getElementById('media-note').hidden")
    assert "this browser cannot play" in note.text and "flv" in note.text, note.text
    browser.get((tmp_path / "talk.html").as_uri())
    wait_for(browser, "return document.getElementById('player').readyState >= 1")
    assert not browser.find_element(By.ID, "media-note").is_displayed()


def test_a_run_cut_short_still_gets_its_report(tmp_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(TALK6.read_bytes()[:700_000])  # the frames after ~8 s are missing
    p = run("file", str(cut), "--out", str(tmp_path), "--report")
    assert_one_line_error(p, "truncated or corrupt")
    text = (tmp_path / "cut.partial.html").read_text()
    assert 'class="badge partial"' in text and "truncated or corrupt" in text
    assert text.count('class="win') >= 6
