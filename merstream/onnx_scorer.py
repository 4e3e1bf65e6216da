"""The onnxruntime backend of the Scorer interface: scores with an export from `merstream export`.

The directory's manifest and the sha256 of every file are checked on load; one InferenceSession
per graph is created once and reused, inputs are run in batches. New labels are embedded at run
time with the exported label encoder (``set_labels``), so ``--labels`` works without re-exporting.

Execution providers: TensorRT (when its EP and the TensorRT runtime library are present), CUDA
(when the installed onnxruntime has it), CPU otherwise; ``.provider`` is the one in use.
Packaging: merstream depends on the CPU ``onnxruntime`` wheel (faster-whisper needs it). The GPU
build is a swap, because both wheels install the same ``onnxruntime/`` package::

    pip uninstall -y onnxruntime && pip install onnxruntime-gpu
"""

from __future__ import annotations

import ctypes.util
import threading
from pathlib import Path

import numpy as np

from .config import ZERO_SHOT_TEMPLATES
from .errors import MerstreamError
from .model_card import ModelCard
from .onnx_manifest import Manifest, read_manifest, verified_path
from .scorer import Scorer, check_labels
from .tokenizer import ClipTokenizer

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
SHORT = {v: k for k, v in PROVIDERS.items()}
GPU_SWAP = "pip uninstall -y onnxruntime && pip install onnxruntime-gpu"


def _ort():
    import onnxruntime

    return onnxruntime


def torch_sees_cuda() -> bool:
    """Whether torch can use a CUDA GPU (``merstream doctor`` only: it imports torch)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def nvidia_gpu_present() -> bool:
    """An NVIDIA driver with a device is loaded (a file check: no torch, no CUDA initialisation)."""
    return Path("/proc/driver/nvidia/version").exists() and any(Path("/dev").glob("nvidia[0-9]*"))


def provider_note() -> str | None:
    """A hint when an NVIDIA GPU is present but the installed onnxruntime is the CPU build."""
    if "CUDAExecutionProvider" in _ort().get_available_providers() or not nvidia_gpu_present():
        return None
    return f"a CUDA GPU is present but onnxruntime is the CPU build; for GPU scoring run: {GPU_SWAP}"


def provider_list(requested: list[str] | None) -> list:
    """The provider list for InferenceSession: requested ones (short or full names) or auto."""
    available = _ort().get_available_providers()
    if requested:
        full = [PROVIDERS.get(p.strip().lower(), p.strip()) for p in requested]
        for p in full:
            if p not in available:
                hint = f"; install the GPU build: {GPU_SWAP}" if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else ""
                raise MerstreamError(
                    f"onnxruntime execution provider {SHORT.get(p, p)!r} is not available "
                    f"(this onnxruntime has: {', '.join(SHORT.get(a, a) for a in available)}){hint}"
                )
        chosen = list(dict.fromkeys(full))
    else:
        chosen = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        if "TensorrtExecutionProvider" in available and ctypes.util.find_library("nvinfer"):
            chosen.insert(0, "TensorrtExecutionProvider")
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")  # nodes a GPU provider does not support
    out = []
    for p in chosen:
        if p == "TensorrtExecutionProvider":
            cache = Path.home() / ".cache" / "merstream" / "tensorrt"
            cache.mkdir(parents=True, exist_ok=True)
            out.append((p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}))
        else:
            out.append(p)
    return out


class OnnxScorer(Scorer):
    """Scores with the ONNX graphs of an export directory (numpy in, numpy out)."""

    name = "onnx"

    def __init__(self, export_dir: str | Path, labels: list[str] | None = None, providers: list[str] | None = None,
                 batch_size: int = 32, threads: int | None = None):
        # the manifest is checked now, each other file against its sha256 when its session is made: the
        # head and the frame / audio towers at once, the text graphs and the tokenizer when first used
        # (a run without ASR or new labels never needs them: half of the small model's export)
        self.manifest: Manifest = read_manifest(export_dir, verify=False)
        m = self.manifest
        self.cfg = m.config
        self.mode = m.mode
        self.precision = m.precision
        self.embed_dim = m.embed_dim
        self.image_size = m.image_size
        self.context_length = m.context_length
        self.batch_size = batch_size
        self.graphs = dict(m.graphs)
        text = self.graphs.get("text")
        self.trim_tokens = bool(text is not None and isinstance(text.inputs[0]["shape"][1], str))  # exports before v0.1 had 77
        self.provider_note = provider_note() if not providers else None
        wanted = provider_list(providers)
        names = [p if isinstance(p, str) else p[0] for p in wanted]
        if self.precision == "fp16" and "CUDAExecutionProvider" not in names and "TensorrtExecutionProvider" not in names:
            raise MerstreamError(
                f"{m.directory} is an fp16 export, which needs the CUDA execution provider (the CPU provider "
                f"cannot run it); use a fp32/int8 export on CPU, or on a CUDA machine: {GPU_SWAP}"
            )
        ort = _ort()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only
        # no busy-waiting between ops: faster-whisper runs beside the encoders (file: in a
        # background thread; live: the ASR thread), and spinning threads take its cores
        # (measured: a 64 s file 0.3-0.4 s faster in all; one encoder call alone ~8 % slower)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads  # batch workers split the cores between them
        self._session_args = (opts, wanted)
        self._lock = threading.Lock()
        self.sessions: dict = {}  # graph name -> InferenceSession, created on first use (see session())
        eager = [g for g in ("head", "vision", "audio") if g in self.graphs] or list(self.graphs)[:1]
        for g in eager:
            self.session(g)
        used = self.sessions[eager[0]].get_providers()[0] if eager else "CPUExecutionProvider"
        self.provider = SHORT.get(used, used)
        if providers and used != names[0]:
            raise MerstreamError(
                f"onnxruntime could not start the {SHORT.get(names[0], names[0])} provider (it fell back to "
                f"{self.provider}); check the CUDA / cuDNN / TensorRT libraries"
            )
        if self.precision == "fp16" and self.provider == "cpu":
            raise MerstreamError(f"{m.directory} is an fp16 export but the CUDA provider did not start (fell back to CPU)")
        if not providers and self.provider == "cpu" and any(n != "CPUExecutionProvider" for n in names):
            self.provider_note = "the GPU provider of onnxruntime did not start: scoring on CPU"
        self.card = m.extra.get("model_card") or ModelCard(
            m.directory.name, m.extra.get("weights_sha256"), "unknown: the export carries no model card", None).to_json()
        self._tokenizer_loaded: ClipTokenizer | None = None
        self._stored = {key: np.load(verified_path(m, f)).astype(np.float32) for key, f in m.label_files.items()}
        self.set_labels(labels or list(m.labels))

    def session(self, graph: str):
        """The onnxruntime session of one graph, created (after its sha256 check) on first use."""
        with self._lock:
            if graph not in self.sessions:
                spec = self.graphs.get(graph)
                if spec is None:
                    raise MerstreamError(f"the export {self.manifest.directory} has no {graph} graph")
                path = verified_path(self.manifest, spec.file)
                opts, providers = self._session_args
                try:
                    self.sessions[graph] = _ort().InferenceSession(str(path), sess_options=opts, providers=providers)
                except Exception as e:  # onnxruntime raises its own exception types
                    first = (str(e).splitlines() or [""])[0]
                    raise MerstreamError(f"onnxruntime cannot load {path}: {first}") from None
            return self.sessions[graph]

    @property
    def tokenizer(self) -> ClipTokenizer:
        """The export's tokenizer (tokenizer.json), loaded on first use."""
        with self._lock:
            if self._tokenizer_loaded is None:
                if not self.manifest.tokenizer:
                    raise MerstreamError(f"the export {self.manifest.directory} has no tokenizer (it has no text graph)")
                self._tokenizer_loaded = ClipTokenizer(verified_path(self.manifest, self.manifest.tokenizer))
            return self._tokenizer_loaded

    # ---- labels ------------------------------------------------------------------------------
    @property
    def can_embed_labels(self) -> bool:
        if self.mode == "zero-shot":
            return "text" in self.graphs
        return self.manifest.use_le and "label_encoder" in self.graphs

    def embed_labels(self, labels: list[str]) -> dict[str, np.ndarray]:
        """Label embeddings through the exported graph: {"": [K, D]} or zero-shot {"L", "V"}."""
        if not self.can_embed_labels:
            raise MerstreamError(f"the export {self.manifest.directory} has no label encoder graph: its labels are fixed")
        tok = self.tokenizer
        if self.mode == "zero-shot":
            return {
                m: self._run_batched("text", tok.text_tokens([ZERO_SHOT_TEMPLATES[m].format(x) for x in labels], self.context_length))
                for m in ("L", "V")
            }
        tokens = tok.prompt_tokens(labels, self.cfg.n_ctx, self.context_length)
        return {"": self._run_batched("label_encoder", tokens)}

    def text_tokens(self, texts):
        return self.tokenizer.text_tokens(texts, self.context_length)

    def set_labels(self, labels: list[str]) -> None:
        labels = list(labels)
        check_labels(labels, "sentiment" if self.mode == "zero-shot" else self.cfg.task, self.manifest.use_le)
        if labels == list(self.manifest.labels) and (self._stored or not self.manifest.use_le and self.mode == "mer-clip"):
            self.label_emb = dict(self._stored)
        elif self.mode == "mer-clip" and not self.manifest.use_le:
            raise MerstreamError("this model has no label encoder (ablation no_le): its labels are fixed")
        else:
            self.label_emb = self.embed_labels(labels)
        self.labels = labels

    # ---- encoders ----------------------------------------------------------------------------
    def _run_batched(self, graph: str, x: np.ndarray) -> np.ndarray:
        sess = self.session(graph)
        name = sess.get_inputs()[0].name
        dtype = np.int64 if sess.get_inputs()[0].type == "tensor(int64)" else np.float32
        x = np.asarray(x, dtype=dtype)
        if len(x) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        outs = [sess.run(None, {name: np.ascontiguousarray(x[i : i + self.batch_size])})[0] for i in range(0, len(x), self.batch_size)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def encode_frames(self, x):
        return self._run_batched("vision", x)

    def encode_audio(self, x):
        return self._run_batched("audio", x)

    def encode_text(self, tokens):
        return self._run_batched("text", tokens)

    # ---- fusion and scores -------------------------------------------------------------------
    def score(self, pooled, present):
        mods = ["L", "V"] if self.mode == "zero-shot" else self.modalities
        batch = len(next(iter(pooled.values())))
        if batch == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        feed = {}
        for m in mods:
            feed[f"x_{m}"] = np.asarray(pooled[m], dtype=np.float32) if m in pooled else np.zeros((batch, self.embed_dim), np.float32)
        feed["present"] = np.stack(
            [np.asarray(present[m], dtype=np.float32) if m in present and m in pooled else np.zeros(batch, np.float32) for m in mods], axis=1
        )
        for key, emb in self.label_emb.items():
            feed[f"label_emb_{key}" if key else "label_emb"] = emb
        return self.session("head").run(None, feed)[0]

    def predict(self, probs):
        if self.mode == "zero-shot":
            out = np.zeros_like(probs, dtype=bool)
            out[np.arange(len(probs)), probs.argmax(-1)] = True
            return out
        return super().predict(probs)
