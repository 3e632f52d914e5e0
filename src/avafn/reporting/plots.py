"""Report figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from avafn.io import atomic_write_bytes


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=120, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str],
                   path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows gold, columns predicted), counts in the cells."""
    c = np.asarray(confusion, dtype=float)
    norm = c / np.maximum(c.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.8 + 0.7 * len(labels)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(c[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of gold row")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_per_class(per_class: Mapping[str, Mapping[str, float]], path: str | Path,
                   title: str = "") -> Path:
    """Per-class precision / recall / F1 bars (as in the paper's Fig. 4)."""
    labels = list(per_class)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(labels), 3.6))
    for k, (key, name) in enumerate([("precision", "Precision"), ("recall", "Recall"),
                                     ("f1", "F1")]):
        ax.bar(x + (k - 1) * 0.27, [per_class[lab][key] for lab in labels], 0.27, label=name)
    ax.set_xticks(x, [f"{lab}\n(n={per_class[lab]['support']})" for lab in labels], fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_training_curves(histories: Mapping[int, Sequence[Mapping[str, float]]],
                         path: str | Path, title: str = "") -> Path:
    """Train / dev loss and dev weighted F1 per epoch, one line per seed."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for seed, h in sorted(histories.items()):
        ep = [r["epoch"] for r in h]
        line, = a1.plot(ep, [r["train_loss"] for r in h], label=f"seed {seed} train")
        a1.plot(ep, [r["dev_loss"] for r in h], "--", color=line.get_color(),
                label=f"seed {seed} dev")
        a2.plot(ep, [r["dev_f1"] for r in h], color=line.get_color(), label=f"seed {seed}")
        best = max(h, key=lambda r: r["dev_f1"]) if h else None
        if best:
            a2.plot([best["epoch"]], [best["dev_f1"]], "o", color=line.get_color())
    a1.set_xlabel("epoch")
    a1.set_ylabel("cross-entropy")
    a1.legend(fontsize=7)
    a2.set_xlabel("epoch")
    a2.set_ylabel("dev weighted F1 (%)")
    a2.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_robustness(result: Mapping[str, Mapping[str, list]], path: str | Path,
                    title: str = "") -> Path:
    """Weighted F1 (mean ± std over seeds) vs the fraction of utterances missing a modality."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for m, r in result.items():
        f = np.asarray(r["fractions"]) * 100
        mu = np.asarray([v["mean"] for v in r["weighted_f1"]])
        sd = np.asarray([v["std"] for v in r["weighted_f1"]])
        ax.plot(f, mu, "o-", label=f"{m} removed")
        ax.fill_between(f, mu - sd, mu + sd, alpha=0.2)
    ax.set_xlabel("utterances with the modality removed (%)")
    ax.set_ylabel("weighted F1 (%)")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)
