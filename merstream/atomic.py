"""Files that appear whole or not at all."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def replaced_whole(dst: str | Path) -> Iterator[Path]:
    """A temporary path beside ``dst`` (same extension) to write to; when the block ends normally it
    replaces ``dst`` in one step, so an interrupted write leaves the previous file, never half of one.
    The temporary file does not outlive the block."""
    dst = Path(dst)
    tmp = dst.with_name(dst.stem + ".tmp" + dst.suffix)
    try:
        yield tmp
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
