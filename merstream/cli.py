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

from .errors import Interrupted, MerstreamError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Real-time multimodal emotion recognition (MER-CLIP): video frames, voice and transcript.",
)
console = Console(stderr=True, highlight=False)


@app.callback()
def _root() -> None:
    """Real-time multimodal emotion recognition (MER-CLIP): video frames, voice and transcript."""


def fail(msg: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {msg}", soft_wrap=True)
    raise typer.Exit(code)


def parse_labels(labels: Optional[str]) -> Optional[list[str]]:
    if labels is None:
        return None
    out = [x.strip() for x in labels.split(",") if x.strip()]
    if not out:
        fail("--labels needs at least one label, comma-separated (e.g. 'happy,sad,angry')")
    return out


def note(msg: str) -> None:
    console.print(f"[yellow]note:[/] {msg}", soft_wrap=True)


@app.command("file")
def file_cmd(
    path: Path = typer.Argument(..., help="Video (or audio) file to score."),
    out: Path = typer.Option(Path("."), "--out", "-o", help="Directory for <name>.jsonl, .csv and .png."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint (dir or .safetensors) or ONNX export dir. Default: the embedded model."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated labels to score (any text)."),
    window: Optional[float] = typer.Option(None, help="Window length in seconds (default: the model's, 2)."),
    hop: Optional[float] = typer.Option(None, help="Seconds between window starts (default: the model's, 1)."),
    asr_model: str = typer.Option("tiny.en", "--asr-model", help="faster-whisper model name or local directory."),
    no_asr: bool = typer.Option(False, "--no-asr", help="Skip speech recognition (no language modality)."),
    clip: Optional[str] = typer.Option(None, "--clip", help="Zero-shot mode: open_clip architecture (e.g. ViT-B-32)."),
    clip_weights: Optional[str] = typer.Option(None, "--clip-weights", help="Zero-shot mode: open_clip pretrained tag or local weights file."),
    backend: str = typer.Option("auto", help="auto | torch | onnx"),
    plot: bool = typer.Option(True, help="Write the PNG plot."),
):
    """Score a media file window by window and write its emotion timeline (JSONL, CSV, PNG)."""
    from .asr import Transcriber
    from .config import StreamConfig
    from .models import resolve_scorer
    from .run_file import make_engine, prepare, score_job
    from .sinks import TimelineWriter, summary

    if window is not None or hop is not None:
        StreamConfig(window=2.0 if window is None else window, hop=1.0 if hop is None else hop)  # validate early
    if backend not in ("auto", "torch", "onnx"):
        fail(f"--backend must be auto, torch or onnx (got {backend!r})")
    from .media import probe

    probe(path)  # bad media fails here, before any model is loaded
    scorer = resolve_scorer(model, parse_labels(labels), clip, clip_weights, backend)
    if scorer.notice:
        note(scorer.notice)
    stream = StreamConfig(
        window=scorer.cfg.window if window is None else window, hop=scorer.cfg.hop if hop is None else hop
    )
    transcriber = None if no_asr or "L" not in scorer.modalities else Transcriber(asr_model)
    with console.status("decoding audio and transcribing..."):
        job = prepare(str(path), scorer, transcriber, on_note=note)
    writer = TimelineWriter(out, path.stem, scorer.labels, meta={
        "source": str(path), "model": scorer.notice, "backend": scorer.name, "labels": scorer.labels,
        "window": stream.window, "hop": stream.hop, "task": scorer.cfg.task, "threshold": scorer.cfg.threshold,
    })
    engine = make_engine(job, scorer, stream)
    total = max(job.info.duration, 0.01)
    error = None
    try:
        with Progress(
            TextColumn("[bold]scoring[/]"), BarColumn(), TextColumn("{task.completed:.1f}/{task.total:.1f} s"),
            TextColumn("{task.fields[windows]} windows"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=True,
        ) as progress:
            task = progress.add_task("score", total=total, windows=0)
            for r in score_job(str(path), job, engine, on_progress=lambda t: progress.update(task, completed=min(t, total))):
                writer.write(r)
                progress.update(task, windows=len(writer.results))
    except BaseException as e:
        error = str(e) if isinstance(e, MerstreamError) else f"interrupted ({e or type(e).__name__})"
        raise
    finally:
        writer.close(error=error)
        if writer.results:
            console.print(f"timeline: {writer.jsonl_path}  {writer.csv_path}  ({len(writer.results)} windows)", soft_wrap=True)
    if not writer.results:
        fail(f"{path}: no windows could be scored (no decodable media)")
    if plot:
        writer.plot(title=f"{path.name} — {scorer.name}")
        console.print(f"plot: {writer.png_path}", soft_wrap=True)
    table = Table(title=f"{path.name}: {len(writer.results)} windows, {writer.results[-1].end:.1f} s")
    table.add_column("label")
    table.add_column("top in windows", justify="right")
    table.add_column("mean score", justify="right")
    for lab, n, mean in summary(writer.results):
        table.add_row(lab, str(n), f"{mean:.3f}")
    Console().print(table)
    c = engine.counters
    console.print(
        f"encoded: {c.frames_encoded} frames ({c.frame_cache_hits} cache hits), "
        f"{c.segments_encoded} audio segments, {c.texts_encoded} transcripts ({c.text_cache_hits} cache hits)",
        soft_wrap=True,
    )


# command modules register themselves on `app` (kept apart so each stays small)
from . import cli_export, cli_live, cli_train  # noqa: E402,F401


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def main() -> None:
    """Entry point: every MerstreamError (and a few library errors) is one line and exit 1."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupted)
    try:
        app()
    except MerstreamError as e:
        console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
        sys.exit(1)
    except (KeyboardInterrupt, Interrupted) as e:
        signum = getattr(e, "signum", signal.SIGINT)
        console.print(f"interrupted ({signal.Signals(signum).name}): every window scored so far is in the timeline")
        sys.exit(128 + signum)
    except Exception as e:  # a bug: still one line, traceback on request
        if os.environ.get("MERSTREAM_DEBUG"):
            raise
        first = (str(e).splitlines() or [""])[0]
        console.print(f"[bold red]error:[/] unexpected {type(e).__name__}: {first} (MERSTREAM_DEBUG=1 shows the traceback)", soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
