"""The MER-CLIP model (torch) and its front ends.

Attributes are imported on first use, so the torch-free parts (``merstream.model.spectrogram``)
can be imported by the serving path without torch or open_clip.
"""

from importlib import import_module

_EXPORTS = {
    "MerClip": "mer_clip", "standardise": "mer_clip",
    "load_checkpoint": "checkpoint", "read_config": "checkpoint", "save_checkpoint": "checkpoint",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
