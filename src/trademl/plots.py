"""Figures people would rather see than read, saved as PNG (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["plot_confusion_matrix", "plot_feature_importance", "plot_search_history"]


def plot_confusion_matrix(
    matrix: np.ndarray, labels: list[str], path: str | Path, *, title: str = ""
) -> Path:
    """Counts with row-normalised shading (each true class sums to 1)."""
    path = Path(path)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    fig, ax = plt.subplots(figsize=(5.8, 4.6), dpi=110)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            colour = "white" if share[i, j] > 0.6 else "black"
            ax.text(
                j,
                i,
                f"{matrix[i, j]}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                color=colour,
                fontsize=9,
            )
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix, test period{' (' + title + ')' if title else ''}")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_feature_importance(
    table: pd.DataFrame, path: str | Path, *, kind: str, top: int = 20, title: str = ""
) -> Path:
    """Horizontal bars of the ``top`` features (model importance and permutation)."""
    path = Path(path)
    column = "importance" if table["importance"].notna().any() else "permutation_mean"
    data = table.nlargest(top, column).iloc[::-1]
    has_perm = "permutation_mean" in data and column == "importance"
    fig, axes = plt.subplots(
        1,
        2 if has_perm else 1,
        figsize=(10 if has_perm else 6, 0.32 * len(data) + 1.2),
        dpi=110,
        sharey=True,
        squeeze=False,
    )
    axes = axes[0]
    axes[0].barh(data["feature"], data[column], color="#3b6ea8")
    axes[0].set_xlabel(
        kind.replace("_", " ")
        if column == "importance"
        else "permutation importance (drop in balanced accuracy)"
    )
    if has_perm:
        axes[1].barh(
            data["feature"], data["permutation_mean"], xerr=data["permutation_std"], color="#c7703a"
        )
        axes[1].axvline(0, color="grey", lw=0.8)
        axes[1].set_xlabel("permutation (drop in balanced accuracy)")
    fig.suptitle(title or f"Top {len(data)} features")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_search_history(
    numbers: list[int],
    values: list[float | None],
    states: list[str],
    path: str | Path,
    *,
    metric: str,
    maximize: bool,
) -> Path:
    """A search's trials in order: each finished trial's score, the best so far as a step
    line, pruned (x) and failed trials (no score) on the axis."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    done = [(n, v) for n, v, s in zip(numbers, values, states, strict=True) if s == "COMPLETE"]
    if done:
        xs, ys = zip(*done, strict=True)
        ax.scatter(xs, ys, s=22, label="trial", zorder=3)
        best = np.maximum.accumulate(ys) if maximize else np.minimum.accumulate(ys)
        ax.step(xs, best, where="post", color="tab:red", label="best so far")
    low = ax.get_ylim()[0] if done else 0.0
    for state, marker, label in (("PRUNED", "x", "pruned"), ("FAIL", "v", "failed")):
        xs = [n for n, s in zip(numbers, states, strict=True) if s == state]
        if xs:
            ax.scatter(xs, [low] * len(xs), marker=marker, color="grey", label=label)
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"{len(numbers)} trials, {metric} ({'max' if maximize else 'min'}imised)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
