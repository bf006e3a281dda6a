"""Figures: confusion matrices (paper Fig. 4), the paper's bars and zeta lines (Figs. 2, 3, 5), emotion timelines."""

from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def draw_confusion(axes, matrix, class_names):
    """Draws a confusion matrix on `axes` with scikit-learn's `ConfusionMatrixDisplay`: each cell its recall
    (row share) and its count. Returns the image."""
    from sklearn.metrics import ConfusionMatrixDisplay

    matrix = np.asarray(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
    display = ConfusionMatrixDisplay(shares, display_labels=list(class_names)).plot(
        ax=axes, cmap="Blues", colorbar=False, im_kw={"vmin": 0, "vmax": 1}, text_kw={"fontsize": 9})
    for (i, j), text in np.ndenumerate(display.text_):
        text.set_text(f"{shares[i, j]:.1%}\n({matrix[i, j]})")
        # scikit-learn picks the text colour against the data's range; the colour scale is fixed at 0..1.
        text.set_color("white" if shares[i, j] > 0.55 else "black")
    axes.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    return display.im_


def plot_confusion(matrix, class_names, path, title=""):
    """Saves a confusion matrix as PNG: each cell its recall (row share) and its count."""
    plt = _pyplot()
    size = 1.1 * len(class_names) + 1.8
    figure, axes = plt.subplots(figsize=(size, size - 0.4), dpi=120)
    image = draw_confusion(axes, matrix, class_names)
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="recall (row share)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_detection_confusions(matrices, path, title=""):
    """Saves one 2x2 confusion matrix per emotion side by side (paper Fig. 4) as PNG.

    `matrices` maps an emotion to its (negative, positive) confusion.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(matrices), figsize=(3.4 * len(matrices) + 0.8, 3.3), dpi=120, squeeze=False)
    for letter, ax, (emotion, matrix) in zip("abcdefghij", axes[0], matrices.items()):
        image = draw_confusion(ax, matrix, [f"not {emotion}", emotion])
        ax.set_title(f"({letter}) {emotion}", fontsize=10)
        if letter != "a":
            ax.set_ylabel("")
    figure.subplots_adjust(wspace=0.75)
    figure.colorbar(image, ax=list(axes[0]), fraction=0.02, pad=0.02, label="recall (row share)")
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_grouped_bars(series, path, ylabel, title=""):
    """Saves grouped bars (paper Figs. 2-3) as PNG: one group per emotion and their mean, one bar per method.

    `series` maps a method's name to a DataFrame of folds x emotions (in
    %); a bar is the mean over folds, its whisker the standard deviation
    where there are several folds, and its value is written above it.
    """
    plt = _pyplot()
    emotions = list(next(iter(series.values())).columns)
    groups = emotions + ["mean"]
    width = 0.8 / len(series)
    figure, axes = plt.subplots(figsize=(1.5 * len(groups) + 1.5, 3.6), dpi=120)
    colours = ["#9ecae1", "#08519c", "#fdae6b", "#a63603"]
    for index, (name, frame) in enumerate(series.items()):
        per_fold = frame.assign(mean=frame.mean(axis=1))[groups]
        means = per_fold.mean().to_numpy()
        spread = per_fold.std(ddof=1).to_numpy() if len(per_fold) > 1 else None
        positions = np.arange(len(groups)) + (index - (len(series) - 1) / 2) * width
        bars = axes.bar(positions, means, width, yerr=spread, capsize=3, label=name,
                        color=colours[index % len(colours)], edgecolor="black", linewidth=0.5)
        # Inside the bar, where no whisker covers it.
        axes.bar_label(bars, labels=[f"{v:.1f}" for v in means], label_type="center", fontsize=8,
                       color="white" if index % 2 else "black")
    axes.set_xticks(range(len(groups)), groups)
    folds = len(next(iter(series.values())))
    axes.set_xlabel(f"target emotion (bars: mean over {folds} test fold{'s' if folds > 1 else ''}"
                    + ("; whiskers: standard deviation)" if folds > 1 else ")"), fontsize=9)
    axes.set_ylabel(ylabel)
    axes.set_ylim(0, 105)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.set_title(title, fontsize=10)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_zeta(table, path, title=""):
    """Saves UAR against the focal weighting zeta per emotion (paper Fig. 5) as PNG.

    `table` is indexed by zeta (and "crossentropy", drawn as a dashed
    reference line), one column of UAR (%) per emotion.
    """
    plt = _pyplot()
    points = table.drop(index="crossentropy", errors="ignore")
    zetas = points.index.astype(float)
    figure, axes = plt.subplots(1, len(table.columns), figsize=(2.8 * len(table.columns) + 0.6, 3.0), dpi=120,
                                squeeze=False, sharey=True)
    for letter, ax, emotion in zip("abcdefghij", axes[0], table.columns):
        colour = EMOTION_COLOURS.get(emotion, "#1f77b4")
        ax.plot(zetas, points[emotion].to_numpy(), marker="o", color=colour, label="focal loss")
        if "crossentropy" in table.index and np.isfinite(table.loc["crossentropy", emotion]):
            ax.axhline(table.loc["crossentropy", emotion], color="black", linestyle="--", linewidth=1,
                       label="cross-entropy")
        ax.set_title(f"({letter}) {emotion}", fontsize=10)
        ax.set_xlabel("zeta (theta = 2)")
        ax.set_xticks(zetas)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("UAR (%)")
    axes[0][-1].legend(loc="lower right", fontsize=8, frameon=False)
    figure.suptitle(title, fontsize=10)
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


def plot_layer_weights(weights, path, title=""):
    """Saves the learned weights of an upstream's hidden states as bars: the mean over folds, each fold a dot.

    `weights` is a DataFrame of folds x hidden states (0: the CNN's
    projection, then each transformer block), as `WeightedLayerSum` learned them.
    """
    plt = _pyplot()
    layers = np.arange(weights.shape[1])
    figure, axes = plt.subplots(figsize=(max(4.0, 0.45 * len(layers) + 1.5), 3.2), dpi=120)
    axes.bar(layers, weights.mean().to_numpy(), color="#6baed6", edgecolor="black", linewidth=0.5,
             label=f"mean over {len(weights)} fold{'s' if len(weights) > 1 else ''}")
    for _, row in weights.iterrows():
        axes.plot(layers, row.to_numpy(), "o", color="#08306b", markersize=3, alpha=0.6)
    axes.axhline(1.0 / len(layers), color="grey", linestyle="--", linewidth=0.8, label="equal weights")
    axes.set_xticks(layers)
    axes.set_xlabel("hidden state (0: CNN features, then transformer layers)")
    axes.set_ylabel("softmax weight")
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
