"""Model and stream settings as dataclasses, stored as JSON (open_clip style).

A model config names its CLIP architecture (an open_clip model name such as ``ViT-B-32``, or a
full ``{"embed_dim", "vision_cfg", "text_cfg"}`` dict), its label set, query word, fusion order,
decoder size, ablation switches, thresholds and the signal parameters of each modality.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MerstreamError

EMOTIONS_6 = ["neutral", "happy", "sad", "angry", "fear", "disgust"]
ZERO_SHOT_TEMPLATES = {"V": "a photo of a {} face.", "L": "a {} statement."}  # zero-shot CLIP prompts
SENTIMENT_2 = ["negative", "positive"]

MODALITIES = ("L", "V", "A")
ABLATIONS = ("full", "no_cmd", "no_le", "no_cmd_no_le")
TASKS = ("emotion", "sentiment")


@dataclass
class AudioConfig:
    """Log-Mel "image" of one audio segment (MER-CLIP section 3: 224 bins, 64 ms / 32 ms)."""

    sample_rate: int = 16000
    segment_seconds: float = 2.0
    n_mels: int = 224
    win_ms: float = 64.0
    hop_ms: float = 32.0
    image_size: int = 224  # the spectrogram is resized to image_size x image_size, 3 channels
    level_db: float | None = None  # scale each segment to this RMS level (dBFS) first: None keeps the recorded level
    # speaker normalisation (opt-in): the training speakers' average voiced log-Mel image column
    # (image_size values, one per image row, low frequencies last). Set, each stream's running average
    # of its voiced columns is replaced by it (merstream.model.spectrogram.SpeakerNorm); the estimate
    # starts as `speaker_prior_columns` columns of this reference (a column is segment_seconds /
    # image_size: 256 columns are 8 s at image_size 64), so a new voice is normalised more as it speaks.
    speaker_mean: list[float] | None = None
    speaker_prior_columns: float = 256.0

    def __post_init__(self) -> None:
        if not (isinstance(self.sample_rate, int) and self.sample_rate > 0):
            raise MerstreamError(f"config: audio.sample_rate must be a positive integer, got {self.sample_rate!r}")
        for name in ("segment_seconds", "win_ms", "hop_ms"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise MerstreamError(f"config: audio.{name} must be > 0, got {v!r}")
        if self.speaker_mean is not None and len(self.speaker_mean) != self.image_size:
            raise MerstreamError(f"config: audio.speaker_mean needs image_size = {self.image_size} values, "
                                 f"got {len(self.speaker_mean)}")
        if not self.speaker_prior_columns >= 0:
            raise MerstreamError("config: audio.speaker_prior_columns must be >= 0")


AUDIO_TOWER_TYPES = ("clip", "whisper")
TEXT_TOWER_TYPES = ("clip", "minilm")


PACKAGE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")  # a distribution name (PEP 508)
SHA256 = re.compile(r"[0-9a-fA-F]{64}")
WHISPER_MAX_SECONDS = 30.0  # a Whisper encoder has positions for 1500 states: 30 s


@dataclass
class AudioTowerConfig:
    """Which tower hears the 2 s audio segments (open_clip style: one JSON block per tower).

    ``clip``: the CLIP image tower of ``ModelConfig.clip`` on log-Mel images (``AudioConfig``), as in
    the MER-CLIP paper. ``whisper``: the encoder of a CTranslate2 Whisper model shipped in the Python
    package ``package`` (its ``model.bin`` checked against ``sha256``): the first layers frozen
    (``merstream.model.frontends.WhisperFrontEnd``), the last ``tuned_layers`` copied into the model
    and trained, then a head that pools and projects the frame states (``towers.WhisperTower``).
    """

    type: str = "clip"
    package: str | None = None  # whisper: the installed package that ships the model (its model/ directory)
    sha256: str | None = None  # whisper: sha256 of that package's model.bin
    width: int = 384  # whisper: encoder width (tiny: 384)
    hidden: int = 512  # whisper: hidden width of the head's MLP
    dropout: float = 0.1  # whisper: dropout in the head (training only)
    tuned_layers: int = 0  # whisper: the encoder's last layers (and final norm) trained here; the rest stay frozen

    def __post_init__(self) -> None:
        if self.type not in AUDIO_TOWER_TYPES:
            raise MerstreamError(f"config: audio_tower.type must be one of {AUDIO_TOWER_TYPES}, got {self.type!r}")
        if self.type == "whisper" and not (self.package and self.sha256):
            raise MerstreamError("config: a whisper audio_tower needs its package and the sha256 of its model.bin")
        if self.package is not None and not (isinstance(self.package, str) and PACKAGE_NAME.fullmatch(self.package)):
            raise MerstreamError(f"config: audio_tower.package must be a Python package name, got {self.package!r}")
        if self.sha256 is not None:
            if not (isinstance(self.sha256, str) and SHA256.fullmatch(self.sha256)):
                raise MerstreamError(f"config: audio_tower.sha256 must be 64 hexadecimal digits, got {self.sha256!r}")
            self.sha256 = self.sha256.lower()
        for name in ("width", "hidden"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v > 0):
                raise MerstreamError(f"config: audio_tower.{name} must be a positive integer, got {v!r}")
        if not (isinstance(self.tuned_layers, int) and self.tuned_layers >= 0):
            raise MerstreamError(f"config: audio_tower.tuned_layers must be an integer >= 0, got {self.tuned_layers!r}")


@dataclass
class TextTowerConfig:
    """Which tower reads the transcripts (the label encoder stays ``ModelConfig.clip``'s text tower).

    ``clip``: the CLIP text transformer of ``ModelConfig.clip`` on CLIP BPE tokens, as in the MER-CLIP
    paper. ``minilm``: a frozen pretrained BERT sentence encoder (all-MiniLM-L6-v2) shipped in the
    Python package ``package`` (its ``model/model.safetensors`` checked against ``sha256``), run in
    onnxruntime by ``merstream.model.text_frontends.MiniLMFrontEnd`` (masked mean of the last layer,
    L2-normalised), then a trained head that projects the sentence vector (``towers.SentenceHead``).
    """

    type: str = "clip"
    package: str | None = None  # minilm: the installed package that ships the model (its model/ directory)
    sha256: str | None = None  # minilm: sha256 of that package's model.safetensors
    width: int = 384  # minilm: sentence vector width
    hidden: int = 512  # minilm: hidden width of the head's MLP (0: a linear head)
    dropout: float = 0.1  # minilm: dropout in the head (training only)
    max_tokens: int = 128  # minilm: longer transcripts are cut to their first max_tokens word pieces

    def __post_init__(self) -> None:
        if self.type not in TEXT_TOWER_TYPES:
            raise MerstreamError(f"config: text_tower.type must be one of {TEXT_TOWER_TYPES}, got {self.type!r}")
        if self.type == "minilm" and not (self.package and self.sha256):
            raise MerstreamError("config: a minilm text_tower needs its package and the sha256 of its model.safetensors")
        if self.package is not None and not (isinstance(self.package, str) and PACKAGE_NAME.fullmatch(self.package)):
            raise MerstreamError(f"config: text_tower.package must be a Python package name, got {self.package!r}")
        if self.sha256 is not None:
            if not (isinstance(self.sha256, str) and SHA256.fullmatch(self.sha256)):
                raise MerstreamError(f"config: text_tower.sha256 must be 64 hexadecimal digits, got {self.sha256!r}")
            self.sha256 = self.sha256.lower()
        if not (isinstance(self.width, int) and self.width > 0):
            raise MerstreamError(f"config: text_tower.width must be a positive integer, got {self.width!r}")
        if not (isinstance(self.hidden, int) and self.hidden >= 0):
            raise MerstreamError(f"config: text_tower.hidden must be an integer >= 0 (0: a linear head), got {self.hidden!r}")
        if not (isinstance(self.max_tokens, int) and 2 <= self.max_tokens <= 512):
            raise MerstreamError(f"config: text_tower.max_tokens must be an integer from 2 to 512, got {self.max_tokens!r}")


@dataclass
class ModelConfig:
    clip: Any = "ViT-B-32"  # open_clip model name, or a full open_clip model config dict
    pretrained: str | None = None  # open_clip pretrained tag or path to a local weights file
    task: str = "emotion"  # "emotion": multi-label sigmoid; "sentiment": softmax
    labels: list[str] = field(default_factory=lambda: list(EMOTIONS_6))
    query_word: str | None = "Emotion"  # None -> the query is the learnable prompt alone
    n_ctx: int = 8  # learnable context vectors per prompt (CoOp)
    fusion_order: list[str] = field(default_factory=lambda: list(MODALITIES))
    cmd_heads: int = 8
    cmd_mlp_ratio: float = 4.0
    cmd_dropout: float = 0.0
    ablation: str = "full"
    threshold: float = 0.6  # emotion: sigmoid(standardised similarity) >= threshold
    logit_scale_init: float = 1 / 0.07  # sentiment: similarity x learnable scale
    num_frames: int = 12  # T_V frames sampled regularly from a window
    window: float = 2.0  # default window length (s) for runs with this model
    hop: float = 1.0  # default hop (s) between window starts
    face_crop: bool = False  # frames: the largest face, grey (FER-style), instead of the whole frame
    mirror_faces: bool = False  # a frame's embedding is the mean of the frame's and its mirror image's
    audio: AudioConfig = field(default_factory=AudioConfig)
    audio_tower: AudioTowerConfig = field(default_factory=AudioTowerConfig)  # default: today's CLIP tower
    text_tower: TextTowerConfig = field(default_factory=TextTowerConfig)  # default: the CLIP text tower

    def __post_init__(self) -> None:
        for name, kind in (("audio", AudioConfig), ("audio_tower", AudioTowerConfig), ("text_tower", TextTowerConfig)):
            v = getattr(self, name)
            if isinstance(v, dict):
                unknown = sorted(set(v) - {f.name for f in dataclasses.fields(kind)})
                if unknown:
                    raise MerstreamError(f"config: unknown keys in {name}: {unknown}")
                setattr(self, name, kind(**v))
        self.fusion_order = [m.upper() for m in self.fusion_order]
        if self.task not in TASKS:
            raise MerstreamError(f"config: task must be one of {TASKS}, got {self.task!r}")
        if self.ablation not in ABLATIONS:
            raise MerstreamError(f"config: ablation must be one of {ABLATIONS}, got {self.ablation!r}")
        bad = [m for m in self.fusion_order if m not in MODALITIES]
        if bad or not self.fusion_order or len(set(self.fusion_order)) != len(self.fusion_order):
            raise MerstreamError(
                f"config: fusion_order must be 1-3 distinct modalities of L, V, A, got {self.fusion_order}"
            )
        if not isinstance(self.labels, list) or not all(isinstance(x, str) and x.strip() for x in self.labels):
            raise MerstreamError(f"config: labels must be a list of label names, got {self.labels!r}")
        if not self.labels:
            raise MerstreamError("config: labels must not be empty")
        dupes = duplicate_labels(self.labels)
        if dupes:
            raise MerstreamError(f"config: duplicate labels {dupes}")
        if not isinstance(self.mirror_faces, bool):
            raise MerstreamError(f"config: mirror_faces must be true or false, got {self.mirror_faces!r}")
        if not (isinstance(self.num_frames, int) and self.num_frames > 0):
            raise MerstreamError(f"config: num_frames must be a positive integer, got {self.num_frames!r}")
        if not (math.isfinite(self.window) and math.isfinite(self.hop) and self.window > 0 and self.hop > 0):
            raise MerstreamError(f"config: window and hop must be finite and > 0, got {self.window}, {self.hop}")
        if self.audio_tower.type == "whisper":
            if self.audio.speaker_mean is not None:
                raise MerstreamError("config: audio.speaker_mean (speaker normalisation of log-Mel images) does not "
                                     "apply to a whisper audio_tower; remove it")
            if self.audio.segment_seconds > WHISPER_MAX_SECONDS:
                raise MerstreamError(f"config: a whisper audio_tower hears at most {WHISPER_MAX_SECONDS:g} s per segment, "
                                     f"got audio.segment_seconds {self.audio.segment_seconds:g}")

    @property
    def modalities(self) -> list[str]:
        return list(self.fusion_order)

    def to_dict(self) -> dict:
        """The config as JSON-ready data. Options added after models were built (``WRITTEN_WHEN_SET``)
        are left out at their default, so that rebuilding such a model writes the same files (and the
        same weights sha256) as the build that shipped it, and export caches keep their keys."""
        d = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.name in WRITTEN_WHEN_SET and d[f.name] == f.default:
                del d[f.name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise MerstreamError(f"config: unknown keys {unknown}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(read_json_object(path, "model config"))


# options added after shipped models were built (those models use the options' defaults)
WRITTEN_WHEN_SET = ("mirror_faces",)


def duplicate_labels(labels: list[str]) -> list[str]:
    """The labels named more than once, sorted."""
    return sorted({x for x in labels if list(labels).count(x) > 1})


def read_json_object(path: str | Path, what: str) -> dict:
    """A JSON object from a file; missing / invalid / not-an-object are one-line errors."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise MerstreamError(f"{what} not found: {p}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MerstreamError(f"{what} {p} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise MerstreamError(f"{what} {p} must hold a JSON object")
    return d


MIN_WINDOW_SECONDS = 0.1  # --window / --hop: shorter windows hold no frame or word worth scoring
MAX_WINDOW_SECONDS = 30.0  # and longer ones would not fit the live audio ring (LiveOptions.audio_capacity)


@dataclass
class StreamConfig:
    """How media is cut into scored windows."""

    window: float = 2.0  # seconds per window
    hop: float = 1.0  # seconds between window starts
    text_left_context: float = 0.0  # seconds of earlier words added to a window's transcript

    @classmethod
    def for_model(cls, cfg: "ModelConfig", window: float | None = None, hop: float | None = None) -> "StreamConfig":
        """``window`` / ``hop`` as given, else the model's defaults."""
        return cls(window=cfg.window if window is None else window, hop=cfg.hop if hop is None else hop)

    def __post_init__(self) -> None:
        for name, v in (("--window", self.window), ("--hop", self.hop)):
            if not MIN_WINDOW_SECONDS <= v <= MAX_WINDOW_SECONDS:  # NaN fails too
                raise MerstreamError(f"{name} must be between {MIN_WINDOW_SECONDS:g} and {MAX_WINDOW_SECONDS:g} seconds (got {v:g})")
        if self.text_left_context < 0:
            raise MerstreamError("text_left_context must be >= 0")
