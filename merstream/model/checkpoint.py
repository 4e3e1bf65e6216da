"""Checkpoints: safetensors weights + the model's JSON config.

A checkpoint is a directory holding ``config.json`` and ``model.safetensors``, or a single
``.safetensors`` file whose metadata carries the config. Loading builds the model from the config
and refuses weights that do not fit it, with a one-line message naming the first differences.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import replaced_whole
from ..checkpoint_files import CONFIG_KEY, read_config, weights_file
from ..config import ModelConfig
from ..errors import MerstreamError
from .mer_clip import MerClip

def save_checkpoint(model: MerClip, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``path/model.safetensors`` + ``path/config.json`` (or one .safetensors file)."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {CONFIG_KEY: json.dumps(model.cfg.to_dict())}
    if extra:
        meta.update({k: json.dumps(v) for k, v in extra.items()})
    if path.suffix == ".safetensors":
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_whole(path) as tmp:
            save_file(state, str(tmp), metadata=meta)
        return path
    path.mkdir(parents=True, exist_ok=True)
    with replaced_whole(path / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata=meta)
    model.cfg.save(path / "config.json")
    return path


def check_state(model: MerClip, state: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs config {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (first: {shapes[0]})")
    if missing:
        problems.append(f"{len(missing)} tensors missing (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (first: {unexpected[0]})")
    if problems:
        raise MerstreamError(f"weights in {source} do not match the model config: " + "; ".join(problems))


def load_checkpoint(path: str | Path, cfg: ModelConfig | None = None) -> MerClip:
    """Build the model from its config (or ``cfg``) and load the weights, checking they match."""
    path = Path(path)
    cfg = cfg or read_config(path)
    f = weights_file(path)
    try:
        state = load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise MerstreamError(f"cannot read model file {f}: not a safetensors checkpoint ({e})") from None
    model = MerClip(cfg)
    check_state(model, state, str(f))
    model.load_state_dict(state)
    return model.eval()
