"""A checkpoint's files and config, read without torch (the serving path and the export cache key).

A checkpoint is a directory holding ``config.json`` and ``model.safetensors``, or a single
``.safetensors`` file whose metadata carries the config (key ``merstream_config``).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

from .config import ModelConfig
from .errors import MerstreamError

CONFIG_KEY = "merstream_config"


def weights_file(path: Path) -> Path:
    if path.is_dir():
        f = path / "model.safetensors"
        if not f.exists():
            raise MerstreamError(f"checkpoint directory {path} has no model.safetensors")
        return f
    if not path.exists():
        raise MerstreamError(f"model not found: {path}")
    return path


def read_config(path: str | Path) -> ModelConfig:
    """The model config of a checkpoint (config.json beside it, else safetensors metadata)."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").exists():
        return ModelConfig.load(path / "config.json")
    f = weights_file(path)
    try:
        with safe_open(str(f), framework="numpy") as sf:
            meta = sf.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise MerstreamError(f"cannot read model file {f}: not a safetensors checkpoint ({e})") from None
    if CONFIG_KEY not in meta:
        raise MerstreamError(f"model file {f} carries no merstream config (and no config.json beside it)")
    return ModelConfig.from_dict(json.loads(meta[CONFIG_KEY]))
