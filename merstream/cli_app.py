"""The `merstream` Typer application and the console helpers that every command module shares.

Kept apart from :mod:`merstream.cli` so that command modules register on one ``app`` however the
CLI is started (``merstream``, ``python -m merstream`` or ``python -m merstream.cli``).
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

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
        fail("--labels needs label names, comma-separated (e.g. 'happy,sad,angry')")
    return out


def speech_off(language: str, no_asr: bool) -> bool:
    """--no-asr, or a --language the text tower cannot read (it reads English): then ASR is off.
    ``language`` is a Whisper language code, optionally with a region (en, en-US, en_GB, de, pt-BR)."""
    from .asr import is_english, language_note

    if not is_english(language) and not no_asr:  # an unknown code: MerstreamError, one line from main()
        note(language_note(language))
        return True
    return no_asr


def note(msg: str) -> None:
    console.print(f"[yellow]note:[/] {msg}", soft_wrap=True)
