"""Train a MER-CLIP model on a manifest (the paper's recipe by default; see training/configs/).

    python -m training.train --config training/configs/mosei.json --manifest M.jsonl --out runs/x
    merstream train --config ... --manifest ... --out ...

* AdamW on every trainable part (towers, CMD, prompt context); the label encoder's text tower is
  frozen (it is built with requires_grad=False and kept in eval mode).
* Model selection on the manifest's ``val`` split only (never ``test``); with no val split the
  last epoch is kept and the report says so.
* ``out/best`` is a normal merstream checkpoint (``merstream file --model out/best``);
  ``out/last.pt`` resumes training (``--resume``); ``out/history.json`` logs every epoch.
* DDP under ``torchrun`` (``WORLD_SIZE`` > 1): NCCL on CUDA, gloo on CPU; every rank builds the same
  initial model, and at the end the ranks check that their weights are identical.
* Mixed precision: bf16 autocast on CUDA (``amp``); on CPU only with ``amp_on_cpu`` (slower on most
  CPUs; it exists to exercise the same code path without a GPU).
* Deterministic: seeds Python, NumPy and torch; data order comes from a seeded generator.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from merstream.atomic import replaced_whole
from merstream.config import ModelConfig, read_json_object
from merstream.errors import MerstreamError

from .dataset import ManifestDataset, collate, model_inputs
from .manifest import Sample, read_manifest, split_of
from .vega import (AnchorBank, ModalityHeads, VegaConfig, anchor_loss, branch_label_loss, build_anchors,
                   distill_loss, task_loss)


@dataclass
class OptimConfig:
    lr: float = 8e-6
    weight_decay: float = 1e-3
    batch_size: int = 16
    epochs: int = 20
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    max_steps_per_epoch: int | None = None  # cap (smoke tests); None = full epoch

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or isinstance(self.batch_size, bool) or isinstance(self.lr, bool):
            raise MerstreamError("optim: epochs, batch_size and lr must be numbers, not true/false")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise MerstreamError(f"optim.epochs must be an integer >= 1, got {self.epochs!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise MerstreamError(f"optim.batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and self.weight_decay >= 0):
            raise MerstreamError(f"optim.lr must be > 0 and weight_decay >= 0, got {self.lr!r}, {self.weight_decay!r}")
        if self.max_steps_per_epoch is not None and not self.max_steps_per_epoch >= 1:
            raise MerstreamError(f"optim.max_steps_per_epoch must be >= 1 or null, got {self.max_steps_per_epoch!r}")


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    vega: VegaConfig = field(default_factory=VegaConfig)
    seed: int = 0
    amp: bool = True  # bf16 autocast on CUDA
    amp_on_cpu: bool = False  # bf16 autocast on CPU too (tests the AMP path without a GPU)
    select_metric: str = "auto"  # micro_f1 (emotion), acc2 (sentiment), weighted_f1, top1, balanced_accuracy
    max_segments: int = 8  # audio segments per clip
    init: str | None = None  # checkpoint to start from (e.g. the default model)
    threads: int | None = None

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_json_object(path, "training config"), str(path))

    @classmethod
    def from_dict(cls, d: dict, where: str = "training config") -> "TrainConfig":
        if not isinstance(d, dict):
            raise MerstreamError(f"{where} must hold a JSON object")
        d = dict(d)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise MerstreamError(f"{where}: unknown keys {unknown}")
        for part, kind in (("optim", OptimConfig), ("vega", VegaConfig)):
            extra = sorted(set(d.get(part) or {}) - set(kind.__dataclass_fields__))
            if extra:
                raise MerstreamError(f"{where}: unknown keys in {part}: {extra}")
        try:
            model = ModelConfig.from_dict(d.pop("model", {}))
            optim = OptimConfig(**d.pop("optim", {}))
            vega = VegaConfig(**d.pop("vega", {}))
            return cls(model=model, optim=optim, vega=vega, **d)
        except TypeError as e:
            raise MerstreamError(f"{where}: {e}") from None

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "optim": asdict(self.optim), "vega": asdict(self.vega),
                **{k: getattr(self, k) for k in ("seed", "amp", "amp_on_cpu", "select_metric", "max_segments", "init", "threads")}}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rank_rng_states(world: int) -> list[torch.Tensor]:
    """torch's global RNG state of every rank (rank order), so ``--resume`` gives each rank its own."""
    state = torch.get_rng_state()
    if world == 1:
        return [state]
    states: list = [None] * world
    torch.distributed.all_gather_object(states, state)
    return states


def distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) under torchrun (NCCL on CUDA, gloo on CPU); (0, 0, 1) alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        return dist.get_rank(), local, world
    return 0, 0, 1


def weights_checksum(module: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum().item() for p in module.parameters()))


def replicas_in_sync(module: torch.nn.Module, world: int) -> list[float]:
    """Every rank's weight checksum (DDP keeps replicas identical; a mismatch is a bug)."""
    import torch.distributed as dist

    sums = [None] * world
    dist.all_gather_object(sums, weights_checksum(module))
    if any(abs(x - sums[0]) > 1e-6 * max(1.0, abs(sums[0])) for x in sums):
        raise MerstreamError(f"DDP replicas diverged: weight checksums {sums}")
    return sums


def select_value(report, metric: str, task: str) -> float:
    if metric == "auto":
        metric = "acc2" if task == "sentiment" else "micro_f1"
    for part in (report.multilabel, report.single, report.sentiment):
        if part is not None and hasattr(part, metric):
            return float(getattr(part, metric))
    raise MerstreamError(f"select_metric {metric!r} does not apply to task {task!r}")


def build_model(cfg: TrainConfig):
    from merstream.model.checkpoint import load_checkpoint
    from merstream.model.mer_clip import MerClip
    from merstream.model.weights import load_clip

    if cfg.init:
        init = load_checkpoint(cfg.init)
        model = MerClip(cfg.model)
        from merstream.model.checkpoint import check_state

        check_state(model, init.state_dict(), cfg.init)
        model.load_state_dict(init.state_dict())
        return model
    clip = load_clip(cfg.model.clip, cfg.model.pretrained) if cfg.model.pretrained else None
    model = MerClip(cfg.model, clip=clip)
    model.init_audio_from_pretrained()  # a Whisper audio tower's tuned layers start as Whisper's
    return model


def face_exemplars(samples: list[Sample], ds: ManifestDataset, per_class: int, num_classes: int) -> dict:
    """Model-ready face images of labelled training samples with vision, per class."""
    out: dict[int, list] = {}
    for i, s in enumerate(samples):
        t = ds.targets[i]
        if t.sum() != 1 or "V" not in s.modalities or not (s.image or s.video):
            continue
        k = int(t.argmax())
        if len(out.setdefault(k, [])) < per_class:
            out[k].append(ds[i]["frames"][0])
    return {k: torch.stack(v) for k, v in out.items()}


@dataclass
class TrainResult:
    out: Path
    best_epoch: int
    best_value: float | None
    selected_on: str
    history: list[dict]
    rank: int = 0  # under torchrun only rank 0 validates, saves and reports


def train(cfg: TrainConfig, manifest: str | Path, out: str | Path, resume: bool = False,
          progress: bool = True, log=print) -> TrainResult:
    from merstream.model.checkpoint import save_checkpoint

    from .evaluate import predict, report_for

    out = Path(out)
    rank, local, world = distributed()
    device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)  # the same initial model (and VEGA anchors) on every rank
    samples = read_manifest(manifest)
    train_s, val_s = split_of(samples, "train"), split_of(samples, "val")
    if not train_s:
        raise MerstreamError(f"manifest {manifest} has no 'train' samples")
    out.mkdir(parents=True, exist_ok=True)  # an unwritable run directory fails now, not after the data is decoded
    model = build_model(cfg).to(device)
    ds = ManifestDataset(train_s, cfg.model, model.image_size, model.context_length, cfg.max_segments)
    val_ds = ManifestDataset(val_s, cfg.model, model.image_size, model.context_length, cfg.max_segments) if val_s else None
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = None
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(ds, batch_size=cfg.optim.batch_size, shuffle=sampler is None, sampler=sampler,
                        collate_fn=collate, generator=gen, num_workers=0)

    heads = ModalityHeads(cfg.model.modalities, model.embed_dim).to(device) if cfg.vega.dual_branch else None
    anchors: AnchorBank | None = None
    if cfg.vega.anchors:
        ex = face_exemplars(train_s, ds, 64, len(cfg.model.labels))
        anchors = build_anchors(model, {k: v.to(device) for k, v in ex.items()}, len(cfg.model.labels))
    params = [p for p in model.parameters() if p.requires_grad] + (list(heads.parameters()) if heads else [])
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=tuple(cfg.optim.betas))
    train_step = StepLoss(model, heads, anchors, cfg.vega, gen)
    if world > 1:  # DDP wraps the whole loss so the VEGA heads' gradients are synchronised too
        train_step = torch.nn.parallel.DistributedDataParallel(
            train_step, device_ids=[local] if device.type == "cuda" else None, find_unused_parameters=True)
        log(f"DDP: {world} processes ({torch.distributed.get_backend()}), this is rank {rank}")
    seed_everything(cfg.seed + rank)  # torch's global RNG (dropout) differs per rank from here on
    use_amp = cfg.amp and (device.type == "cuda" or cfg.amp_on_cpu)
    if use_amp:
        log(f"mixed precision: bf16 autocast on {device.type}")

    start_epoch, best, best_epoch, history = 0, None, -1, []
    last = out / "last.pt"
    if resume:
        if not last.exists():
            raise MerstreamError(f"--resume: no {last} to resume from")
        try:
            st = torch.load(last, map_location=device, weights_only=False)
        except Exception as e:  # truncated, not a checkpoint, or saved by an incompatible torch
            first = (str(e).splitlines() or [""])[0][:160]
            raise MerstreamError(f"--resume: cannot read {last} ({type(e).__name__}: {first}); if it is truncated, "
                                 "delete it to start over") from None
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optim"])
        if heads is not None and st.get("heads"):
            heads.load_state_dict(st["heads"])
        start_epoch, best, best_epoch, history = st["epoch"], st["best"], st["best_epoch"], st["history"]
        gen.set_state(st["gen"].cpu())
        rngs = st["torch_rng"]  # one state per rank (a single tensor in older checkpoints)
        rngs = rngs if isinstance(rngs, list) else [rngs]
        if len(rngs) != world:
            log(f"warning: {last} holds the RNG states of {len(rngs)} process(es), this run has {world}: "
                "ranks reuse them in turn")
        torch.set_rng_state(rngs[rank % len(rngs)].cpu())
        log(f"resumed from {last} at epoch {start_epoch}")
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[info]}"), disable=not progress or rank != 0, transient=True)
    steps_per_epoch = len(loader) if cfg.optim.max_steps_per_epoch is None else min(len(loader), cfg.optim.max_steps_per_epoch)
    with bar:
        for epoch in range(start_epoch, cfg.optim.epochs):
            if sampler is not None:
                sampler.set_epoch(epoch)
            model.train()
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.optim.epochs}", total=steps_per_epoch, info="")
            t0, total, n = time.time(), 0.0, 0
            for step, batch in enumerate(loader):
                if step >= steps_per_epoch:
                    break
                kw = model_inputs(batch, device)
                tgt = batch["targets"].to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss, parts = train_step(kw, tgt)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.optim.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
                opt.step()
                total += loss.item()
                n += 1
                bar.update(task, advance=1, info=f"loss {total / n:.4f}")
            bar.remove_task(task)
            entry = {"epoch": epoch + 1, "train_loss": total / max(n, 1), "seconds": round(time.time() - t0, 1)}
            if val_ds is not None and rank == 0:
                probs, tg = predict(model, val_ds, cfg.optim.batch_size, device)
                rep = report_for("val", probs, tg, cfg.model)
                value = select_value(rep, cfg.select_metric, cfg.model.task)
                entry.update(val=rep.row(), select=value)
                if best is None or value > best:
                    best, best_epoch = value, epoch + 1
                    save_checkpoint(model, out / "best", extra={"epoch": epoch + 1, "val": value})
            history.append(entry)
            rngs = rank_rng_states(world)  # every rank takes part; rank 0 saves them all
            if rank == 0:
                if val_ds is None:
                    save_checkpoint(model, out / "best", extra={"epoch": epoch + 1})
                    best_epoch = epoch + 1
                log(f"epoch {epoch + 1}: " + json.dumps({k: v for k, v in entry.items() if k != "val"})
                    + (f" val {json.dumps(entry['val'])}" if "val" in entry else ""))
                with replaced_whole(last) as partial:  # an interrupt leaves the previous last.pt
                    torch.save({"model": model.state_dict(), "optim": opt.state_dict(),
                                "heads": heads.state_dict() if heads else None, "epoch": epoch + 1, "best": best,
                                "best_epoch": best_epoch, "history": history, "gen": gen.get_state(),
                                "torch_rng": rngs}, partial)
                (out / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    if world > 1:
        sums = replicas_in_sync(train_step.module, world)
        if rank == 0:
            log(f"DDP: the {world} replicas finished with identical weights (checksum {sums[0]:.6f})")
        torch.distributed.destroy_process_group()
    selected = "val" if val_ds is not None else "last epoch (no val split)"
    return TrainResult(out, best_epoch, best, selected, history, rank)


class StepLoss(torch.nn.Module):
    """The training objective as a module (what DDP wraps)."""

    def __init__(self, model, heads, anchors, vega: VegaConfig, gen: torch.Generator):
        super().__init__()
        self.model = model
        self.heads = heads
        self.anchors, self.vega, self.gen = anchors, vega, gen

    def forward(self, kw: dict, targets: torch.Tensor):
        return step_loss(self.model, self.model, dict(kw), targets, self.vega, self.heads, self.anchors, self.gen)


def step_loss(train_model, model, kw: dict, targets: torch.Tensor, vega: VegaConfig, heads, anchors,
              gen: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Task loss on the fused prediction, plus the switched-on VEGA terms."""
    if not vega.enabled:
        sim = train_model(**kw)
        loss = task_loss(model, model.logits(sim), targets)
        return loss, {"task": loss.detach()}
    present = kw.pop("present")
    pooled, pres = model.pooled_inputs(**kw, present=present)
    fused = model.fuse(pooled, pres)
    label_emb = model.label_embeddings()
    sim = model.similarity(fused, label_emb)
    loss = task_loss(model, model.logits(sim), targets)
    parts = {"task": loss.detach()}
    if anchors is not None and "V" in pooled:
        a = anchor_loss(pooled["V"], targets, anchors.sample(vega.anchor_p, gen).to(sim.device), pres["V"],
                        vega.anchor_temperature)
        loss = loss + vega.anchor_weight * a
        parts["anchor"] = a.detach()
    if heads is not None:
        branch = heads(pooled, label_emb)
        d = distill_loss(model, branch, sim, pres)
        loss = loss + vega.distill_weight * d
        parts["distill"] = d.detach()
        if vega.branch_label_weight:
            b = branch_label_loss(model, branch, targets, pres)
            loss = loss + vega.branch_label_weight * b
            parts["branch"] = b.detach()
    return loss, parts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Train a MER-CLIP model on a manifest")
    ap.add_argument("--config", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    try:
        r = train(TrainConfig.load(a.config), a.manifest, a.out, resume=a.resume)
    except MerstreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if r.rank != 0:
        return 0
    print(f"best epoch {r.best_epoch} ({r.selected_on}); checkpoint {r.out / 'best'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
