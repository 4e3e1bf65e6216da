"""What a timeline says about the model that scored it: name, weights sha256 and licence.

A checkpoint built by ``training.build_default_model`` has a ``report.json`` beside its weights that
names its training data and which of them are non-commercial; the card is taken from it at export
time and travels in the export's manifest, then into every timeline's meta line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from . import __version__


@dataclass
class ModelCard:
    name: str
    weights_sha256: str | None
    licence: str
    non_commercial: bool | None  # None: not known (no build report)

    def to_json(self) -> dict:
        return {"merstream_version": __version__, **asdict(self)}


def card_for_checkpoint(checkpoint: Path, weights_sha256: str | None = None) -> ModelCard:
    """The card of a checkpoint directory or .safetensors file, from the build report beside it
    (``weights_sha256`` is computed when not given)."""
    checkpoint = Path(checkpoint)
    if weights_sha256 is None:
        from .checkpoint_files import weights_file
        from .onnx_manifest import sha256_file

        weights_sha256 = sha256_file(weights_file(checkpoint))
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    name = checkpoint.name if checkpoint.is_dir() else checkpoint.stem
    try:
        report = json.loads((folder / "report.json").read_text())
        data = dict(report["training_data"])
        restricted = [d for d in report.get("non_commercial", []) if d in data]
    except (OSError, ValueError, KeyError, TypeError):
        return ModelCard(name, weights_sha256, "unknown: no build report (report.json) beside the weights", None)
    sets = "; ".join(f"{k}: {v}" for k, v in data.items())
    use = f"NON-COMMERCIAL use only ({', '.join(restricted)})" if restricted else "no non-commercial training data"
    return ModelCard(report.get("model", name), weights_sha256, f"{use}. Training data: {sets}", bool(restricted))
