"""CLIP weights: an open_clip pretrained tag (downloaded once, cached) or a local file.

Model hubs may be unreachable. open_clip's hub call can wait ~50 s before failing, so we check
the cache first (offline), then the network with a short timeout, and fail with one line that
says how to pass a local file instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

import open_clip

from ..errors import MerstreamError
from ..hub import hub_reachable
from .towers import build_clip

def load_clip(arch, pretrained: str | None):
    """An open_clip CLIP of architecture ``arch`` with weights from ``pretrained``.

    ``pretrained`` is None (random init), a path to a local weights file, or an open_clip tag
    (e.g. ``laion2b_s34b_b79k``) for a named architecture.
    """
    model = build_clip(arch)
    if pretrained is None:
        return model
    local = Path(pretrained).expanduser()
    if local.exists():
        try:
            open_clip.load_checkpoint(model, str(local))
        except Exception as e:  # torch.load / key errors: report one line
            first = (str(e).splitlines() or [""])[0].split(". ")[0][:160]
            raise MerstreamError(f"cannot load CLIP weights from {local}: not an open_clip weights file for "
                                 f"{arch if isinstance(arch, str) else 'this architecture'} ({type(e).__name__}: {first})") from None
        return model
    if isinstance(arch, dict):
        raise MerstreamError(f"CLIP weights file not found: {pretrained}")
    if pretrained not in open_clip.list_pretrained_tags_by_model(arch):
        raise MerstreamError(
            f"{pretrained!r} is neither a file nor an open_clip pretrained tag for {arch} "
            f"(tags: {', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'})"
        )
    from huggingface_hub import constants as hub_constants

    saved = hub_constants.HF_HUB_OFFLINE  # read by huggingface_hub at import: patch the constant
    hub_constants.HF_HUB_OFFLINE = True  # cache only, instant
    was_disabled = logging.root.manager.disable
    logging.disable(logging.ERROR)  # open_clip logs a cache miss as an error line; it is not one here
    try:
        return open_clip.create_model(arch, pretrained=pretrained)
    except Exception:
        pass
    finally:
        hub_constants.HF_HUB_OFFLINE = saved
        logging.disable(was_disabled)
    if not hub_reachable():
        raise MerstreamError(
            f"cannot download CLIP weights {arch}/{pretrained}: no network (the model hub is unreachable). "
            f"Download them on a connected machine and pass the file: --clip-weights PATH"
        )
    try:
        return open_clip.create_model(arch, pretrained=pretrained)  # hub download shows a progress bar
    except Exception as e:
        raise MerstreamError(f"downloading CLIP weights {arch}/{pretrained} failed: {str(e).splitlines()[0]}") from None
