"""Figures: confusion matrices (paper Fig. 4) and emotion timelines of long recordings."""

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


# One colour per emotion, the same in every figure.
EMOTION_COLOURS = {"angry": "#d62728", "happy": "#ffbf00", "neutral": "#9a9a9a", "sad": "#1f77b4"}


def plot_timeline(table, path, title="", threshold=None):
    """Saves an emotion timeline as PNG: probability per emotion against time.

    `table` is `Detector.timeline`'s output (start, end, p_<emotion>...).
    Class probabilities that sum to one are drawn as stacked bands; detector
    probabilities (independent) as lines, with the decision threshold.
    """
    plt = _pyplot()
    columns = [c for c in table.columns if c.startswith("p_")]
    names = [c[2:] for c in columns]
    centres = ((table["start"] + table["end"]) / 2).to_numpy()
    values = table[columns].to_numpy().T
    fallback = plt.get_cmap("tab10")
    colours = [EMOTION_COLOURS.get(n, fallback(i % 10)) for i, n in enumerate(names)]
    figure, axes = plt.subplots(figsize=(max(6.0, min(16.0, 4 + len(table) / 20)), 3.4), dpi=120)
    stacked = threshold is None and np.allclose(values.sum(axis=0), 1.0, atol=1e-3)
    if stacked:
        axes.stackplot(centres, values, labels=names, colors=colours, alpha=0.85, step="mid")
        axes.set_ylabel("class probability (stacked)")
    else:
        for name, row, colour in zip(names, values, colours):
            axes.plot(centres, row, label=name, color=colour, linewidth=1.6)
        if threshold is not None:
            axes.axhline(threshold, color="black", linestyle=":", linewidth=1, label=f"threshold {threshold:g}")
        axes.set_ylabel("detector probability")
    axes.set_ylim(0, 1)
    axes.set_xlim(float(table["start"].min()), float(table["end"].max()))
    axes.set_xlabel("time (s), window centres")
    axes.set_title(title, fontsize=10)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_search(table, path, title=""):
    """Saves val_uar against the learning rate (log axis) of a search's trials as PNG.

    Several trials at one rate (other hyperparameters differ) show as dots;
    the best per rate is joined by a line, and the best trial is ringed.
    """
    plt = _pyplot()
    table = table.dropna(subset=["val_uar"])
    rates = np.asarray(table["learning_rate"], dtype=float)
    scores = np.asarray(table["val_uar"], dtype=float)
    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    axes.scatter(rates, scores, color="#1f77b4", alpha=0.6, label="trial")
    best_per_rate = table.groupby("learning_rate")["val_uar"].max().sort_index()
    axes.plot(best_per_rate.index, best_per_rate.to_numpy(), color="#1f77b4", linewidth=1.2)
    best = int(np.argmax(scores))
    axes.scatter([rates[best]], [scores[best]], s=160, facecolors="none", edgecolors="#d62728", linewidths=2,
                 label=f"best: lr {rates[best]:g}, val_uar {scores[best]:.3f}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("val_uar (validation part)")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.set_title(title, fontsize=10)
    axes.legend(loc="lower left", fontsize=8, frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
