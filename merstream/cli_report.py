"""`merstream report`: the HTML report of an existing timeline (complete, .partial, or a live one
still being written)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli_app import app, console, note


@app.command("report")
def report_cmd(
    timeline: Path = typer.Argument(..., help="A timeline .jsonl written by merstream file or live."),
    media: Optional[Path] = typer.Option(None, "--media", help="The video or audio to play (default: the timeline's source, as written or beside the timeline)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The report's path (default: the timeline's, with .html)."),
):
    """Write one self-contained HTML page: the media player, the windows' scores, words and a summary."""
    from .report import write_report

    page, m = write_report(timeline, media, out)
    for n in ([m.missing] if m.missing else []) + m.notes:
        note(n)
    console.print(f"report: {page}", soft_wrap=True)
