"""Files that appear whole or not at all."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def replaced_whole(dst: str | Path) -> Iterator[Path]:
    """A temporary path beside ``dst`` (same extension) to write to; when the block ends normally it
    replaces ``dst`` in one step, so an interrupted write leaves the previous file, never half of one.
    The temporary file does not outlive the block, and is this process's and thread's own, so two
    writers of the same file (batch workers filling a shared cache) never write into one another's."""
    dst = Path(dst)
    tmp = dst.with_name(f"{dst.stem}.tmp-{os.getpid()}-{threading.get_ident()}{dst.suffix}")
    try:
        yield tmp
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
