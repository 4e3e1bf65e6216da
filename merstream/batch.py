"""Batch scoring: many files, N worker processes on one machine (each loads the model once).

For many machines, run one `merstream file` batch per machine on a shard of the inputs, or use
the Ray mode (`--ray`), which sends the same per-file function to a Ray cluster.
"""

from __future__ import annotations

import glob
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator

from .errors import MerstreamError
from .media import is_url

MEDIA_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".flv", ".m4v", ".ts", ".mts", ".wav", ".flac", ".mp3", ".m4a",
                  ".ogg", ".opus"}


def expand_inputs(items: list[str]) -> list[Path]:
    """Files, directories (their media files, sorted) and glob patterns -> a de-duplicated list."""
    out: list[Path] = []
    for item in items:
        if is_url(item):  # a Path would mangle it into a file name ("http:/host/x.mp4")
            raise MerstreamError(f"{item} is a stream address: `merstream file` scores files; "
                                 f"score a stream with `merstream live --camera {item}`")
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in MEDIA_SUFFIXES)
        elif any(ch in item for ch in "*?[") and not p.exists():
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                raise MerstreamError(f"no files match {item!r}")
            out += matches
        else:
            out.append(p)
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    if not unique:
        raise MerstreamError("no media files to score")
    stems: dict[str, Path] = {}
    for p in unique:
        if p.stem in stems:
            raise MerstreamError(f"{stems[p.stem]} and {p} would write the same timeline {p.stem}.jsonl: score them into different --out directories")
        stems[p.stem] = p
    return unique


@dataclass
class BatchOptions:
    out: str
    model: str | None = None
    labels: list[str] | None = None
    window: float | None = None
    hop: float | None = None
    asr_model: str = "tiny.en"
    no_asr: bool = False
    clip: str | None = None
    clip_weights: str | None = None
    backend: str = "auto"
    plot: bool = True
    threads: int = 1  # torch/ORT threads per worker
    naive: bool = False
    audio_track: int | None = None
    report: bool = False  # <name>.html beside each timeline
    record: str | None = None  # a folder for each input's <name>.annotated.mp4


@dataclass
class FileOutcome:
    path: str
    ok: bool
    windows: int = 0
    duration: float = 0.0
    seconds: float = 0.0
    error: str | None = None
    notes: list[str] = field(default_factory=list)


_state: dict = {}


def _load(opts: BatchOptions):
    """Per-process model and recogniser, built once."""
    if "scorer" not in _state:
        import os

        from .asr import Transcriber
        from .config import StreamConfig
        from .models import resolve_scorer

        os.environ["MERSTREAM_AUDIO_THREADS"] = str(max(1, opts.threads))  # a Whisper audio tower's frozen layers

        scorer = resolve_scorer(opts.model, opts.labels, opts.clip, opts.clip_weights, opts.backend, threads=opts.threads)
        if scorer.name.startswith("torch"):  # onnxruntime takes `threads` itself; torch is imported only for torch scorers
            import torch

            torch.set_num_threads(max(1, opts.threads))
        transcriber = None if opts.no_asr or "L" not in scorer.modalities else Transcriber(opts.asr_model, threads=opts.threads)
        stream = StreamConfig.for_model(scorer.cfg, opts.window, opts.hop)
        _state.update(scorer=scorer, transcriber=transcriber, stream=stream)
    return _state["scorer"], _state["transcriber"], _state["stream"]


def score_one(path: str, opts: BatchOptions) -> FileOutcome:
    """Score one file in this process; errors become an outcome, never an exception."""
    from .run_file import score_file

    notes: list[str] = []
    try:
        scorer, transcriber, stream = _load(opts)
        run = score_file(path, scorer, transcriber, stream, Path(opts.out), plot=opts.plot, reuse=not opts.naive,
                         on_note=notes.append, audio_track=opts.audio_track)
        if opts.report or opts.record:
            from .annotate import record_into

            record_into(path, run, opts.report, opts.record, scorer, notes.append, audio_track=opts.audio_track)
        return FileOutcome(path, True, run.windows, run.duration, run.seconds, notes=notes)
    except MerstreamError as e:
        return FileOutcome(path, False, error=str(e), notes=notes)
    except Exception as e:  # a bug in one file must not lose the others
        return FileOutcome(path, False, error=f"unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", notes=notes)


def prepare_here(opts: BatchOptions) -> None:
    """Resolve the model and recogniser in this process first: a bad --model, --labels or
    --asr-model is one error up front, not one per file (and -j 1 reuses them)."""
    _load(opts)


def run_local(files: list[Path], opts: BatchOptions, workers: int) -> Iterator[FileOutcome]:
    """Score files with ``workers`` processes (1: in this process); yields outcomes as they finish.
    On an interrupt, queued files are cancelled and the workers stopped."""
    if workers <= 1:
        for f in files:
            yield score_one(str(f), opts)
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_ignore_sigint)
    try:
        futures = [pool.submit(score_one, str(f), opts) for f in files]
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which cancels the queue and shuts them down."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A Ray cluster address (``host:port`` or ``ray://host:port``; ``auto`` and ``local`` are left to Ray) accepts connections."""
    import socket

    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit():
        raise MerstreamError(f"--ray-address {address!r} is not host:port (or ray://host:port, or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError:
        raise MerstreamError(f"no Ray cluster answers at {address} (cannot connect within {timeout:g} s)") from None


def run_ray(files: list[Path], opts: BatchOptions, address: str | None, workers: int) -> Iterator[FileOutcome]:
    """The same per-file function as Ray tasks (a local Ray instance when no address is given)."""
    try:
        import ray
    except ImportError:
        raise MerstreamError("--ray needs Ray: pip install 'merstream[ray]' (or pip install ray)") from None
    if not ray.is_initialized():
        if address:
            check_reachable(address)  # ray.init would retry an unreachable address for minutes
        kwargs = {"address": address} if address else {"num_cpus": max(1, workers)}
        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
    remote = ray.remote(num_cpus=1)(score_one)
    pending = [remote.remote(str(f), opts) for f in files]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield ray.get(done[0])


__all__ = ["BatchOptions", "FileOutcome", "check_reachable", "expand_inputs", "run_local", "run_ray", "score_one"]
