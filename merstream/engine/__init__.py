"""The streaming engine. ``Engine`` (which needs torch) is imported on first use, so light modules
(sources, buffers, windows) load without it."""

from .windows import Counters, Window, WindowResult, window_count

__all__ = ["Engine", "Counters", "Window", "WindowResult", "window_count"]


def __getattr__(name: str):
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
