"""Training, evaluation, metrics and VEGA on real data from ../shared/data with tiny models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from merstream.cli import app
from merstream.errors import MerstreamError
from merstream.model.mer_clip import MerClip
from training import sources
from training.dataset import ManifestDataset, collate, model_inputs
from training.manifest import Sample, read_manifest, write_manifest
from training.metrics import multilabel_scores, sentiment_scores, single_label_scores
from training.train import TrainConfig, step_loss
from training.vega import AnchorBank, ModalityHeads, VegaConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
runner = CliRunner()


# ---- metrics (hand-computed) ---------------------------------------------------------------------
def test_multilabel_metrics_hand_computed():
    probs = np.array([[0.9, 0.7, 0.1], [0.2, 0.65, 0.59], [0.1, 0.2, 0.3]])
    true = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    m = multilabel_scores(probs, true, 0.6)
    # predicted sets: {0,1}, {1}, {} ; true sets: {0}, {1,2}, {}
    # accuracy = (1/2 + 1/2 + 1) / 3 ; precision = 2/3 ; recall = 2/3
    assert m.accuracy == pytest.approx(2 / 3)
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 3)
    assert m.micro_f1 == pytest.approx(2 / 3)
    assert multilabel_scores(probs, true, 0.5).precision == pytest.approx(3 / 4)  # 0.59 now counts


def test_single_label_and_sentiment_metrics_hand_computed():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    true = np.array([0, 1, 1, 1])
    s = single_label_scores(scores, true)
    # pred 0,1,0,1: class 0 P=1/2 R=1 F1=2/3; class 1 P=1 R=2/3 F1=4/5
    assert s.top1 == pytest.approx(0.75)
    assert s.balanced_accuracy == pytest.approx((1 + 2 / 3) / 2)
    assert s.weighted_f1 == pytest.approx((1 * 2 / 3 + 3 * 4 / 5) / 4)
    assert s.confusion == [[1, 0], [1, 2]]
    assert s.majority == pytest.approx(0.75)
    st = sentiment_scores(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    assert st.acc2 == pytest.approx(0.75)
    # negatives: P=1 R=2/3 F1=0.8 (support 3); positives: P=1/2 R=1 F1=2/3 (support 1)
    assert st.f1 == pytest.approx((3 * 0.8 + 2 / 3) / 4)


# ---- manifests and builders ----------------------------------------------------------------------
def test_shared_data_builders_map_labels_and_splits():
    rav = sources.ravdess(DATA / "ravdess")
    assert {s.labels[0] for s in rav} == {"neutral", "happy", "sad", "angry", "fear", "disgust"}
    assert all(s.modalities == ["A"] for s in rav)  # acted sentences: no emotion in the words
    assert {s.split for s in rav if "Actor_19" in s.audio} == {"test"}
    emo = sources.emodb(DATA / "emodb")
    assert "boredom" not in {s.labels[0] for s in emo} and len(emo) < 535
    assert sources.map_label("happiness") == "happy" and sources.map_label("surprise") is None
    crema = sources.crema_d(DATA / "crema_d")
    assert len(crema) == 6 and all(Path(s.video).exists() for s in crema)


def test_manifest_roundtrip_and_errors(tmp_path):
    samples = [Sample(id="a", labels=["happy", "sad"], text="so good", split="val"),
               Sample(id="b", labels=["angry"], audio=str(DATA / "talk" / "talk.mp4"), start=0.1, end=1.5)]
    for name in ("m.jsonl", "m.csv"):
        back = read_manifest(write_manifest(samples, tmp_path / name))
        assert [(s.id, s.labels, s.modalities, s.split, s.start, s.end) for s in back] == [
            ("a", ["happy", "sad"], ["L"], "val", None, None), ("b", ["angry"], ["A"], "train", 0.1, 1.5)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "labels": ["happy"], "colour": 1}\n')
    with pytest.raises(MerstreamError, match="unknown keys"):
        read_manifest(bad)
    bad.write_text('{"id": "x", "labels": ["happy"]}\n')
    with pytest.raises(MerstreamError, match="no image, video, audio or text"):
        read_manifest(bad)
    bad.write_text('{"id": "x", "labels": ["happy"], "text": "hi", "start": 5, "end": 1}\n')
    with pytest.raises(MerstreamError, match=r"bad.jsonl:1: needs 0 <= start < end"):
        read_manifest(bad)
    csv_bad = tmp_path / "bad.csv"
    csv_bad.write_text("id,labels,text\nx,happy,hi,extra\n")
    with pytest.raises(MerstreamError, match=r"bad.csv:2: 4 fields, the header names 3"):
        read_manifest(csv_bad)
    with pytest.raises(MerstreamError, match="duplicate labels"):
        TrainConfig.from_dict({"model": {"labels": ["happy", "sad", "happy"]}})


# ---- a small real manifest -------------------------------------------------------------------------
def real_samples() -> list[Sample]:
    faces = sources.image_folders(DATA / "fer2013" / "validation", "train", "fer")
    by = {}
    for s in faces:
        by.setdefault(s.labels[0], []).append(s)
    out = [by[k][i] for k in sorted(by) for i in range(2)]  # 2 faces per emotion
    rav = [s for s in sources.ravdess(DATA / "ravdess") if s.split == "train"][::60][:4]
    meld = [s for s in sources.meld_text(DATA / "text" / "meld" / "data" / "MELD") if s.split == "train"][:4]
    for s in rav + meld:
        s.split = "train"
    out += rav + meld
    crema = sources.crema_d(DATA / "crema_d")
    for s in crema[:3]:
        s.split = "val"
    for s in faces[-3:]:
        s.split = "val"
    for s in crema[3:5]:
        s.split = "test"
    return out + crema[:5] + faces[-3:] + [Sample(id="t", labels=["sad"], text="I miss her so much", split="test")]


def tiny_train_config(**vega) -> dict:
    return {"model": {"clip": "merstream-tiny", "num_frames": 2, "audio": {"n_mels": 32, "image_size": 224}},
            "optim": {"lr": 1e-3, "weight_decay": 1e-3, "batch_size": 8, "epochs": 1},
            "vega": vega, "seed": 0, "threads": 1}


def test_train_and_eval_cli_end_to_end(tmp_path):
    manifest = write_manifest(real_samples(), tmp_path / "small.jsonl")
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_train_config()))
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--config", str(cfg), "--manifest", str(manifest), "--out", str(out)])
    assert r.exit_code == 0, r.output
    hist = json.loads((out / "history.json").read_text())
    assert len(hist) == 1 and np.isfinite(hist[0]["train_loss"]) and "val" in hist[0]
    assert (out / "best" / "model.safetensors").exists() and (out / "last.pt").exists()
    # resume to a second epoch: history continues, weights change
    before = (out / "best" / "model.safetensors").read_bytes()
    r = runner.invoke(app, ["train", "--config", str(cfg), "--manifest", str(manifest), "--out", str(out),
                            "--resume", "--epochs", "2"])
    assert r.exit_code == 0, r.output
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())] == [1, 2]
    r = runner.invoke(app, ["eval", "--model", str(out / "best"), "--manifest", str(manifest), "--out",
                            str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())[0]
    assert rep["n"] == 3 and rep["multilabel"]["threshold"] == 0.6
    assert sum(map(sum, rep["single"]["confusion"])) == 3
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 1000
    del before
    # a weights file as --model: the report goes beside it (it once tried MODEL.safetensors/eval-...)
    r = runner.invoke(app, ["eval", "--model", str(out / "best" / "model.safetensors"), "--manifest", str(manifest)])
    assert r.exit_code == 0, r.output
    assert (out / "best" / "eval-small-test" / "report.json").exists()
    # a truncated last.pt (an interrupted save before saves were atomic): one line, not a torch traceback
    (out / "last.pt").write_bytes((out / "last.pt").read_bytes()[:5000])
    r = runner.invoke(app, ["train", "--config", str(cfg), "--manifest", str(manifest), "--out", str(out),
                            "--resume", "--epochs", "3"])
    assert r.exit_code != 0 and "cannot read" in r.output and "last.pt" in r.output and "Traceback" not in r.output
    assert not list(out.glob("*.tmp*"))


def test_training_config_mistakes_are_one_line_errors(tmp_path):
    for optim, msg in (({"epochs": -1}, "optim.epochs"), ({"lr": -1.0}, "optim.lr"), ({"batch_size": 0}, "optim.batch_size"),
                       ({"lrr": 1e-3}, r"unknown keys in optim: \['lrr'\]")):
        d = tiny_train_config()
        d["optim"].update(optim)
        with pytest.raises(MerstreamError, match=msg):
            TrainConfig.from_dict(d)
    d = tiny_train_config()
    d["model"]["labels"] = "happy"
    with pytest.raises(MerstreamError, match="labels must be a list"):
        TrainConfig.from_dict(d)
    # a run directory that cannot be made fails at once, as one line from the installed command
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(tiny_train_config()))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    p = subprocess.run([sys.executable, "-m", "merstream", "train", "-c", str(cfg), "--manifest",
                        str(write_manifest(real_samples(), tmp_path / "m.jsonl")), "-o", str(blocker / "run")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    out = (p.stdout + p.stderr).strip()
    assert p.returncode == 1 and out.startswith("error:") and str(blocker) in out and len(out.splitlines()) == 1, out


def test_ddp_two_processes_on_cpu_with_bf16_autocast(tmp_path):
    """torchrun with 2 CPU processes (gloo): the same code path as multi-GPU DDP and AMP on CUDA."""
    manifest = write_manifest(real_samples(), tmp_path / "small.jsonl")
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({**tiny_train_config(), "amp_on_cpu": True}))
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "training.train", "--config", str(cfg), "--manifest", str(manifest), "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    log = p.stdout + p.stderr
    assert "DDP: 2 processes (gloo), this is rank 0" in log and "this is rank 1" in log
    assert log.count("mixed precision: bf16 autocast on cpu") == 2
    assert "DDP: the 2 replicas finished with identical weights" in log
    hist = json.loads((out / "history.json").read_text())
    assert len(hist) == 1 and np.isfinite(hist[0]["train_loss"]) and "val" in hist[0]
    assert (out / "best" / "model.safetensors").exists()
    assert log.count("best epoch 1") == 1  # only rank 0 reports
    rngs = torch.load(out / "last.pt", weights_only=False)["torch_rng"]  # --resume gives each rank its own
    assert len(rngs) == 2 and not torch.equal(rngs[0], rngs[1])


def test_cli_errors_are_one_line(tmp_path):
    r = runner.invoke(app, ["train", "--config", str(tmp_path / "nope.json"), "--manifest", "x", "--out", str(tmp_path / "y")])
    assert r.exit_code != 0 and "training config not found" in r.output and "Traceback" not in r.output
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny_train_config()))
    r = runner.invoke(app, ["train", "--config", str(cfg), "--manifest", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "y")])
    assert r.exit_code != 0 and "manifest not found" in r.output and not (tmp_path / "y").exists()
    m = write_manifest([Sample(id="a", labels=["bored"], text="meh")], tmp_path / "m.jsonl")
    r = runner.invoke(app, ["train", "--config", str(cfg), "--manifest", str(m), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "not one of the model's labels" in r.output


# ---- VEGA and the frozen label encoder ---------------------------------------------------------------
def vega_batch():
    torch.manual_seed(0)
    cfg = TrainConfig.from_dict(tiny_train_config())
    model = MerClip(cfg.model)
    samples = [s for s in real_samples() if s.split == "train"][:14]
    ds = ManifestDataset(samples, cfg.model, model.image_size, model.context_length)
    batch = collate([ds[i] for i in range(len(ds))])
    return model, batch


def loss_with(model, batch, vega: VegaConfig, heads=None, anchors=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    kw = model_inputs(batch, "cpu")
    loss, parts = step_loss(model, model, kw, batch["targets"], vega, heads, anchors, gen)
    return loss, parts


def test_each_vega_piece_changes_the_loss():
    model, batch = vega_batch()
    d = model.embed_dim
    g = torch.Generator().manual_seed(1)
    anchors = AnchorBank({k: torch.randn(5, d, generator=g) for k in range(6)}, 6)
    base, _ = loss_with(model, batch, VegaConfig())
    with_anchor, parts = loss_with(model, batch, VegaConfig(anchors=True, anchor_p=0.0), anchors=anchors)
    assert parts["anchor"] > 0 and not torch.isclose(base, with_anchor)
    sampled, _ = loss_with(model, batch, VegaConfig(anchors=True, anchor_p=1.0), anchors=anchors)
    assert not torch.isclose(sampled, with_anchor)  # stochastic sampling swaps means for exemplars
    assert not torch.equal(anchors.sample(1.0, torch.Generator().manual_seed(0)), anchors.means)
    heads = ModalityHeads(model.cfg.modalities, d)
    dual, parts = loss_with(model, batch, VegaConfig(dual_branch=True), heads=heads)
    assert parts["distill"] > 0 and not torch.isclose(base, dual)
    dual.backward()
    assert heads.heads["V"].weight.grad is not None and heads.heads["V"].weight.grad.abs().sum() > 0


def test_label_encoder_gets_no_gradient():
    model, batch = vega_batch()
    loss, _ = loss_with(model, batch, VegaConfig())
    loss.backward()
    assert all(p.grad is None for p in model.label_encoder.text.parameters())
    assert model.label_encoder.label_ctx.grad is not None and model.label_encoder.label_ctx.grad.abs().sum() > 0
    assert model.vision.conv1.weight.grad.abs().sum() > 0 and model.audio.conv1.weight.grad.abs().sum() > 0


# ---- the paper recipe on the full-size architecture ---------------------------------------------------
def test_paper_config_one_step_on_vit_b32():
    """One AdamW step of training/configs/mosei.json on ViT-B-32 (random weights: no hub here), with 2
    frames per sample instead of 12 and 2 samples, to keep it light on CPU."""
    from training.train import build_model

    cfg = TrainConfig.load(ROOT / "training" / "configs" / "mosei.json")
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.batch_size, cfg.optim.epochs) == (8e-6, 1e-3, 16, 20)
    assert (cfg.model.num_frames, cfg.model.n_ctx, cfg.model.cmd_heads, len(cfg.model.fusion_order)) == (12, 8, 8, 3)
    cfg.model.pretrained = None
    cfg.model.num_frames = 2
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.embed_dim == 512  # CMD 3 x 512 x 8
    crema = sources.crema_d(DATA / "crema_d")[:2]
    crema[0].labels, crema[1].labels = ["angry"], ["disgust"]
    for s in crema:
        s.modalities = ["L", "V", "A"]
    ds = ManifestDataset(crema, cfg.model, model.image_size, model.context_length, max_segments=1)
    batch = collate([ds[0], ds[1]])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    frozen = {k: v.clone() for k, v in model.label_encoder.text.state_dict().items()}
    w0 = model.vision.conv1.weight.detach().clone()
    loss, _ = step_loss(model, model, model_inputs(batch, "cpu"), batch["targets"], cfg.vega, None, None,
                        torch.Generator())
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert not torch.equal(model.vision.conv1.weight, w0)
    assert all(torch.equal(v, model.label_encoder.text.state_dict()[k]) for k, v in frozen.items())


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "training" / "configs").glob("*.json")))
def test_every_shipped_training_config_builds_and_scores_a_real_clip(name):
    """Each config in training/configs (random weights) builds its model and scores a CREMA-D clip's
    frame and audio: small.json once asked for 96 px log-Mel images that merstream-small's 64 px towers cannot take."""
    from training.train import build_model

    cfg = TrainConfig.load(ROOT / "training" / "configs" / name)
    cfg.model.pretrained = None
    cfg.model.num_frames = 1
    model = build_model(cfg).eval()
    clip = sources.crema_d(DATA / "crema_d")[:1]
    clip[0].labels = [cfg.model.labels[0]]  # each config names its labels its own way
    ds = ManifestDataset(clip, cfg.model, model.image_size, model.context_length, max_segments=1)
    with torch.no_grad():
        sim = model(**model_inputs(collate([ds[0]]), "cpu"))
    assert sim.shape == (1, len(cfg.model.labels)) and torch.isfinite(sim).all()


def test_a_config_whose_audio_images_do_not_fit_the_towers_is_refused():
    from merstream.config import AudioConfig, ModelConfig

    with pytest.raises(MerstreamError, match="audio.image_size is 96 .* take 64 px"):
        MerClip(ModelConfig(clip="merstream-small", audio=AudioConfig(n_mels=96, image_size=96)))


def test_training_with_vega_switched_on(tmp_path):
    from training.train import train

    manifest = write_manifest(real_samples(), tmp_path / "small.jsonl")
    cfg = TrainConfig.from_dict(tiny_train_config(anchors=True, anchor_p=0.5, dual_branch=True, branch_label_weight=0.5))
    r = train(cfg, manifest, tmp_path / "run", progress=False, log=lambda m: None)
    assert r.best_epoch == 1 and np.isfinite(r.history[0]["train_loss"])
    assert (tmp_path / "run" / "best" / "model.safetensors").exists()


def test_dataset_normalises_each_speaker_by_all_of_their_clips():
    """With ``speaker_mean`` in the config, a speaker's clips share one offset, estimated from all of
    them (CREMA-D actor 1001 here); a clip with no speaker is normalised by its own voice."""
    from training import data as D

    d = tiny_train_config()
    d["model"]["audio"]["speaker_mean"] = [0.2] * 224
    cfg = TrainConfig.from_dict(d)
    crema = sources.crema_d(DATA / "crema_d")[:3]
    lone = Sample(id="lone", labels=["happy"], audio=crema[0].video, modalities=["A"])
    ds = ManifestDataset(crema + [lone], cfg.model, 224, 77)
    assert np.allclose(ds.offsets[0], ds.offsets[1]) and np.allclose(ds.offsets[0], ds.offsets[2])
    assert not np.allclose(ds.offsets[0], ds.offsets[3])  # the lone clip: its own estimate
    plain = D.clip_spectrograms(D.read_waveform(crema[1], 16000), ds.mel)[: ds.max_segments]
    assert torch.allclose(ds[1]["spectrograms"], plain + torch.from_numpy(ds.offsets[1])[None, None, :, None])
    assert all(ds[i]["spectrograms"].shape[1:] == (3, 224, 224) for i in range(4)) and not ds._spectrograms  # decoded once
    # the reference a build stores as speaker_mean: the average over speakers, not over clips
    from merstream.model.spectrogram import voiced_columns
    images = [D.clip_spectrograms(D.read_waveform(s, 16000), ds.mel).numpy() for s in crema + [lone]]
    actor = np.concatenate([voiced_columns(x) for x in images[:3]]).mean(0)
    assert np.allclose(D.speaker_reference(crema + [lone], images), (actor + voiced_columns(images[3]).mean(0)) / 2, atol=1e-5)


def test_timeline_and_disagreement_checks_count_correctly(tmp_path):
    """The two scripts whose figures the README quotes: segment averaging and pair classification."""
    from training.disagreement_check import summarise
    from training.timeline_check import check, read_windows

    rows = [{"start": 0.0, "end": 2.0, "scores": {"happy": 0.9, "sad": 0.2}},
            {"start": 1.0, "end": 3.0, "scores": {"happy": 0.1, "sad": 0.7}},  # midpoint 2.0: second segment
            {"start": 2.0, "end": 4.0, "scores": {"happy": 0.6, "sad": 0.5}}]
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [{"meta": 1}] + rows) + "\n")
    res = check(read_windows(f), [(0.0, 2.0, "happy"), (2.0, 4.0, "sad"), (4.0, 6.0, "sad")])
    assert [(r.predicted, r.windows, r.correct) for r in res] == [("happy", 1, True), ("sad", 2, True), (None, 0, False)]
    assert res[1].scores["happy"] == pytest.approx(0.35)
    from training.timeline_check import main as timeline_main

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for argv in ([str(empty)], [str(f), "--segments", "abc"], [str(f), "--segments", "5:1:happy"],
                 [str(f), "--segments", "0:1:ecstatic"], [str(tmp_path)]):
        assert timeline_main(argv) == 2, argv  # one-line errors, not a 0/6 or a traceback
    assert timeline_main([str(f), "--segments", "0:2:happy,2:4:sad"]) == 0
    top2 = np.array([[0, 1], [1, 0], [2, 0], [0, 2], [3, 3]])
    voice, face = np.array([0, 0, 0, 0, 3]), np.array([1, 1, 1, 1, 3])
    d = summarise(top2, voice, face)
    assert (d.pairs, d.voice_top1, d.face_top1, d.third_top1, d.both_in_top2, d.agreeing_top1) == (4, 0.5, 0.25, 0.25, 0.5, 1.0)


def test_voice_probe_scores_both_voice_representations_on_real_clips(tmp_path):
    """training.voice_probe end to end on a few real clips per label: the shipped model's audio tower
    and the bundled faster-whisper encoder, every setting, plain and speaker-centred."""
    from training.voice_probe import centre, main, probe

    assert main(["--per-label", "0"]) == 2 and main(["--json", str(tmp_path)]) == 2  # refused before any work
    out = tmp_path / "probe.json"
    assert main(["--per-label", "2", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert {(r["embedding"], r["setting"], r["centred"]) for r in rows} == {
        (e, s, c) for e in ("merstream audio tower", "whisper tiny.en encoder")
        for s in ("validation speakers", "CREMA-D 1001") for c in (False, True)}
    for r in rows:
        assert 0.0 <= r["balanced_accuracy"] <= 1.0
        if r["setting"] == "CREMA-D 1001":
            assert r["n"] == 6 and len(r["predictions"]) == 6
        else:
            assert r["predictions"] is None and r["n"] == 2 * 6 * 2  # 2 per label, RAVDESS + EmoDB validation
    # the probe itself: separable classes are separated; centring removes each speaker's mean
    x = np.concatenate([np.random.default_rng(0).normal(size=(20, 4)) + 3 * np.eye(4)[k] for k in range(3)])
    y = np.repeat(np.arange(3), 20)
    assert (probe(x, y, x, 3).argmax(1) == y).mean() > 0.9
    c = centre(x, ["a"] * 30 + ["b"] * 30)
    assert np.allclose(c[:30].mean(0), 0, atol=1e-9) and np.allclose(c[30:].mean(0), 0, atol=1e-9)
