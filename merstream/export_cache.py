"""ONNX is the runtime's default engine: a checkpoint run with ``--backend auto`` is exported once
(fp32, parity-checked) into a cache keyed by the checkpoint's sha256, and later runs reuse it.

Cache: ``$MERSTREAM_CACHE`` or ``~/.cache/merstream``; ``onnx/<sha256[:16]>-fp32/``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .errors import MerstreamError
from .onnx_manifest import sha256_file
from .user_cache import cache_root

EXPORT_FORMAT = "v3"  # bump when the exported graphs change, so stale cached exports are not reused



def cached_export(checkpoint: Path, on_note: Callable[[str], None] | None = None) -> Path:
    """The export directory for ``checkpoint``, exporting it (torch) only on a cache miss: the key
    is computed from the weights' sha256 and the config without importing torch."""
    import hashlib
    import json

    from .checkpoint_files import read_config, weights_file
    from .model_card import card_for_checkpoint

    cfg = read_config(checkpoint)
    weights_sha256 = sha256_file(weights_file(checkpoint))
    digest = hashlib.sha256(weights_sha256.encode())
    digest.update(json.dumps(cfg.to_dict(), sort_keys=True).encode())  # labels, task, ... are baked in
    key = digest.hexdigest()[:16]
    target = cache_root() / "onnx" / f"{key}-fp32-{EXPORT_FORMAT}"
    if (target / "manifest.json").exists():
        return target
    from export import export_model

    from .model.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint, cfg)

    if on_note:
        on_note(f"exporting {checkpoint} to ONNX once (cached in {target})")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        export_model(model, tmp / "export", precision="fp32", check=True, source=str(checkpoint),
                     card=card_for_checkpoint(checkpoint, weights_sha256).to_json())
        try:
            (tmp / "export").rename(target)  # atomic: a concurrent run may have won the race
        except OSError:
            if not (target / "manifest.json").exists():
                raise
    except MerstreamError:
        raise
    except OSError as e:
        raise MerstreamError(f"cannot write the ONNX cache {target.parent}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
