from .engine import Engine
from .windows import Counters, Window, WindowResult, window_count

__all__ = ["Engine", "Counters", "Window", "WindowResult", "window_count"]
