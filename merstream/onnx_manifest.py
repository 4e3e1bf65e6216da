"""The ``manifest.json`` of an ONNX export directory: what was exported, how, and checksums.

Written by ``export/onnx_export.py`` (last, so a half-written export has no manifest) and read by
:class:`merstream.onnx_scorer.OnnxScorer`, which refuses a directory whose files do not match the
recorded sha256 sums. Layout of an export directory::

    manifest.json        format, model config, labels, threshold, task, precision, opset, graphs,
                         sha256 of every other file
    vision.onnx          frames [N, 3, S, S] float32 -> [N, D]             (modality V)
    audio.onnx           audio front-end outputs [N, *item] -> [N, D]       (modality A: log-Mel images
                         [N, 3, S, S], or Whisper encoder states [N, 100, 384] whose encoder, from
                         the package the config names, is checked by its sha256 in the config)
    text.onnx            token ids [N, C] int64 -> [N, D]                  (modality L; zero-shot labels)
    label_encoder.onnx   label prompt token ids [K, C] int64 -> [K, D]     (learned context baked in)
    head.onnx            x_<m> [B, D], present [B, M], label_emb [K, D] -> probs [B, K]
    labels.npy           label embeddings of the exported label set (zero-shot: labels_V/L.npy)
    tokenizer.json       the text towers' tokenizer (Hugging Face ``tokenizers``; models with text)

Everything the runtime needs is in the directory: scoring it needs numpy and onnxruntime, not torch.
The manifest records its own sha256 (over its other entries), so an edit to it is refused like an
edit to a graph; a manifest of an older format asks for a re-export.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import ModelConfig
from .errors import MerstreamError

MANIFEST = "manifest.json"
FORMAT = "merstream-onnx"
VERSION = 2  # 2: tokenizer.json, merstream_version, manifest_sha256
MODES = ("mer-clip", "zero-shot")
PRECISIONS = ("fp32", "fp16", "int8")


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class GraphSpec:
    file: str
    inputs: list[dict]  # {"name", "shape" (ints and axis names), "dtype"}
    outputs: list[dict]
    precision: str = "fp32"

    def input_names(self) -> list[str]:
        return [i["name"] for i in self.inputs]


@dataclass
class Manifest:
    directory: Path
    mode: str
    config: ModelConfig
    labels: list[str]
    precision: str
    opset: int
    embed_dim: int
    image_size: int
    context_length: int
    use_le: bool
    graphs: dict[str, GraphSpec]
    label_files: dict[str, str]  # "" (mer-clip) or "V"/"L" (zero-shot) -> .npy file
    files: dict[str, str]  # file name -> sha256
    tokenizer: str | None = None  # tokenizer.json (models with a text tower or label encoder)
    extra: dict = field(default_factory=dict)

    def path(self, name: str) -> Path:
        return self.directory / name


def read_manifest(directory: str | Path, verify: bool = True) -> Manifest:
    """Load and check an export directory; every problem is one MerstreamError line."""
    d = Path(directory).expanduser()
    if not d.exists():
        raise MerstreamError(f"ONNX export directory not found: {d}")
    if not d.is_dir():
        raise MerstreamError(f"{d} is not an ONNX export directory (not a directory)")
    mf = d / MANIFEST
    if not mf.exists():
        raise MerstreamError(f"{d} is not an ONNX export directory: no {MANIFEST} (run `merstream export --out {d}`)")
    try:
        raw = json.loads(mf.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MerstreamError(f"{mf} is corrupt: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise MerstreamError(f"{mf} is not a merstream ONNX manifest (format must be {FORMAT!r})")
    if isinstance(raw.get("version"), int) and raw["version"] < VERSION:
        raise MerstreamError(f"{d} was exported by an older merstream (manifest version {raw['version']}): "
                             f"re-export it with `merstream export`")
    if raw.get("version") != VERSION:
        raise MerstreamError(f"{mf}: manifest version {raw.get('version')!r} is not supported (this merstream reads {VERSION})")
    if raw.get("manifest_sha256") != manifest_digest(raw):
        raise MerstreamError(f"{mf} was edited after export (its sha256 does not match): re-run `merstream export`")
    try:
        graphs = {k: GraphSpec(**v) for k, v in raw["graphs"].items()}
        m = Manifest(
            directory=d,
            mode=raw["mode"],
            config=ModelConfig.from_dict(raw["config"]),
            labels=list(raw["labels"]),
            precision=raw["precision"],
            opset=int(raw["opset"]),
            embed_dim=int(raw["embed_dim"]),
            image_size=int(raw["image_size"]),
            context_length=int(raw["context_length"]),
            use_le=bool(raw["use_le"]),
            graphs=graphs,
            label_files=dict(raw["label_files"]),
            files=dict(raw["files"]),
            tokenizer=raw.get("tokenizer"),
            extra={k: v for k, v in raw.items() if k not in _KNOWN},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise MerstreamError(f"{mf} is corrupt: missing or malformed entry {e}") from None
    if m.mode not in MODES or m.precision not in PRECISIONS:
        raise MerstreamError(f"{mf} is corrupt: mode {m.mode!r} / precision {m.precision!r} unknown")
    listed = {g.file for g in graphs.values()} | set(m.label_files.values()) | ({m.tokenizer} if m.tokenizer else set())
    unlisted = sorted(listed - set(m.files))
    if unlisted:
        raise MerstreamError(f"{mf} is corrupt: no sha256 recorded for {unlisted[0]}")
    if verify:
        verify_files(m)
    return m


def verify_files(m: Manifest) -> None:
    for name in m.files:
        verified_path(m, name)


def verified_path(m: Manifest, name: str) -> Path:
    """The path of one file of the export, after checking it against its sha256 in the manifest."""
    p = m.directory / name
    if Path(name).name != name:
        raise MerstreamError(f"{m.directory / MANIFEST} is corrupt: file entry {name!r} is not a plain file name")
    if not p.is_file():
        raise MerstreamError(f"ONNX export {m.directory} is incomplete: {name} is missing")
    if sha256_file(p) != m.files[name]:
        raise MerstreamError(
            f"ONNX export {m.directory}: {name} does not match its sha256 in {MANIFEST} "
            f"(file corrupt or modified; re-run `merstream export`)"
        )
    return p


def manifest_digest(raw: dict) -> str:
    """sha256 of a manifest's entries other than ``manifest_sha256`` itself (canonical JSON)."""
    body = {k: v for k, v in raw.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def write_manifest(directory: Path, data: dict) -> Path:
    """Add checksums of the listed files and write manifest.json (the last file of an export)."""
    from . import __version__

    names = {g["file"] for g in data["graphs"].values()} | set(data["label_files"].values())
    if data.get("tokenizer"):
        names.add(data["tokenizer"])
    data = {"format": FORMAT, "version": VERSION, "merstream_version": __version__, **data,
            "files": {n: sha256_file(directory / n) for n in sorted(names)}}
    data["manifest_sha256"] = manifest_digest(data)
    path = directory / MANIFEST
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


_KNOWN = {
    "format", "version", "mode", "config", "labels", "precision", "opset", "embed_dim", "image_size",
    "context_length", "use_le", "graphs", "label_files", "files", "tokenizer", "manifest_sha256",
}
