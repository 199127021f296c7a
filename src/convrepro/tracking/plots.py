"""Figures a run records as artifacts: learning curves, confusion matrix, first-layer kernels."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def _wrapped(title: str, fig, fontsize: float) -> str:
    """The title in lines that fit the figure's width (a long run name otherwise runs off
    the picture: 'waibel1989 faithful seed 0: tes')."""
    chars = max(16, int(fig.get_figwidth() * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(title, chars))


def _save(fig, ax, path: Path, title: str) -> Path:
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(_wrapped(title, fig, 10), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def learning_curves(history: list[dict], path: Path, title: str) -> Path:
    keys = sorted({k for row in history for k in row if k.endswith("/error") or k.endswith("error")
                   and not k.startswith("train/running")})
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in keys:
        xs = [row["pass"] for row in history if key in row]
        ys = [row[key] for row in history if key in row]
        ax.plot(xs, ys, marker="o", ms=3, label=key)
    ax.set_xlabel("pass (epoch)")
    ax.set_ylabel("error (%)")
    ax.set_yscale("log")
    ax.legend()
    return _save(fig, ax, path, title)


def confusion_matrix(matrix: torch.Tensor, class_names: list[str], path: Path, title: str) -> Path:
    n = len(class_names)
    side = max(4.0, 1.2 + 0.5 * n)  # three phonemes still leave room for the title and labels
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(matrix.numpy(), cmap="Blues")
    for i in range(n):
        for j in range(n):
            v = int(matrix[i, j])
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=9 if n <= 12 else 7,
                        color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks(range(n), class_names, rotation=90 if n > 12 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(_wrapped(title, fig, 10), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def kernels(weights: torch.Tensor, path: Path, title: str) -> Path:
    """(K, h, w) grey kernels or (K, 3, h, w) colour kernels, each scaled to its own range."""
    k = weights.shape[0]
    cols = min(k, 12)
    rows = (k + cols - 1) // cols
    size = max(0.9, 6.0 / cols)  # at least 6 inches wide: room for a readable title
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size + 0.8), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= k:
            continue
        w = weights[i].float()
        w = (w - w.min()) / (w.max() - w.min() + 1e-12)
        if w.dim() == 3:
            ax.imshow(w.permute(1, 2, 0).numpy())
        else:
            ax.imshow(w.numpy(), cmap="gray")
    fig.suptitle(_wrapped(title, fig, 11), fontsize=11)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def rejection(rejected: torch.Tensor, error: torch.Tensor, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(rejected.numpy(), error.numpy())
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("rejected (%)")
    ax.set_ylabel("error on accepted (%)")
    ax.set_xlim(0, 30)
    return _save(fig, ax, path, title)


def shift_curve(curve: dict[int, float], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = sorted(curve)
    ax.plot(xs, [curve[x] for x in xs], marker="o")
    ax.set_xlabel("window displacement (frames of 10 ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(xs)
    return _save(fig, ax, path, title)
