"""Shared fixtures: real media from ../shared/data, tiny real models, speech made with espeak-ng."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# torch's OpenMP threads sleep instead of spinning while they wait for work (set before torch is
# imported here or in the CLI subprocesses, which inherit it). Same threads, same results; on a CPU
# shared with other work (CI runners, a training run beside the tests) spinning threads of two
# processes starve each other: the in-process torch tests ran about twice as slow under such load.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# the ONNX export cache (checkpoints run with --backend auto are exported once) lives in the test run
os.environ["MERSTREAM_CACHE"] = tempfile.mkdtemp(prefix="merstream-test-cache-")

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data").resolve()
TALK6 = DATA / "talk" / "talk_6emotions.mp4"
TALK = DATA / "talk" / "talk.mp4"


def pytest_unconfigure(config):
    shutil.rmtree(os.environ["MERSTREAM_CACHE"], ignore_errors=True)  # the run's exports go with it


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: real-size architecture (ViT-B-32, random weights), tens of seconds on CPU")
    if not TALK6.exists():
        raise pytest.UsageError(f"test data not found at {DATA} (the repo expects ../shared/data beside it)")


@pytest.fixture(scope="session")
def tiny_cfg():
    from merstream.config import ModelConfig

    return ModelConfig(clip="merstream-tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg):
    import torch

    from merstream.model import MerClip

    torch.manual_seed(0)
    return MerClip(tiny_cfg).eval()


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_model, tmp_path_factory):
    from merstream.model import save_checkpoint

    return save_checkpoint(tiny_model, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="session")
def vit_b32_model():
    """The real-size ViT-B-32 architecture, random weights (seed 0): built once (seconds on CPU) for
    the tests that need its size, not its weights; none of them changes it."""
    import torch

    from merstream.config import ModelConfig
    from merstream.model import MerClip

    torch.manual_seed(0)
    return MerClip(ModelConfig(clip="ViT-B-32")).eval()


def merstream_cli(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """`merstream ARGS` as users run it: a subprocess."""
    return subprocess.run([sys.executable, "-m", "merstream", *args], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def tiny_talk6_file(tiny_ckpt, tmp_path_factory):
    """`merstream file talk_6emotions.mp4 --model TINY` (ASR on, plot on), run once for the session:
    (the finished process, its --out folder). Tests only read it."""
    out = tmp_path_factory.mktemp("tiny_talk6_file")
    p = merstream_cli("file", str(TALK6), "--model", str(tiny_ckpt), "--out", str(out))
    assert p.returncode == 0, p.stderr
    return p, out


@pytest.fixture(scope="session")
def tiny_talk6_file_no_asr(tiny_ckpt, tmp_path_factory):
    """`merstream file talk_6emotions.mp4 --model TINY --no-asr` (plot on), run once for the session:
    (the finished process, its --out folder, which holds only what that run wrote). Tests only read it."""
    out = tmp_path_factory.mktemp("tiny_talk6_file_no_asr")
    p = merstream_cli("file", str(TALK6), "--model", str(tiny_ckpt), "--no-asr", "--out", str(out))
    assert p.returncode == 0, p.stderr
    return p, out


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def speech_wav(media_dir):
    """Real synthesised speech (espeak-ng), 16 kHz mono WAV."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (README set-up installs it)")
    raw = media_dir / "speech_raw.wav"
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(raw), "I am so happy today. This is wonderful news."], check=True)
    out = media_dir / "speech.wav"
    ffmpeg("-i", str(raw), "-ar", "16000", "-ac", "1", str(out))
    return out


def assert_one_line_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    """A failed CLI run (text mode): non-zero exit, no traceback, exactly one `error:` line
    containing every needle."""
    assert p.returncode != 0
    assert "Traceback" not in p.stderr + p.stdout
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, p.stderr
    for n in needles:
        assert n in errors[0], errors[0]
