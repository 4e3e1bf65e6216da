"""CLIP weights: local files, offline pretrained tags (fast, clear error), zero-shot mode."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from conftest import TALK
from merstream.errors import MerstreamError
from merstream.model.towers import build_clip
from merstream.model.weights import load_clip


def test_local_weights_file_is_loaded(tmp_path):
    torch.manual_seed(3)
    src = build_clip("merstream-tiny")
    path = tmp_path / "tiny_clip.pt"
    torch.save(src.state_dict(), path)
    loaded = load_clip("merstream-tiny", str(path))
    for (k, a), (_, b) in zip(src.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_pretrained_tag_offline_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.monotonic()
    with pytest.raises(MerstreamError) as e:
        load_clip("ViT-B-32", "laion2b_s34b_b79k")
    assert time.monotonic() - t < 20  # never the hub's ~50 s wait
    msg = str(e.value)
    assert "no network" in msg and "--clip-weights PATH" in msg


def test_unknown_tag_and_corrupt_file(tmp_path):
    with pytest.raises(MerstreamError, match="neither a file nor an open_clip pretrained tag"):
        load_clip("ViT-B-32", "no_such_tag")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(MerstreamError, match="cannot load CLIP weights"):
        load_clip("merstream-tiny", str(bad))


def test_zero_shot_mode_from_the_cli(tmp_path):
    torch.manual_seed(4)
    weights = tmp_path / "clip.pt"
    torch.save(build_clip("merstream-tiny").state_dict(), weights)
    p = subprocess.run(
        [sys.executable, "-m", "merstream", "file", str(TALK), "--clip", "merstream-tiny", "--clip-weights", str(weights),
         "--labels", "happy,sad", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "zero-shot" in p.stderr
    import json

    rows = [json.loads(x) for x in (tmp_path / "talk.jsonl").read_text().splitlines()][1:-1]
    assert len(rows) == 1 and abs(sum(rows[0]["scores"].values()) - 1.0) < 1e-3  # averaged softmax
    assert rows[0]["modalities"] == "LV"
