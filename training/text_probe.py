"""Does a pretrained sentence encoder carry more emotion than merstream-small's text tower? Heads on
frozen all-MiniLM-L6-v2 sentence embeddings (``training/minilm.py``), MELD + EmoryNLP transcripts.

    python -m training.text_probe [--data ../shared/data] [--minilm DIR] [--out /tmp/merstream-minilm]

Same text data, labels and splits as ``build_default_model`` (MELD and EmoryNLP; neutral, happy, sad,
angry, fear, disgust; train / dev = val / test). Every utterance is embedded once by the frozen
encoder (cached under ``--out``). One head is fitted on the train split of both sets together:

  linear  class-weighted logistic regression on standardised embeddings (LBFGS), settings: L2
          strength and how strongly classes are re-weighted (weight = count ** -power)
  mlp     384 -> hidden -> 6, GELU, dropout, AdamW, the same class weighting; settings: hidden
          width, dropout, weight power; epochs chosen by the same validation criterion

Settings are chosen on the validation (dev) splits only, by one of two criteria -- mean weighted F1
of MELD dev and EmoryNLP dev (the MELD literature's figure) or their mean balanced accuracy (what
selects the shipped model) -- and test is scored once per chosen head. The shipped model's text
figures (report.json, "L meld-test" / "L emorynlp-test": 6-way argmax of its cosine scores) are
printed beside them. A linear / MLP head on frozen embeddings stands in for what the MER model's
projection + cosine-to-label-embeddings head could get from the same encoder.

Also timed: encoder milliseconds per utterance on this CPU at batch 1 and batch 32 (and the shipped
text tower's at batch 1, for comparison).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from merstream.config import EMOTIONS_6

from .manifest import split_of
from .metrics import single_label_scores
from .minilm import DEFAULT_DIR, SentenceEncoder
from .sources import shared_emotion_sets

ROOT = Path(__file__).resolve().parents[1]
LABELS = list(EMOTIONS_6)
SOURCES = ("meld", "emorynlp")
SPLITS = ("train", "val", "test")
SHIPPED = ROOT / "merstream" / "assets" / "merstream-small-v4"  # v1 / v2 figures: docs/default-model.md


def load_text(data: Path) -> dict[str, dict[str, tuple[list[str], np.ndarray]]]:
    sets = shared_emotion_sets(data)
    out: dict[str, dict[str, tuple[list[str], np.ndarray]]] = {}
    for src in SOURCES:
        out[src] = {}
        for sp in SPLITS:
            items = split_of(sets[src], sp)
            out[src][sp] = ([s.text for s in items], np.array([LABELS.index(s.labels[0]) for s in items]))
    return out


def embed_cached(enc: SentenceEncoder, texts: list[str], cache: Path, weights_sha: str) -> np.ndarray:
    key = hashlib.sha256(("\n".join(texts) + weights_sha + str(enc.max_len)).encode()).hexdigest()[:16]
    path = cache / f"minilm-{key}.npy"
    if path.exists():
        return np.load(path)
    x = enc.encode(texts, batch=64)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    return x


def class_weights(y: np.ndarray, power: float) -> torch.Tensor:
    w = np.bincount(y, minlength=len(LABELS)).clip(1).astype(np.float64) ** -power
    w = w / (w * np.bincount(y, minlength=len(LABELS))).sum() * len(y)  # mean weight per sample = 1
    return torch.tensor(w, dtype=torch.float32)


def fit_linear(x: np.ndarray, y: np.ndarray, l2: float, power: float):
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt, yt = torch.tensor((x - mu) / sd, dtype=torch.float32), torch.tensor(y)
    w = class_weights(y, power)
    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], len(LABELS))
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(xt), yt, weight=w) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)

    @torch.no_grad()
    def predict(z: np.ndarray) -> np.ndarray:
        return lin(torch.tensor((z - mu) / sd, dtype=torch.float32)).softmax(-1).numpy()

    return predict


def fit_mlp(x: np.ndarray, y: np.ndarray, hidden: int, dropout: float, power: float, epochs: int,
            evaluate, seed: int = 0):
    """-> (predict of the best epoch by ``evaluate(predict)``, best epoch, its validation score)."""
    torch.manual_seed(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt, yt = torch.tensor((x - mu) / sd, dtype=torch.float32), torch.tensor(y)
    net = torch.nn.Sequential(torch.nn.Dropout(dropout / 2), torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(),
                              torch.nn.Dropout(dropout), torch.nn.Linear(hidden, len(LABELS)))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    w = class_weights(y, power)
    gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def predict(z: np.ndarray) -> np.ndarray:
        net.eval()
        return net(torch.tensor((z - mu) / sd, dtype=torch.float32)).softmax(-1).numpy()

    best = (-1.0, 0, None)
    for ep in range(1, epochs + 1):
        net.train()
        for idx in torch.randperm(len(yt), generator=gen).split(128):
            opt.zero_grad()
            F.cross_entropy(net(xt[idx]), yt[idx], weight=w).backward()
            opt.step()
        score = evaluate(predict)
        if score > best[0]:
            best = (score, ep, {k: v.clone() for k, v in net.state_dict().items()})
    net.load_state_dict(best[2])
    return predict, best[1], best[0]


def scores(probs: np.ndarray, y: np.ndarray) -> dict:
    s = single_label_scores(probs, y)
    return {"wF1": s.weighted_f1, "top1": s.top1, "bal": s.balanced_accuracy, "n": int(len(y))}


def evaluate_split(predict, feats, data, split: str) -> dict[str, dict]:
    return {src: scores(predict(feats[src][split]), data[src][split][1]) for src in SOURCES}


def criterion(res: dict[str, dict], key: str) -> float:
    return float(np.mean([res[src][key] for src in SOURCES]))


@torch.no_grad()
def time_encoder(enc: SentenceEncoder, texts: list[str], n1: int, n32: int) -> dict:
    rng = np.random.default_rng(0)
    pick = [texts[i] for i in rng.choice(len(texts), size=max(n1, n32), replace=False)]
    enc.encode(pick[:8], batch=1)  # warm-up
    t = time.perf_counter()
    for s in pick[:n1]:
        enc.encode([s], batch=1)
    b1 = (time.perf_counter() - t) / n1 * 1e3
    t = time.perf_counter()
    enc.encode(pick[:n32], batch=32, sort=False)  # batches in arrival order, padded to their longest
    b32 = (time.perf_counter() - t) / n32 * 1e3
    tokens = [len(e.ids) for e in enc.tok.encode_batch(pick[:n32])]
    return {"batch1_ms": b1, "batch32_ms_per_utt": b32, "n_batch1": n1, "n_batch32": n32,
            "mean_tokens": float(np.mean(tokens)), "max_tokens": int(np.max(tokens))}


@torch.no_grad()
def time_shipped_tower(texts: list[str], n1: int) -> dict | None:
    try:
        from merstream.model import load_checkpoint
        model = load_checkpoint(str(SHIPPED)).float().eval()
    except Exception as e:  # timing only; the comparison figures come from report.json
        return {"error": str(e)}
    toks = model.text_inputs(texts[:1])  # the front end (tokenizer or sentence encoder) is timed too
    model.encode_text(toks)
    t = time.perf_counter()
    for i in range(n1):
        model.encode_text(model.text_inputs(texts[i: i + 1]))
    ms = (time.perf_counter() - t) / n1 * 1e3
    n_params = sum(p.numel() for p in model.text.parameters())
    return {"batch1_ms": ms, "text_tower_params_M": n_params / 1e6, "input_width": int(toks.shape[1])}


def shipped_figures() -> dict:
    rep = json.loads((SHIPPED / "report.json").read_text())
    out = {}
    for row in rep["test"]:
        for src in SOURCES:
            if row["set"] == f"L {src}-test":
                out[src] = {"wF1": row["wF1"], "top1": row["top1"], "bal": row["bal_acc"], "n": row["n"]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data"))
    ap.add_argument("--minilm", default=str(DEFAULT_DIR), help="model folder (model.safetensors, tokenizer.json)")
    ap.add_argument("--out", default="/tmp/merstream-minilm", help="embedding cache and results JSON")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mlp-epochs", type=int, default=25)
    ap.add_argument("--no-timing", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    t0 = time.perf_counter()

    data = load_text(Path(a.data))
    enc = SentenceEncoder(a.minilm)
    weights = Path(a.minilm) / "model.safetensors"
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    feats = {src: {sp: embed_cached(enc, data[src][sp][0], out, sha) for sp in SPLITS} for src in SOURCES}
    print(f"embedded {sum(len(data[s][p][0]) for s in SOURCES for p in SPLITS)} utterances "
          f"({time.perf_counter() - t0:.0f} s so far)", flush=True)

    x_tr = np.concatenate([feats[src]["train"] for src in SOURCES])
    y_tr = np.concatenate([data[src]["train"][1] for src in SOURCES])

    # ---- settings searched on val (dev) only
    trials = []
    for l2, power in itertools.product((1e-4, 1e-3, 3e-3, 1e-2, 3e-2), (1.0, 0.5, 0.0)):
        pred = fit_linear(x_tr, y_tr, l2, power)
        trials.append({"head": "linear", "setting": {"l2": l2, "power": power}, "val": evaluate_split(pred, feats, data, "val"),
                       "predict": pred})
    print(f"linear grid done ({time.perf_counter() - t0:.0f} s)", flush=True)
    for key in ("wF1", "bal"):
        for hidden, dropout, power in itertools.product((512,), (0.2, 0.5), (1.0, 0.5, 0.0)):
            pred, ep, _ = fit_mlp(x_tr, y_tr, hidden, dropout, power, a.mlp_epochs,
                                  lambda p, key=key: criterion(evaluate_split(p, feats, data, "val"), key))
            trials.append({"head": "mlp", "select_epochs_by": key,
                           "setting": {"hidden": hidden, "dropout": dropout, "power": power, "epochs": ep},
                           "val": evaluate_split(pred, feats, data, "val"), "predict": pred})
        print(f"mlp grid ({key}) done ({time.perf_counter() - t0:.0f} s)", flush=True)

    chosen = []
    for head in ("linear", "mlp"):
        for key in ("wF1", "bal"):
            pool = [t for t in trials if t["head"] == head and t.get("select_epochs_by", key) == key]
            best = max(pool, key=lambda t: criterion(t["val"], key))
            test = evaluate_split(best["predict"], feats, data, "test")  # once per chosen head
            chosen.append({"head": head, "selected_by": f"val mean {key}", "setting": best["setting"],
                           "val": best["val"], "test": test})

    shipped = shipped_figures()
    print()
    print("| head (selected on val by) | setting | MELD dev wF1 / top-1 / bal | EmoryNLP dev wF1 / top-1 / bal "
          "| MELD test wF1 / top-1 / bal | EmoryNLP test wF1 / top-1 / bal |")
    print("|---|---|---|---|---|---|")
    f = lambda r: f"{r['wF1']:.3f} / {r['top1']:.3f} / {r['bal']:.3f}"  # noqa: E731
    print(f"| merstream-small text tower (report.json) | shipped | | | {f(shipped['meld'])} | {f(shipped['emorynlp'])} |")
    for c in chosen:
        st = ", ".join(f"{k}={v}" for k, v in c["setting"].items())
        print(f"| MiniLM + {c['head']} ({c['selected_by']}) | {st} | {f(c['val']['meld'])} | {f(c['val']['emorynlp'])} "
              f"| {f(c['test']['meld'])} | {f(c['test']['emorynlp'])} |")

    timing = None
    if not a.no_timing:
        test_texts = data["meld"]["test"][0] + data["emorynlp"]["test"][0]
        timing = {"minilm": time_encoder(enc, test_texts, n1=200, n32=1024),
                  "shipped_text_tower": time_shipped_tower(test_texts, n1=200),
                  "minilm_weights_bytes": enc.weight_bytes,
                  "minilm_params_M": sum(p.numel() for p in enc.model.parameters()) / 1e6,
                  "threads": a.threads}
        m = timing["minilm"]
        print(f"\nMiniLM encode ({a.threads} thread): batch 1 {m['batch1_ms']:.1f} ms/utt, batch 32 "
              f"{m['batch32_ms_per_utt']:.1f} ms/utt (mean {m['mean_tokens']:.1f} tokens); weights "
              f"{enc.weight_bytes / 1e6:.1f} MB fp32, {timing['minilm_params_M']:.1f} M params; "
              f"shipped text tower batch 1: {timing['shipped_text_tower']}")

    out.mkdir(parents=True, exist_ok=True)
    result = {"minilm_dir": str(a.minilm), "minilm_sha256": sha, "shipped": shipped, "chosen": chosen,
              "trials": [{k: v for k, v in t.items() if k != "predict"} for t in trials], "timing": timing,
              "seconds": time.perf_counter() - t0}
    (out / "text_probe.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {out / 'text_probe.json'} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
