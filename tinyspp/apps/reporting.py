"""Figures and Markdown tables for the experiment and demo reports (matplotlib, Agg backend).

Every function takes numbers that training/evaluation produced and only draws or formats them.
"""

from __future__ import annotations

import os

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; floats in ``rows`` are printed as given (format them first).

    >>> print(markdown_table(["a", "b"], [[1, "x"]]))
    | a | b |
    |---|---|
    | 1 | x |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(error: float | None) -> str:
    """An error fraction as a percentage with one decimal, or '-'.

    >>> pct(0.1234), pct(None)
    ('12.3', '-')
    """
    return "-" if error is None else f"{100 * error:.1f}"


def plot_samples(dataset, path: str, *, per_class: int = 3) -> str:
    """A grid of ``per_class`` images of every class, at their own sizes."""
    plt = _plt()
    K = dataset.num_classes
    fig, axes = plt.subplots(per_class, K, figsize=(1.1 * K, 1.2 * per_class), squeeze=False)
    for k in range(K):
        idx = np.flatnonzero(dataset.labels == k)[:per_class]
        for r in range(per_class):
            ax = axes[r, k]
            ax.axis("off")
            if r < len(idx):
                img = dataset.images[idx[r]]
                ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0),
                          cmap="gray", vmin=0, vmax=1)
                H, W = img.shape[1:]
                ax.set_title(f"{dataset.classes[k]}\n{H}x{W}" if r == 0 else f"{H}x{W}",
                             fontsize=6)
    fig.tight_layout()
    return _save(fig, path)


def plot_learning_curves(histories: dict, path: str, *, title: str = "") -> str:
    """Training loss and validation error per epoch, one line per run (``name -> history``)."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    for name, hist in histories.items():
        epochs = [h["epoch"] for h in hist]
        a.plot(epochs, [h["train_loss"] for h in hist], marker=".", label=name)
        if all("val_error" in h for h in hist):
            b.plot(epochs, [100 * h["val_error"] for h in hist], marker=".", label=name)
    a.set(xlabel="epoch", ylabel="training loss", title=title or "training loss")
    b.set(xlabel="epoch", ylabel="validation error (%)", title="validation error (centre crop)")
    b.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_error_vs_size(curves: dict, path: str, *, title: str = "",
                       train_sizes=()) -> str:
    """Test error against test size, one line per run (``name -> {size: error}``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, by_size in curves.items():
        sizes = sorted(by_size)
        ax.plot(sizes, [100 * by_size[s] for s in sizes], marker="o", label=name)
    for s in train_sizes:
        ax.axvline(s, color="grey", lw=0.6, ls=":")
    ax.set(xlabel="test size (shorter side of the full image, px)", ylabel="test error (%)",
           title=title or "error vs test size (full image)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path
