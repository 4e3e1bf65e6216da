"""Evaluate a checkpoint on a manifest split: JSON report, printed table, confusion matrix PNG.

    python -m training.evaluate --model runs/x/best --manifest M.jsonl [--split test] [--out DIR]
    merstream eval --model DIR --manifest M
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from merstream.config import ModelConfig
from merstream.errors import MerstreamError

from .dataset import ManifestDataset, collate, model_inputs
from .manifest import read_manifest, split_of
from .metrics import EvalReport, evaluate_scores, save_confusion_png, save_reports


@torch.no_grad()
def predict(model, ds: ManifestDataset, batch_size: int = 32, device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """Probabilities [N, K] and targets [N, K] over a dataset, in order."""
    was = model.training
    model.eval()
    probs, tg = [], []
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate):
        sim = model(**model_inputs(batch, device))
        probs.append(model.probabilities(sim.float()).cpu())
        tg.append(batch["targets"])
    model.train(was)
    return torch.cat(probs).numpy(), torch.cat(tg).numpy()


def report_for(name: str, probs: np.ndarray, targets: np.ndarray, cfg: ModelConfig) -> EvalReport:
    return evaluate_scores(name, probs, targets, [x.lower() for x in cfg.labels], cfg.task, cfg.threshold)


@dataclass
class EvalResult:
    report: EvalReport
    json_path: Path
    png_path: Path | None


def evaluate(model_path: str | Path, manifest: str | Path, split: str = "test", out: str | Path | None = None,
             batch_size: int = 32, console=None) -> EvalResult:
    from merstream.model.checkpoint import load_checkpoint

    from .metrics import print_table

    model = load_checkpoint(model_path)
    samples = read_manifest(manifest)
    chosen = samples if split == "all" else split_of(samples, split)
    if not chosen:
        present = sorted({s.split for s in samples})
        raise MerstreamError(f"manifest {manifest} has no '{split}' samples (splits: {', '.join(present)})")
    home = Path(model_path) if Path(model_path).is_dir() else Path(model_path).parent  # a .safetensors file: beside it
    out = Path(out) if out else home / f"eval-{Path(manifest).stem}-{split}"
    out.mkdir(parents=True, exist_ok=True)  # before the prediction pass, so an unwritable place fails first
    ds = ManifestDataset(chosen, model.cfg, model.image_size, model.context_length)
    probs, tg = predict(model, ds, batch_size)
    rep = report_for(f"{Path(manifest).stem}:{split}", probs, tg, model.cfg)
    jp = save_reports([rep], out / "report.json")
    png = None
    if rep.single is not None:
        png = save_confusion_png(rep.single.confusion, rep.labels, out / "confusion.png", rep.name)
    print_table([rep.row()], console)
    return EvalResult(rep, jp, png)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Evaluate a merstream checkpoint on a manifest")
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--split", default="test", help="train, val, test or all")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    try:
        r = evaluate(a.model, a.manifest, a.split, a.out)
    except MerstreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {r.json_path}" + (f"; confusion matrix: {r.png_path}" if r.png_path else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
