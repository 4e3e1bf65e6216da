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
    return ModelCard(report.get("model", name), weights_sha256, f"{use}.{pretrained_part(checkpoint)} Training data: {sets}",
                     bool(restricted))


def pretrained_part(checkpoint: Path) -> str:
    """" Pretrained: ..." for a model with pretrained encoders (from its config), else ""."""
    from .checkpoint_files import read_config
    from .errors import MerstreamError

    try:
        cfg = read_config(checkpoint)
    except MerstreamError:
        return ""
    parts = []
    t = cfg.audio_tower
    if t.type == "whisper":
        tuned = f"; its last {t.tuned_layers} layers tuned here (derived weights, same licence)" if t.tuned_layers else ""
        parts.append(f"the Whisper encoder of the package {t.package} ({package_licence(t.package)}; "
                     f"model.bin sha256 {t.sha256[:12]}...){tuned}")
    t = cfg.text_tower
    if t.type == "minilm":
        card = model_card_licence(t.package)
        parts.append(f"the frozen sentence encoder of the package {t.package} ({package_licence(t.package)}"
                     f"{f'; its model card: {card}' if card else ''}; model.safetensors sha256 {t.sha256[:12]}...)")
    return f" Pretrained: {'; '.join(parts)}." if parts else ""


def model_card_licence(package: str) -> str | None:
    """The ``license:`` of the model card (``model/README.md`` front matter) a package bundles, if any."""
    from .model.frontends import package_dir

    try:
        text = (package_dir(package) / "model" / "README.md").read_text(errors="replace")
    except Exception:  # not installed, no card: the package's own metadata is all there is
        return None
    head = text.split("---")[1] if text.startswith("---") and text.count("---") >= 2 else ""
    for line in head.splitlines():
        if line.strip().lower().startswith("license:"):
            return line.split(":", 1)[1].strip() + " licence"
    return None


def package_licence(package: str) -> str:
    """The licence an installed package declares (its metadata), e.g. "MIT licence"."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        m = metadata(package)
    except PackageNotFoundError:
        return "licence unknown: package not installed"
    text = m.get("License-Expression") or m.get("License") or ""
    if not text or len(text) > 60:  # some packages put the whole licence text here
        text = next((c.split("::")[-1].strip() for c in m.get_all("Classifier") or [] if c.startswith("License ::")), "")
    return f"{text} licence" if text else "licence not declared"
