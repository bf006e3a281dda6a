"""Figures from run results: confusion matrices (paper Fig. 4) and bar charts (Figs. 2-3)."""

from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix, class_names, path, title=""):
    """Saves a confusion matrix as PNG: each cell its recall (row share) and its count."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = matrix / matrix.sum(axis=1, keepdims=True)
    shares = np.nan_to_num(shares)
    size = 1.1 * len(class_names) + 1.8
    figure, axes = plt.subplots(figsize=(size, size - 0.4), dpi=120)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            colour = "white" if shares[i, j] > 0.55 else "black"
            axes.text(j, i, f"{shares[i, j]:.1%}\n({matrix[i, j]})", ha="center", va="center",
                      color=colour, fontsize=9)
    axes.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="recall (row share)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
