"""The merstream command line: `merstream file`, `merstream export`, `merstream live`."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .cli_app import app, console, fail, note, parse_labels, speech_off
from .errors import Interrupted, MerstreamError

OUTPUT_SUFFIXES = (".jsonl", ".csv", ".png")  # `merstream file -o NAME.jsonl`: the timeline's own path


@app.command("file")
def file_cmd(
    paths: list[str] = typer.Argument(..., help="Video or audio file(s), directories or glob patterns to score."),
    out: Path = typer.Option(Path("."), "--out", "-o", help="Directory for <name>.jsonl, .csv and .png (one input: may be the .jsonl path itself)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint (dir or .safetensors) or ONNX export dir. Default: the embedded model."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated labels to score (any text)."),
    window: Optional[float] = typer.Option(None, help="Window length in seconds (default: the model's, 2)."),
    hop: Optional[float] = typer.Option(None, help="Seconds between window starts (default: the model's, 1)."),
    asr_model: str = typer.Option("tiny.en", "--asr-model", help="faster-whisper model name or local directory."),
    no_asr: bool = typer.Option(False, "--no-asr", help="Skip speech recognition (no language modality)."),
    language: str = typer.Option("en", "--language", help="Language spoken (ISO 639-1 code). The text tower reads English: any other language turns speech recognition off, with a note."),
    clip: Optional[str] = typer.Option(None, "--clip", help="Zero-shot mode: open_clip architecture (e.g. ViT-B-32)."),
    clip_weights: Optional[str] = typer.Option(None, "--clip-weights", help="Zero-shot mode: open_clip pretrained tag or local weights file."),
    backend: str = typer.Option("auto", help="auto: onnxruntime (a checkpoint is exported once to a cache) | torch | onnx (export dir only)."),
    plot: bool = typer.Option(True, help="Write the PNG plot."),
    naive: bool = typer.Option(False, "--naive", help="Benchmark baseline: ASR first, then every window on its own, re-encoding its frames (no cache)."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Batch: worker processes (one model each)."),
    ray: bool = typer.Option(False, "--ray", help="Batch: run the files as Ray tasks (local Ray, or --ray-address)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Batch: address of a running Ray cluster."),
    audio_track: Optional[int] = typer.Option(None, "--audio-track", min=0, help="Audio track N (0-based, as ffmpeg's -map 0:a:N). Default: the track marked default, else the first."),
    report: bool = typer.Option(False, "--report", help="Also write <name>.html: the media player synced with the timeline (batch: plus index.html)."),
    record: Optional[Path] = typer.Option(None, "--record", help="Also write the annotated video (face box, score bars, words, audio kept) to this .mp4 (batch: a folder)."),
):
    """Score media files window by window and write each emotion timeline (JSONL, CSV, PNG)."""
    from .asr import Transcriber
    from .config import StreamConfig
    from .models import resolve_scorer
    from .run_file import score_file
    from .sinks import summary

    no_asr = speech_off(language, no_asr)
    if window is not None or hop is not None:
        StreamConfig(window=2.0 if window is None else window, hop=1.0 if hop is None else hop)  # validate early
    if backend not in ("auto", "torch", "onnx"):
        fail(f"--backend must be auto, torch or onnx (got {backend!r})")
    if ray_address is not None and not ray:
        fail("--ray-address needs --ray")
    from .batch import expand_inputs
    from .media import probe

    files = expand_inputs(paths)
    batch = len(files) > 1 or ray or any(Path(p).is_dir() for p in paths)

    stem = None
    if out.suffix.lower() in OUTPUT_SUFFIXES and not out.is_dir():
        if batch:
            fail(f"--out must be a directory when scoring several files (got {out})")
        out, stem = out.parent, out.stem  # `-o talk.jsonl`: talk.jsonl, talk.csv, talk.png
    if batch:
        from .batch import BatchOptions

        opts = BatchOptions(
            str(out), model, parse_labels(labels), window, hop, asr_model, no_asr, clip, clip_weights, backend, plot,
            threads=max(1, (os.cpu_count() or 1) // workers), naive=naive,  # the workers split the cores
            audio_track=audio_track, report=report, record=None if record is None else str(_record_folder(record)),
        )
        return _batch(files, opts, workers, ray, ray_address)
    path = files[0]
    probe(path, audio_track)  # bad media (or --audio-track) fails here, before any model is loaded
    if record is not None:
        from .annotate import check_record_path

        if record.parent.resolve() == out.resolve():  # --record into the --out folder, which the run makes
            out.mkdir(parents=True, exist_ok=True)
        check_record_path(record, path)
    scorer = resolve_scorer(model, parse_labels(labels), clip, clip_weights, backend, on_note=note)
    if scorer.notice:
        note(scorer.notice)
    stream = StreamConfig.for_model(scorer.cfg, window, hop)
    if stream.hop > stream.window:
        note(f"--hop {stream.hop:g} s is longer than --window {stream.window:g} s: only {stream.window / stream.hop:.1%} "
             f"of the media is scored (the rest falls between windows)")
    transcriber = None if no_asr or "L" not in scorer.modalities else Transcriber(asr_model)
    with Progress(
        TextColumn("[bold]{task.description}[/]"), BarColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
    ) as progress:
        task = progress.add_task("decoding + transcribing", total=None, info="")
        try:
            run = score_file(
                path, scorer, transcriber, stream, out, plot=plot, reuse=not naive, on_note=note, stem=stem, audio_track=audio_track,
                on_start=lambda d: progress.update(task, description="scoring", total=max(d, 0.01)),
                on_window=lambda t, n: progress.update(
                    task, completed=t, info=f"{t:.1f}/{progress.tasks[0].total:.1f} s, {n} windows"
                ),
            )
        except MerstreamError:
            partial = out / f"{stem or path.stem}.partial.jsonl"
            if report and partial.exists():  # what was scored before the error gets its report too
                from .report import write_report

                note(f"report so far: {write_report(partial, path)[0]}")
            raise
    console.print(f"timeline: {run.jsonl}  {run.csv}  ({run.windows} windows)", soft_wrap=True)
    if run.png:
        console.print(f"plot: {run.png}", soft_wrap=True)
    if report:
        from .report import write_report

        console.print(f"report: {write_report(run.jsonl, path)[0]}", soft_wrap=True)
    if record is not None:
        from .annotate import annotate
        from .preprocess import stored_frame_side

        face_side = stored_frame_side(scorer.image_size, True) if scorer.cfg.face_crop else None
        frames = annotate(path, run.results, record, face_side=face_side, audio_track=audio_track)
        console.print(f"video: {record} ({frames} frames)", soft_wrap=True)
    Console().print(f"{path.name}: {run.windows} windows, {run.duration:.1f} s, {run.seconds:.1f} s wall", soft_wrap=True)
    table = Table()
    table.add_column("label")
    table.add_column("top in windows", justify="right")
    table.add_column("mean score", justify="right")
    for lab, n, mean in summary(run.results):
        table.add_row(lab, str(n), f"{mean:.3f}")
    Console().print(table)
    c = run.counters
    console.print(
        f"encoded: {c.frames_encoded} frames ({c.frame_cache_hits} cache hits), "
        f"{c.segments_encoded} audio segments, {c.texts_encoded} transcripts ({c.text_cache_hits} cache hits)",
        soft_wrap=True,
    )


def _record_folder(record: Path) -> Path:
    """Batch --record: a folder for <name>.annotated.mp4 (made if need be)."""
    if record.suffix.lower() in (".mp4", ".mov"):
        fail(f"--record must be a folder when scoring several files (got {record})")
    try:
        record.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"--record: cannot make folder {record}: {e.strerror or e}")
    return record


def _batch(files: list[Path], opts, workers: int, ray: bool, ray_address: str | None):
    import time

    from .batch import run_local, run_ray

    if not ray:
        from .batch import prepare_here

        prepare_here(opts)  # a bad model / labels / ASR model: one error before any file
    t0 = time.perf_counter()
    outcomes = []
    with Progress(
        TextColumn("[bold]batch[/]"), BarColumn(), TextColumn("{task.completed}/{task.total} files"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
    ) as progress:
        task = progress.add_task("batch", total=len(files))
        runner = run_ray(files, opts, ray_address, workers) if ray else run_local(files, opts, workers)
        for o in runner:
            outcomes.append(o)
            progress.advance(task)
            for n in o.notes:
                note(f"{Path(o.path).name}: {n}")
            if not o.ok:
                console.print(f"[bold red]error:[/] {o.error}", soft_wrap=True)
    wall = time.perf_counter() - t0
    media = sum(o.duration for o in outcomes if o.ok)
    table = Table(title=f"{len(files)} files, {workers} worker(s){' on Ray' if ray else ''}: {media:.1f} s of media in {wall:.1f} s")
    for col in ("file", "windows", "media s", "wall s", "status"):
        table.add_column(col)
    for o in sorted(outcomes, key=lambda o: o.path):
        table.add_row(Path(o.path).name, str(o.windows), f"{o.duration:.1f}", f"{o.seconds:.1f}", "ok" if o.ok else "failed")
    Console().print(table)
    console.print(f"throughput: {media / wall:.2f} s of media per s (timelines in {opts.out})", soft_wrap=True)
    if opts.report:
        from .report_index import write_index

        console.print(f"reports: {write_index(Path(opts.out), files, outcomes)}", soft_wrap=True)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise typer.Exit(1)


# the other commands register themselves on `app` (kept apart so each module stays small)
from . import cli_export, cli_live, cli_report, cli_train  # noqa: E402,F401


try:  # typer vendors click; its usage errors are click's UsageError
    from typer._click import exceptions as _click_errors
except ImportError:  # older typer: plain click
    from click import exceptions as _click_errors


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def _command() -> str | None:
    """The subcommand on the command line (``file``, ``train``, ...), if any."""
    return next((a for a in sys.argv[1:] if not a.startswith("-")), None)


def main() -> None:
    """Entry point: every MerstreamError (and a few library errors) is one line and exit 1."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupted)
    try:
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except _click_errors.UsageError as e:  # bad option values: one line, like every other error
        if type(e).__name__ == "NoArgsIsHelpError" and e.ctx is not None:
            try:
                print(e.ctx.get_help())
            except BrokenPipeError:
                pass
            sys.exit(0)
        hint = f" (see: merstream {e.ctx.command_path.split(' ', 1)[1] + ' ' if e.ctx and ' ' in e.ctx.command_path else ''}--help)"
        console.print(f"[bold red]error:[/] {e.format_message()}{hint}", soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        console.print("interrupted")
        sys.exit(130)
    except MerstreamError as e:
        console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
        sys.exit(1)
    except (KeyboardInterrupt, Interrupted) as e:
        signum = getattr(e, "signum", signal.SIGINT)
        kept = {"file": ": every window scored so far is in the timeline",
                "live": ": every window scored so far is in the timeline",
                "train": ": every finished epoch is in last.pt (--resume continues)"}
        console.print(f"interrupted ({signal.Signals(signum).name}){kept.get(_command(), '')}")
        sys.exit(128 + signum)
    except OSError as e:  # the file system said no (permissions, a directory where a file goes, ...)
        if os.environ.get("MERSTREAM_DEBUG"):
            raise
        names = [str(f) for f in (getattr(e, "filename", None), getattr(e, "filename2", None)) if f]
        where = f": {' -> '.join(names)}" if names else ""
        console.print(f"[bold red]error:[/] {e.strerror or e}{where}", soft_wrap=True)
        sys.exit(1)
    except Exception as e:  # a bug: still one line, traceback on request
        if os.environ.get("MERSTREAM_DEBUG"):
            raise
        first = (str(e).splitlines() or [""])[0]
        console.print(f"[bold red]error:[/] unexpected {type(e).__name__}: {first} (MERSTREAM_DEBUG=1 shows the traceback)", soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
