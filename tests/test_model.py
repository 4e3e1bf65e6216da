"""Unit tests pinning each MER-CLIP component (tiny open_clip config, random weights)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from merstream.config import AudioConfig, ModelConfig
from merstream.errors import MerstreamError
from merstream.model import MerClip, load_checkpoint, save_checkpoint, standardise
from merstream.model.spectrogram import LogMelImage
from merstream.model.towers import build_clip

torch.manual_seed(0)


def _inputs(model, b=2, t=3, a=1):
    s = model.image_size
    return dict(
        frames=torch.randn(b, t, 3, s, s),
        spectrograms=torch.randn(b, a, 3, s, s),
        tokens=model.tokenize(["don't forget a jacket", "hello"][:b] + ["x"] * max(0, b - 2)),
    )


def test_encoder_shapes_and_forward(tiny_model):
    m, d = tiny_model, tiny_model.embed_dim
    s = m.image_size
    with torch.no_grad():
        assert m.encode_frames(torch.randn(5, 3, s, s)).shape == (5, d)
        assert m.encode_audio(torch.randn(4, 3, s, s)).shape == (4, d)
        assert m.encode_text(m.tokenize(["a", "b", "c"])).shape == (3, d)
        assert m.label_embeddings().shape == (6, d)
        assert m.query_embedding().shape == (d,)
        sim = m(**_inputs(m))
    assert sim.shape == (2, 6)
    assert torch.all(sim.abs() <= 1 + 1e-5)  # cosine similarities


def test_vit_b32_architecture_shapes(vit_b32_model):
    m = vit_b32_model  # MerClip(ModelConfig(clip="ViT-B-32")), built once for the session (conftest)
    assert m.cfg == ModelConfig(clip="ViT-B-32")
    assert m.embed_dim == 512 and m.image_size == 224
    assert len(m.cmd.layers) == 3 and m.cmd.layers["L"].self_attn.num_heads == 8
    assert m.label_encoder.label_ctx.shape == (8, 512)
    with torch.no_grad():
        assert m.encode_frames(torch.randn(2, 3, 224, 224)).shape == (2, 512)
        assert m.encode_text(m.tokenize(["hi"])).shape == (1, 512)


def test_spectrogram_is_224_bins_64ms_32ms():
    cfg = AudioConfig()
    mel = LogMelImage(cfg)
    assert (mel.win_length, mel.hop_length) == (1024, 512)  # 64 ms / 32 ms at 16 kHz
    assert mel.filters.shape == (513, 224)
    t = np.arange(32000) / 16000
    spec = mel.mel_spectrogram(np.sin(2 * np.pi * 440 * t)[None])
    assert spec.shape == (1, 224, 63)  # 2 s -> 1 + 32000 / 512 frames
    img = mel([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 3000 * t[:8000])])  # second one padded
    assert img.shape == (2, 3, 224, 224) and img.dtype == np.float32
    assert np.allclose(img[:, 0], img[:, 1])
    # a higher tone sits higher in the image (low frequencies at the bottom)
    low_row = img[0, 0, :, 100].argmax()
    high_row = img[1, 0, :, 20].argmax()
    assert high_row < low_row


def test_level_db_makes_the_audio_image_independent_of_recording_level():
    from conftest import TALK6
    from merstream.media import read_audio

    speech = read_audio(TALK6)[16000:48000]  # 2 s of the real voice
    quiet = speech * 10 ** (-15 / 20)
    kept = LogMelImage(AudioConfig(n_mels=64, image_size=64))
    assert np.abs(kept([speech]) - kept([quiet])).mean() > 0.1  # default: the level is part of the input
    levelled = LogMelImage(AudioConfig(n_mels=64, image_size=64, level_db=-20.0))
    assert np.allclose(levelled([speech]), levelled([quiet]), atol=1e-4)
    silence = np.zeros(32000, np.float32) + 1e-5 * np.random.default_rng(0).standard_normal(32000).astype(np.float32)
    assert levelled([silence]).mean() < levelled([speech]).mean() - 0.3  # near-silence is not blown up to speech level


def test_text_tower_pools_at_eos_like_open_clip():
    torch.manual_seed(1)
    clip = build_clip("merstream-tiny").eval()
    m = MerClip(ModelConfig(clip="merstream-tiny"), clip=clip).eval()
    tokens = m.tokenize(["don't forget a jacket", "a much longer sentence about being very happy today"])
    with torch.no_grad():
        ours = m.encode_text(tokens)
        ref = clip.encode_text(tokens)
    assert torch.allclose(ours, ref, atol=1e-5)
    # the output is the EOS position's: changing padding after EOS changes nothing
    t2 = tokens.clone()
    eos = tokens.argmax(-1)
    t2[0, eos[0] + 1 :] = 320
    with torch.no_grad():
        assert torch.allclose(m.encode_text(t2)[0], ours[0], atol=1e-5)


def test_label_encoder_is_frozen_but_prompts_learn(tiny_cfg):
    m = MerClip(tiny_cfg).train()
    sim = m(**_inputs(m))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(m.logits(sim), torch.ones_like(sim))
    loss.backward()
    assert all(p.grad is None for p in m.label_encoder.text.parameters())
    assert all(not p.requires_grad for p in m.label_encoder.text.parameters())
    assert m.label_encoder.label_ctx.grad is not None and m.label_encoder.label_ctx.grad.abs().sum() > 0
    assert m.label_encoder.query_ctx.grad is not None and m.label_encoder.query_ctx.grad.abs().sum() > 0
    assert m.vision.conv1.weight.grad is not None  # the encoders are trained
    assert not m.label_encoder.text.training  # frozen tower stays in eval mode


def test_prompt_has_8_context_vectors_and_query_word(tiny_model):
    le = tiny_model.label_encoder
    assert le.label_ctx.shape[0] == 8 and le.query_ctx.shape[0] == 8
    toks = le.tokens(["happy"])[0].tolist()
    # [SOS] + 8 context slots + "happy" + [EOS]
    assert toks[0] == 49406 and toks[10] == 49407 and toks[11] == 0
    q = le.query_tokens[0].tolist()
    assert q[10] == 49407 and q[9] != 49406  # "emotion" is one BPE token after the 8 slots
    noq = MerClip(ModelConfig(clip="merstream-tiny", query_word=None)).label_encoder.query_tokens[0].tolist()
    assert noq[9] == 49407  # prompt only


def test_fusion_order_is_applied(tiny_cfg):
    torch.manual_seed(2)
    a = MerClip(tiny_cfg).eval()
    cfg_b = copy.deepcopy(tiny_cfg)
    cfg_b.fusion_order = ["A", "V", "L"]
    b = MerClip(cfg_b).eval()
    b.load_state_dict(a.state_dict())  # same weights per modality layer, only the order differs
    calls = []
    for name, layer in b.cmd.layers.items():
        layer.register_forward_hook(lambda mod, i, o, name=name: calls.append(name))
    x = {m: torch.randn(2, a.embed_dim) for m in "LVA"}
    p = {m: torch.ones(2) for m in "LVA"}
    with torch.no_grad():
        za, zb = a.fuse(x, p), b.fuse(x, p)
    assert calls == ["A", "V", "L"]
    assert not torch.allclose(za, zb, atol=1e-4)


def test_absent_modality_skips_its_layer(tiny_cfg):
    m = MerClip(tiny_cfg).eval()
    sub_cfg = copy.deepcopy(tiny_cfg)
    sub_cfg.fusion_order = ["L", "V"]
    sub = MerClip(sub_cfg).eval()
    sub.load_state_dict({k: v for k, v in m.state_dict().items() if ".layers.A." not in k and not k.startswith("audio.")})
    x = {k: torch.randn(3, m.embed_dim) for k in "LVA"}
    with torch.no_grad():
        full = m.fuse(x, {"L": torch.ones(3), "V": torch.ones(3), "A": torch.zeros(3)})
        two = sub.fuse({k: x[k] for k in "LV"}, {"L": torch.ones(3), "V": torch.ones(3)})
        with_a = m.fuse(x, {k: torch.ones(3) for k in "LVA"})
    assert torch.allclose(full, two, atol=1e-6)
    assert not torch.allclose(full, with_a, atol=1e-4)


@pytest.mark.parametrize("order", [["V"], ["L", "A"], ["A", "L", "V"]])
def test_modality_subsets(order):
    m = MerClip(ModelConfig(clip="merstream-tiny", fusion_order=order)).eval()
    assert sorted(m.cmd.layers.keys()) == sorted(order)
    assert (m.vision is None) == ("V" not in order) and (m.audio is None) == ("A" not in order)
    with torch.no_grad():
        sim = m(**_inputs(m))
    assert sim.shape == (2, 6)


def test_emotion_thresholding_standardise_sigmoid_06(tiny_model):
    sim = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.9]])
    z = (sim - sim.mean()) / sim.std(unbiased=False)
    probs = tiny_model.probabilities(sim)
    assert torch.allclose(probs, torch.sigmoid(z), atol=1e-5)
    pred = tiny_model.predict(probs)[0].tolist()
    assert pred == [bool(v) for v in (torch.sigmoid(z)[0] >= 0.6).tolist()]
    # hand-computed: z(0.5) = 0.1 / 0.2582 = 0.387 -> sigmoid 0.5957, just under the 0.6 threshold
    assert abs(probs[0, 4].item() - 0.5957) < 1e-3
    assert pred == [False, False, False, False, False, True]
    assert torch.allclose(standardise(sim).mean(), torch.tensor(0.0), atol=1e-6)


def test_sentiment_softmax_with_learnable_scale():
    m = MerClip(ModelConfig(clip="merstream-tiny", task="sentiment", labels=["negative", "positive"], query_word="Sentiment"))
    assert math.isclose(m.logit_scale.exp().item(), 1 / 0.07, rel_tol=1e-5)
    assert m.logit_scale.requires_grad
    sim = torch.tensor([[0.1, 0.3]])
    assert torch.allclose(m.probabilities(sim), (sim / 0.07).softmax(-1), atol=1e-5)
    assert m.predict(m.probabilities(sim)).tolist() == [[False, True]]


@pytest.mark.parametrize("ablation", ["full", "no_cmd", "no_le", "no_cmd_no_le"])
def test_ablation_switches(ablation):
    m = MerClip(ModelConfig(clip="merstream-tiny", ablation=ablation)).eval()
    assert hasattr(m, "cmd") == (ablation in ("full", "no_le"))
    assert hasattr(m, "fuse_fc") == (ablation in ("no_cmd", "no_cmd_no_le"))
    assert hasattr(m, "label_fc") == (ablation in ("no_le", "no_cmd_no_le"))
    with torch.no_grad():
        sim = m(**_inputs(m))
    assert sim.shape == (2, 6)
    if ablation in ("full", "no_cmd"):  # cosine similarity to label embeddings
        assert torch.all(sim.abs() <= 1 + 1e-5)
        other = m(**_inputs(m), labels=["calm", "excited"]) if ablation == "no_cmd" else None
        assert other is None or other.shape == (2, 2)


def test_open_label_set(tiny_model):
    with torch.no_grad():
        sim = tiny_model(**_inputs(tiny_model), labels=["a person who just won the lottery", "bored"])
    assert sim.shape == (2, 2)


def test_checkpoint_round_trip(tiny_model, tmp_path):
    d = save_checkpoint(tiny_model, tmp_path / "ck")
    assert (d / "config.json").exists() and (d / "model.safetensors").exists()
    single = save_checkpoint(tiny_model, tmp_path / "one.safetensors")
    save_checkpoint(tiny_model, tmp_path / "ck")  # saving over a checkpoint replaces it and leaves no temporary file
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["config.json", "model.safetensors", "one.safetensors"]
    x = _inputs(tiny_model)
    with torch.no_grad():
        ref = tiny_model(**x)
        for path in (d, single):
            assert torch.allclose(load_checkpoint(path)(**x), ref, atol=1e-6)


def test_checkpoint_config_mismatch_is_one_line_error(tiny_model, tmp_path):
    d = save_checkpoint(tiny_model, tmp_path / "ck")
    other = ModelConfig(clip="ViT-B-32")
    with pytest.raises(MerstreamError) as e:
        load_checkpoint(d, cfg=other)
    msg = str(e.value)
    assert "do not match the model config" in msg and "shape mismatches" in msg and "\n" not in msg
    fewer = ModelConfig(clip="merstream-tiny", fusion_order=["L", "V"])
    with pytest.raises(MerstreamError, match="unexpected tensors"):
        load_checkpoint(d, cfg=fewer)


def test_config_json_round_trip_and_errors(tmp_path):
    cfg = ModelConfig(clip="merstream-tiny", labels=["calm", "tense"], fusion_order=["v", "a"], threshold=0.5)
    cfg.save(tmp_path / "c.json")
    back = ModelConfig.load(tmp_path / "c.json")
    assert back == cfg and back.fusion_order == ["V", "A"]
    (tmp_path / "bad.json").write_text('{"clip": "merstream-tiny", "colour": 1}')
    with pytest.raises(MerstreamError, match="unknown keys"):
        ModelConfig.load(tmp_path / "bad.json")
    with pytest.raises(MerstreamError, match="fusion_order"):
        ModelConfig(fusion_order=["L", "L"])
    with pytest.raises(MerstreamError, match="ablation"):
        ModelConfig(ablation="none")


def test_the_embedded_models_config_is_written_back_byte_for_byte():
    """Options added after a model was built (``mirror_faces``) are written only when set, so loading
    and saving the embedded model's config reproduces its file, and a rebuild gives its weights sha256
    (the checkpoint's metadata holds the same JSON)."""
    from merstream.models import DEFAULT_MODEL_DIR

    shipped = DEFAULT_MODEL_DIR / "config.json"
    cfg = ModelConfig.load(shipped)
    out = shipped.read_text()
    assert "mirror_faces" not in out and cfg.mirror_faces is False
    assert json.dumps(cfg.to_dict(), indent=2) + "\n" == out
    cfg.mirror_faces = True
    assert cfg.to_dict()["mirror_faces"] is True and ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_architecture_is_clear():
    with pytest.raises(MerstreamError, match="unknown CLIP architecture"):
        MerClip(ModelConfig(clip="NoSuchNet"))


def test_speaker_normalisation_removes_a_microphones_colouring():
    """The same speaker through a bright (pre-emphasis) microphone: raw log-Mel images differ by a
    per-band offset; each stream normalised by its own running estimate, they nearly agree again,
    while the differences between the speaker's emotions are kept."""
    from conftest import DATA
    from merstream.media import read_audio
    from merstream.model.spectrogram import SpeakerNorm

    clips = sorted((DATA / "emodb" / "wav").glob("03a0*.flac"))[:6]  # speaker 3: several emotions
    waves = [read_audio(c)[:32000] for c in clips]
    bright = [np.append(w[:1], w[1:] - 0.9 * w[:-1]).astype(np.float32) for w in waves]
    mel = LogMelImage(AudioConfig(n_mels=64, image_size=64, level_db=-20.0))
    a, b = mel(waves), mel(bright)
    ref = np.full(64, 0.3, np.float32)
    cfg = AudioConfig(n_mels=64, image_size=64, level_db=-20.0, speaker_mean=ref.tolist(), speaker_prior_columns=0.0)
    na, nb = SpeakerNorm(cfg), SpeakerNorm(cfg)
    na.update(a)
    nb.update(b)
    raw_gap = np.abs(a - b).mean()
    norm_gap = np.abs(na.apply(a) - nb.apply(b)).mean()
    assert norm_gap < 0.5 * raw_gap
    between_emotions = np.abs(na.apply(a)[0] - na.apply(a)[1:]).mean()
    assert between_emotions > 2 * norm_gap  # what differs between the clips is not normalised away
    # the estimate starts at the reference: with a prior, one short segment is only partly normalised
    slow = SpeakerNorm(AudioConfig(n_mels=64, image_size=64, speaker_mean=ref.tolist(), speaker_prior_columns=256.0))
    slow.update(b[:1])
    assert 0 < np.abs(slow.offset).mean() < np.abs(nb.offset).mean()
