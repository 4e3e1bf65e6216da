"""merstream: real-time multimodal emotion recognition (MER-CLIP) from video, audio and speech."""

__version__ = "0.1.0"
