"""Evaluation metrics (MER-CLIP's protocol) and reports.

Multi-label emotion (predicted set = labels with probability >= threshold, 0.6 by default):
  accuracy  = mean over samples of |pred & true| / |pred | true| (1 when both are empty)
  precision = sum |pred & true| / sum |pred|      (micro, over all sample-label decisions)
  recall    = sum |pred & true| / sum |true|
  micro_f1  = 2 P R / (P + R)
Single-label views (argmax): top1 accuracy, balanced accuracy (mean per-class recall), weighted F1
(per-class F1 weighted by support, as reported for MELD/IEMOCAP), confusion matrix.
Sentiment (positive vs negative): acc2 and F1 (weighted over the two classes).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


def _div(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


@dataclass
class MultiLabelScores:
    accuracy: float
    precision: float
    recall: float
    micro_f1: float
    threshold: float


def multilabel_scores(probs: np.ndarray, targets: np.ndarray, threshold: float = 0.6) -> MultiLabelScores:
    pred = np.asarray(probs) >= threshold
    true = np.asarray(targets).astype(bool)
    inter = (pred & true).sum(1)
    union = (pred | true).sum(1)
    acc = np.where(union == 0, 1.0, inter / np.maximum(union, 1)).mean() if len(pred) else 0.0
    p = _div(inter.sum(), pred.sum())
    r = _div(inter.sum(), true.sum())
    return MultiLabelScores(float(acc), p, r, _div(2 * p * r, p + r), threshold)


def confusion(pred: np.ndarray, true: np.ndarray, k: int) -> np.ndarray:
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (np.asarray(true), np.asarray(pred)), 1)
    return m  # rows: true class, columns: predicted class


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype(float)
    prec = np.divide(tp, cm.sum(0), out=np.zeros_like(tp), where=cm.sum(0) > 0)
    rec = np.divide(tp, cm.sum(1), out=np.zeros_like(tp), where=cm.sum(1) > 0)
    return np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)


@dataclass
class SingleLabelScores:
    top1: float
    balanced_accuracy: float
    weighted_f1: float
    macro_f1: float
    chance: float  # 1 / number of classes present
    majority: float  # accuracy of always predicting the most frequent true class
    confusion: list[list[int]] = field(default_factory=list)


def single_label_scores(scores: np.ndarray, true: np.ndarray) -> SingleLabelScores:
    scores, true = np.asarray(scores), np.asarray(true)
    k = scores.shape[1]
    pred = scores.argmax(1)
    cm = confusion(pred, true, k)
    support = cm.sum(1)
    present = support > 0
    recall = np.divide(np.diag(cm), support, out=np.zeros(k), where=present)
    f1 = per_class_f1(cm)
    n = max(len(true), 1)
    return SingleLabelScores(
        top1=_div((pred == true).sum(), len(true)),
        balanced_accuracy=float(recall[present].mean()) if present.any() else 0.0,
        weighted_f1=float((f1 * support).sum() / n),
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        chance=_div(1, present.sum()),
        majority=_div(support.max(), n) if len(true) else 0.0,
        confusion=cm.tolist(),
    )


def bootstrap_interval(scores: np.ndarray, true: np.ndarray, metric: str = "balanced_accuracy",
                       n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of a ``SingleLabelScores`` field, resampling the items ``n`` times."""
    scores, true = np.asarray(scores), np.asarray(true)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        i = rng.integers(0, len(true), len(true))
        vals.append(getattr(single_label_scores(scores[i], true[i]), metric))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


@dataclass
class SentimentScores:
    acc2: float
    f1: float


def sentiment_scores(pred_positive: np.ndarray, true_positive: np.ndarray) -> SentimentScores:
    pred = np.asarray(pred_positive).astype(int)
    true = np.asarray(true_positive).astype(int)
    cm = confusion(pred, true, 2)
    f1 = per_class_f1(cm)
    support = cm.sum(1)
    return SentimentScores(_div((pred == true).sum(), len(true)), float((f1 * support).sum() / max(len(true), 1)))


@dataclass
class EvalReport:
    name: str
    n: int
    labels: list[str]
    task: str
    single: SingleLabelScores | None = None
    multilabel: MultiLabelScores | None = None
    sentiment: SentimentScores | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def row(self) -> dict:
        """Headline numbers for a printed table."""
        out = {"set": self.name, "n": self.n}
        if self.single:
            out.update(top1=self.single.top1, bal_acc=self.single.balanced_accuracy, wF1=self.single.weighted_f1,
                       chance=self.single.chance)
        if self.multilabel:
            out.update(ml_acc=self.multilabel.accuracy, micro_f1=self.multilabel.micro_f1)
        if self.sentiment:
            out.update(acc2=self.sentiment.acc2, f1=self.sentiment.f1)
        return out


def evaluate_scores(name: str, probs: np.ndarray, targets: np.ndarray, labels: list[str], task: str,
                    threshold: float = 0.6) -> EvalReport:
    """probs [N, K] and multi-hot targets [N, K] -> every metric that applies."""
    probs, targets = np.asarray(probs, dtype=float), np.asarray(targets)
    rep = EvalReport(name, len(probs), list(labels), task)
    if task == "sentiment" and len(labels) == 2:
        pos = labels.index("positive") if "positive" in labels else 1
        rep.sentiment = sentiment_scores(probs.argmax(1) == pos, targets.argmax(1) == pos)
    if (targets.sum(1) == 1).all():
        rep.single = single_label_scores(probs, targets.argmax(1))
    if task == "emotion":
        rep.multilabel = multilabel_scores(probs, targets, threshold)
    return rep


def print_table(rows: list[dict], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    cols = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    t = Table(*cols)
    for r in rows:
        t.add_row(*[f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols])
    console.print(t)


def save_confusion_png(cm, labels: list[str], path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(labels), 0.8 + 0.7 * len(labels)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_reports(reports: list[EvalReport], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.to_dict() for r in reports], indent=2) + "\n")
    return path
