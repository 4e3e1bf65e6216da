"""The library API: score a media file in a few lines, as `merstream file` does.

    import merstream

    run = merstream.score_file("talk.mp4", out_dir="timeline")
    for w in run.results:  # merstream.engine.windows.WindowResult, one per window
        print(w.start, w.end, w.top, w.scores)

The timeline files (JSONL, CSV, PNG) are written as by the command; ``run`` (a
:class:`merstream.run_file.FileRun`) holds the windows, counters and timings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .run_file import FileRun


def score_file(
    path: str | Path,
    *,
    out_dir: str | Path = ".",
    model: str | None = None,
    labels: list[str] | None = None,
    asr: bool = True,
    window: float | None = None,
    hop: float | None = None,
    plot: bool = True,
    backend: str = "auto",
    language: str = "en",
    audio_track: int | None = None,
    on_note: Callable[[str], None] | None = None,
) -> FileRun:
    """Score one video or audio file window by window (the embedded model unless ``model`` names a
    checkpoint or an ONNX export). Bad input raises :class:`merstream.errors.MerstreamError`."""
    from .asr import Transcriber, is_english, language_note
    from .config import StreamConfig
    from .errors import MerstreamError
    from .media import probe
    from .models import resolve_scorer
    from .run_file import score_file as run

    note = on_note or (lambda msg: None)
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise MerstreamError(f"path must name a media file (got {path!r})")
    if labels is not None and (isinstance(labels, str) or not isinstance(labels, (list, tuple)) or not labels
                               or not all(isinstance(x, str) and x.strip() for x in labels)):
        raise MerstreamError(f"labels must be a non-empty list of label names (got {labels!r})")
    for name, value in (("window", window), ("hop", hop)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise MerstreamError(f"{name} must be a number of seconds (got {value!r})")
    if backend not in ("auto", "torch", "onnx"):
        raise MerstreamError(f"backend must be auto, torch or onnx (got {backend!r})")
    if not is_english(language) and asr:
        note(language_note(language))
        asr = False
    probe(path, audio_track)
    scorer = resolve_scorer(model, [x.strip() for x in labels] if labels else None, backend=backend, on_note=note)
    stream = StreamConfig.for_model(scorer.cfg, window, hop)
    transcriber = Transcriber() if asr and "L" in scorer.modalities else None
    return run(path, scorer, transcriber, stream, Path(out_dir), plot=plot, on_note=note, audio_track=audio_track)
