"""Where merstream keeps what it can rebuild (exports of checkpoints, the frozen Whisper layers'
graph, remembered file hashes): ``$MERSTREAM_CACHE``, else ``~/.cache/merstream``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("MERSTREAM_CACHE") or Path.home() / ".cache" / "merstream")
