"""merstream: real-time multimodal emotion recognition (MER-CLIP) from video, audio and speech."""

__version__ = "0.1.0"


def __getattr__(name: str):  # `merstream.score_file` without importing the runtime on `import merstream`
    if name == "score_file":
        from .api import score_file

        return score_file
    raise AttributeError(f"module 'merstream' has no attribute {name!r}")
