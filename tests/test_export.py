"""ONNX export and the onnxruntime scorer: parity, dynamic batch, same timeline as torch, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import TALK6
from merstream.config import ModelConfig
from merstream.errors import MerstreamError
from merstream.model import MerClip
from merstream.onnx_scorer import OnnxScorer
from merstream.torch_scorer import TorchScorer

from export import export_model, reference_from_media

CLI = [sys.executable, "-c", "from merstream.cli import main; main()"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def exported(tiny_ckpt, tmp_path_factory):
    """`merstream export` of the tiny checkpoint, through the command line (check on)."""
    out = tmp_path_factory.mktemp("onnx") / "tiny"
    r = run_cli("export", "--out", out, "--model", tiny_ckpt)
    assert r.returncode == 0, r.stderr
    assert "parity OK" in r.stderr
    return out


def test_export_manifest_and_parity_record(exported, tiny_model):
    m = json.loads((exported / "manifest.json").read_text())
    assert m["opset"] == 17 and m["precision"] == "fp32" and m["task"] == "emotion"
    assert m["labels"] == tiny_model.cfg.labels and m["threshold"] == tiny_model.cfg.threshold
    assert set(m["graphs"]) == {"vision", "audio", "text", "label_encoder", "head"}
    assert set(m["files"]) == {f"{g}.onnx" for g in m["graphs"]} | {"labels.npy", "tokenizer.json"}
    assert m["parity"]["ok"] and all(d["max_abs"] <= 1e-4 for d in m["parity"]["diffs"])
    assert {d["batch"] for d in m["parity"]["diffs"]} >= {1, 5}
    with torch.no_grad():
        ref = tiny_model.label_embeddings().numpy()
    assert np.abs(np.load(exported / "labels.npy") - ref).max() < 1e-5


def test_ort_batch_axes_are_dynamic(exported, tiny_model):
    """Raw onnxruntime sessions on the graphs at batch 1 and 5 match torch."""
    s = tiny_model.image_size
    rng = np.random.default_rng(3)
    vision = ort.InferenceSession(str(exported / "vision.onnx"), providers=["CPUExecutionProvider"])
    text = ort.InferenceSession(str(exported / "text.onnx"), providers=["CPUExecutionProvider"])
    frames = rng.standard_normal((5, 3, s, s)).astype(np.float32)
    tokens = tiny_model.tokenize(["a", "b c", "don't forget a jacket", "d", "e f g"])
    for b in (1, 5):
        got = vision.run(None, {"frames": frames[:b]})[0]
        with torch.no_grad():
            ref = tiny_model.encode_frames(torch.from_numpy(frames[:b])).numpy()
        assert got.shape == (b, tiny_model.embed_dim) and np.abs(got - ref).max() < 1e-4
        got = text.run(None, {"tokens": tokens[:b].numpy()})[0]
        with torch.no_grad():
            ref = tiny_model.encode_text(tokens[:b]).numpy()
        assert got.shape == (b, tiny_model.embed_dim) and np.abs(got - ref).max() < 1e-4


def test_set_labels_reembeds_with_exported_label_encoder(exported, tiny_model):
    onnx = OnnxScorer(exported)
    assert onnx.provider == "cpu" and onnx.name == "onnx"
    new = ["calm", "surprised", "a burst of laughter"]
    onnx.set_labels(new)
    assert onnx.labels == new
    with torch.no_grad():
        ref = tiny_model.label_embeddings(new).numpy()
    assert np.abs(onnx.label_emb[""] - ref).max() < 1e-4
    torch_s = TorchScorer(tiny_model, new)
    rng = np.random.default_rng(0)
    pooled = {m: rng.standard_normal((4, tiny_model.embed_dim)).astype(np.float32) for m in "LVA"}
    present = {m: np.array([1, 0, 1, 1], dtype=np.float32) for m in "LVA"}
    a, b = torch_s.score(pooled, present), onnx.score(pooled, present)
    assert a.shape == b.shape == (4, 3) and np.abs(a - b).max() < 1e-4


def _timeline(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[-1]["end"]["complete"]
    return rows[0]["meta"], [r for r in rows if "index" in r]


def _same_timeline(a, b):
    assert len(a) == len(b) > 5
    for x, y in zip(a, b):
        assert (x["start"], x["end"], x["labels"], x["top"], x["modalities"]) == (y["start"], y["end"], y["labels"], y["top"], y["modalities"])
        assert x["scores"].keys() == y["scores"].keys()
        assert max(abs(x["scores"][k] - y["scores"][k]) for k in x["scores"]) <= 1e-4


def test_cli_file_same_timeline_onnx_and_torch(exported, tiny_ckpt, tmp_path):
    procs = {  # both backends at once (2 processes): the wall time of one
        name: subprocess.Popen(
            [*CLI, "file", str(TALK6), "--model", str(model), "-o", str(tmp_path / name), "--no-asr", "--no-plot",
             "--backend", backend],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name, model, backend in (("onnx", exported, "auto"), ("torch", tiny_ckpt, "torch"))
    }
    outs = {}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        outs[name] = _timeline(tmp_path / name / "talk_6emotions.jsonl")
    assert outs["onnx"][0]["backend"] == "onnx" and outs["torch"][0]["backend"] == "torch"
    _same_timeline(outs["onnx"][1], outs["torch"][1])
    assert {w["modalities"] for w in outs["onnx"][1]} == {"VA"}


def test_engine_same_windows_with_transcript(exported, tiny_model):
    """All three modalities (words with times standing in for ASR) through the engine."""
    from merstream.asr import Word
    from merstream.config import StreamConfig
    from merstream.run_file import make_engine, prepare, score_job

    words = [Word(0.2 + 0.6 * i, 0.6 + 0.6 * i, w) for i, w in enumerate("Don't forget a jacket , I said , don't forget it".split())]
    results = {}
    for name, scorer in (("onnx", OnnxScorer(exported)), ("torch", TorchScorer(tiny_model))):
        job = prepare(str(TALK6), scorer, None, on_note=lambda m: None)
        job.words = words
        engine = make_engine(job, scorer, StreamConfig())
        results[name] = [r.to_json() for r in score_job(str(TALK6), job, engine)]
    assert any(w["modalities"] == "LVA" for w in results["onnx"])
    _same_timeline(results["onnx"], results["torch"])


def test_tampered_file_is_one_line_error(exported, tmp_path):
    bad = tmp_path / "tampered"
    shutil.copytree(exported, bad)
    data = bytearray((bad / "head.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "head.onnx").write_bytes(bytes(data))
    r = run_cli("file", TALK6, "--model", bad, "-o", tmp_path / "o", "--no-asr")
    assert r.returncode == 1
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "head.onnx does not match its sha256" in lines[0], r.stderr


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m.update(labels=["a", "b", "c"]) or m["config"].update(labels=["a", "b", "c"]), "was edited after export"),
    (lambda m: m["config"]["audio"].update(n_mels=1), "was edited after export"),
    (lambda m: m.update(version=1), "exported by an older merstream"),
], ids=["labels", "n_mels", "old-version"])
def test_an_edited_or_old_manifest_is_one_line_error(exported, tmp_path, edit, needle):
    bad = tmp_path / "edited"
    shutil.copytree(exported, bad)
    m = json.loads((bad / "manifest.json").read_text())
    edit(m)
    (bad / "manifest.json").write_text(json.dumps(m, indent=2))
    r = run_cli("file", TALK6, "--model", bad, "-o", tmp_path / "o", "--no-asr")
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 1 and len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_bad_export_dirs_and_providers(exported, tmp_path):
    with pytest.raises(MerstreamError, match="not found"):
        OnnxScorer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MerstreamError, match="no manifest.json"):
        OnnxScorer(tmp_path / "empty")
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(MerstreamError, match="corrupt"):
        OnnxScorer(broken)
    shutil.copy(exported / "manifest.json", broken / "manifest.json")
    (broken / "vision.onnx").unlink()
    with pytest.raises(MerstreamError, match="vision.onnx is missing"):
        OnnxScorer(broken)
    with pytest.raises(MerstreamError, match="provider 'cuda' is not available"):
        OnnxScorer(exported, providers=["cuda"])


def test_int8_export_reports_accuracy(tiny_model, tmp_path):
    ref = reference_from_media(TALK6, tiny_model.image_size, tiny_model.cfg.audio, windows=6)
    r = export_model(tiny_model, tmp_path / "int8", precision="int8", reference=ref, check=False)
    assert r.parity is None
    acc = r.accuracy
    assert acc.precision == "int8" and acc.windows == 6 and acc.source == str(TALK6)
    assert 0 < acc.max_abs_score_diff < 0.2 and 0 <= acc.label_agreement <= 1 and 0 <= acc.top1_agreement <= 1
    assert min(acc.embedding_cosine.values()) > 0.99
    m = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert m["precision"] == "int8" and m["graphs"]["vision"]["precision"] == "int8" and m["graphs"]["head"]["precision"] == "fp32"
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8" / "vision.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    scorer = OnnxScorer(tmp_path / "int8")
    assert scorer.precision == "int8" and scorer.encode_frames(ref.frames[:2]).shape == (2, tiny_model.embed_dim)


def test_fp16_export_refused_without_cuda(tiny_model, tmp_path):
    r = export_model(tiny_model, tmp_path / "fp16", precision="fp16", check=False)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider present: fp16 is verified by export itself")
    assert any("NOT verified" in n for n in r.notes)
    with pytest.raises(MerstreamError, match="fp16 export, which needs the CUDA execution provider"):
        OnnxScorer(tmp_path / "fp16")


def test_failed_export_leaves_no_usable_export(tiny_model, tmp_path):
    """A parity miss leaves the graphs for inspection but no manifest, so nothing scores with them;
    label and tolerance mistakes are refused before any graph is written."""
    with pytest.raises(MerstreamError, match="parity check failed"):
        export_model(tiny_model, tmp_path / "miss", tol=1e-30)
    assert list((tmp_path / "miss").glob("*.onnx")) and not (tmp_path / "miss" / "manifest.json").exists()
    with pytest.raises(MerstreamError, match="manifest"):
        OnnxScorer(tmp_path / "miss")
    assert export_model(tiny_model, tmp_path / "miss", check=False).directory == tmp_path / "miss"  # a retry may reuse it
    assert not (tmp_path / "miss" / "manifest.failed.json").exists() and OnnxScorer(tmp_path / "miss").labels
    for kw, msg in (({"labels": ["a", "b"]}, "at least 3"), ({"tol": -1.0}, "--tol must be > 0")):
        with pytest.raises(MerstreamError, match=msg):
            export_model(tiny_model, tmp_path / "refused", **kw)
        assert not (tmp_path / "refused").exists()


def test_ablations_and_zero_shot_export(tmp_path):
    torch.manual_seed(1)
    no_le = MerClip(ModelConfig(clip="merstream-tiny", ablation="no_le", task="sentiment", labels=["negative", "positive"])).eval()
    r = export_model(no_le, tmp_path / "no_le")
    assert r.parity.ok and "label_encoder" not in {g.name for g in r.graphs}
    scorer = OnnxScorer(tmp_path / "no_le")
    with pytest.raises(MerstreamError, match="labels are fixed"):
        scorer.set_labels(["sad", "happy"])
    from merstream.models import resolve_model

    zs = resolve_model(None, "merstream-tiny", None, ["happy", "sad", "angry"])
    r = export_model(zs.model, tmp_path / "zs", mode="zero-shot")
    assert r.parity.ok and any(d.output == "label embeddings V" for d in r.parity.diffs)
    assert OnnxScorer(tmp_path / "zs").modalities == ["L", "V"]


def test_mirror_faces_embeds_a_frame_and_its_mirror_alike_in_torch_and_onnx(tmp_path):
    """``mirror_faces``: a frame's embedding is the mean of the frame's and its mirror's, in the model
    and in its exported vision graph (the flip is part of the graph, so serving needs nothing else)."""
    torch.manual_seed(2)
    model = MerClip(ModelConfig(clip="merstream-tiny", fusion_order=["V"], mirror_faces=True)).eval()
    x = torch.randn(3, 3, model.image_size, model.image_size)
    with torch.no_grad():
        e, e_mirrored, plain = model.encode_frames(x), model.encode_frames(x.flip(-1)), model.vision(x)
    assert torch.allclose(e, e_mirrored, atol=1e-5) and not torch.allclose(e, plain, atol=1e-3)
    r = export_model(model, tmp_path / "mirror", graphs=["vision", "head"])
    assert r.parity.ok
    scorer = OnnxScorer(tmp_path / "mirror")
    o, o_mirrored = scorer.encode_frames(x.numpy()), scorer.encode_frames(x.flip(-1).numpy())
    assert np.abs(o - e.numpy()).max() < 1e-4 and np.abs(o - o_mirrored).max() < 1e-4


@pytest.mark.slow
def test_vit_b32_vision_and_cmd_export_parity(tmp_path):
    """The real ViT-B-32 architecture (random weights): vision tower + CMD head pass --check."""
    torch.manual_seed(0)
    model = MerClip(ModelConfig(clip="ViT-B-32", fusion_order=["V"])).eval()
    r = export_model(model, tmp_path / "vitb32", graphs=["vision", "head"])
    assert r.parity.ok and r.parity.worst.max_abs <= 1e-4
    assert {(d.output, d.batch) for d in r.parity.diffs} >= {("frame embeddings", 1), ("frame embeddings", 5)}
    assert OnnxScorer(tmp_path / "vitb32").embed_dim == 512


def test_fp16_exact_weights_are_stored_as_fp16_and_compute_the_same(exported, tmp_path, tiny_model):
    import onnx
    from onnx import numpy_helper

    from export.onnx_export import store_fp16_exact

    model = onnx.load(str(exported / "text.onnx"))
    for init in model.graph.initializer:  # weights as a checkpoint saved in fp16 holds them
        values = numpy_helper.to_array(init)
        if values.dtype == np.float32 and values.size >= 1024:
            init.CopyFrom(numpy_helper.from_array(values.astype(np.float16).astype(np.float32), init.name))
    plain, compact = tmp_path / "plain.onnx", tmp_path / "compact.onnx"
    onnx.save(model, str(plain))
    onnx.save(model, str(compact))
    saved = store_fp16_exact(compact)
    assert saved > 0.4 * plain.stat().st_size and compact.stat().st_size < 0.6 * plain.stat().st_size
    tokens = tiny_model.tokenize(["don't forget a jacket", "a"]).numpy()
    tokens = tokens[:, : int(tokens.argmax(-1).max()) + 1]
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"tokens": tokens})[0] for p in (plain, compact)]
    assert np.array_equal(outs[0], outs[1])
    shutil.copy(exported / "vision.onnx", tmp_path / "vision.onnx")
    before = (tmp_path / "vision.onnx").read_bytes()
    assert store_fp16_exact(tmp_path / "vision.onnx") == 0  # random fp32 weights are not fp16-exact: untouched
    assert (tmp_path / "vision.onnx").read_bytes() == before
