"""`merstream train` and `merstream eval` (implemented in the ``training`` package)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli_app import app, console, fail, note
from .errors import MerstreamError


@app.command("train")
def train_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Training config JSON (see training/configs/)."),
    manifest: Path = typer.Option(..., "--manifest", help="Dataset manifest (JSONL or CSV) with train/val splits."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: best/ checkpoint, last.pt, history.json."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pt."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override the config's epoch count."),
    init: Optional[str] = typer.Option(None, "--init", help="Start from this checkpoint (e.g. a trained model dir)."),
) -> None:
    """Train a MER-CLIP model on a manifest; selects the best epoch on the val split."""
    try:
        from training.train import TrainConfig, train

        cfg = TrainConfig.load(config)
        if epochs is not None:
            if epochs < 1:
                fail("--epochs must be >= 1")
            cfg.optim.epochs = epochs
        if init is not None:
            cfg.init = init
        result = train(cfg, manifest, out, resume=resume, log=lambda m: console.print(m, soft_wrap=True))
    except MerstreamError as e:
        fail(str(e))
    if result.rank != 0:  # torchrun: rank 0 reports
        return
    if result.best_value is None:
        note(f"no val split in {manifest}: kept the last epoch")
        console.print(f"checkpoint: {result.out / 'best'} (epoch {result.best_epoch})")
    else:
        console.print(f"checkpoint: {result.out / 'best'} (epoch {result.best_epoch}, val {result.best_value:.4f})")


@app.command("eval")
def eval_cmd(
    model: Path = typer.Option(..., "--model", "-m", help="Checkpoint directory or .safetensors file."),
    manifest: Path = typer.Option(..., "--manifest", help="Dataset manifest (JSONL or CSV)."),
    split: str = typer.Option("test", "--split", help="train, val, test or all."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report directory (default: eval-<manifest>-<split> in the model's directory)."),
) -> None:
    """Evaluate a checkpoint: metrics table, report.json and confusion.png."""
    if split not in ("train", "val", "test", "all"):
        fail(f"--split must be train, val, test or all (got {split!r})")
    try:
        from training.evaluate import evaluate

        r = evaluate(model, manifest, split, out, console=console)
    except MerstreamError as e:
        fail(str(e))
    console.print(f"report: {r.json_path}" + (f"; confusion matrix: {r.png_path}" if r.png_path else ""))
