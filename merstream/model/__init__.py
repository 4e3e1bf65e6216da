from .checkpoint import load_checkpoint, read_config, save_checkpoint
from .mer_clip import MerClip, standardise

__all__ = ["MerClip", "standardise", "load_checkpoint", "read_config", "save_checkpoint"]
