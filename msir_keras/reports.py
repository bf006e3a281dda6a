"""Reports: a run's metrics.json summary and its Markdown tables; the one Markdown table writer.

`markdown_table` writes every table of the package: a run's results.md,
`msir compare` and `msir reproduce` (pandas' `to_markdown`, which needs
`tabulate`). Light to import (no TensorFlow).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def summarise(config, results):
    """The run's metrics.json: per-fold and mean figures (and per emotion)."""
    if config.task == "classification":
        result = results["classification"]
        figures = lambda r: {  # noqa: E731
            "uar": r["uar"], "wa": r["wa"], "macro_f1": r["macro_f1"],
            "per_emotion": {k: {"sensitivity": v["sensitivity"], "specificity": v["specificity"],
                                "f1": v["f1"]} for k, v in r["per_class"].items()},
        }
        summary = {
            "task": "classification",
            "model": config.model,
            "folds": {name: figures(r) for name, r in result["folds"].items()},
            "mean": figures(result["mean"]),
            "confusion": result["mean"]["confusion"],
            "class_names": list(result["mean"]["class_names"]),
            # Classes no test part held (cross-corpus): no per-class figure is given for them.
            "absent": result["mean"].get("absent", []),
        }
        _add_parts(summary, result["folds"])
        return summary
    figures = lambda r: {k: r[k] for k in ("uar", "sensitivity", "specificity", "f1", "wa")}  # noqa: E731
    emotions = {
        target: {"folds": {n: figures(r) for n, r in res["folds"].items()}, "mean": figures(res["mean"])}
        for target, res in results.items()
    }
    for target, res in results.items():
        _add_parts(emotions[target], res["folds"])
    overall = {k: float(np.nanmean([np.nan if e["mean"][k] is None else e["mean"][k] for e in emotions.values()]))
               for k in ("uar", "sensitivity", "specificity", "f1", "wa")}
    return {"task": "detection", "model": config.model, "emotions": emotions, "mean": overall}


PARTS = ("msir", "functionals")  # a fused model's parts, each also scored alone on the test speakers


def _add_parts(summary, reports):
    """A fused model's per-fold test UAR of each part alone, and what was chosen, into `summary`."""
    for name, report in reports.items():
        fold = summary["folds"][name]
        for part in PARTS:
            if f"{part}_uar" in report:
                fold[f"{part}_uar"] = report[f"{part}_uar"]
        if "chosen" in report:
            fold["chosen"] = report["chosen"]
    for part in PARTS:
        values = [f[f"{part}_uar"] for f in summary["folds"].values() if f"{part}_uar" in f]
        if values and len(values) == len(summary["folds"]):
            summary["mean"][f"{part}_uar"] = float(np.mean(values))


def _figure(value, digits=3):
    """A table cell: the value, or n/a where it is undefined (no example of a class)."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def results_table(metrics):
    """A markdown table of the per-fold and mean figures."""
    if metrics["task"] == "classification":
        emotions = [e for e in metrics["class_names"] if e not in metrics.get("absent", [])]
        header = ["fold", "UAR", "WA", "macro-F1"] + [f"{e} TPR/TNR" for e in emotions]
        rows = []
        for name, r in list(metrics["folds"].items()) + [("mean", metrics["mean"])]:
            per = r["per_emotion"]
            rows.append([name, _figure(r["uar"]), _figure(r["wa"]), _figure(r["macro_f1"])]
                        + [f"{_figure(per[e]['sensitivity'], 2)}/{_figure(per[e]['specificity'], 2)}"
                           if e in per else "n/a" for e in emotions])
    else:
        header = ["emotion", "fold", "UAR", "TPR", "TNR", "F1"]
        keys = ("uar", "sensitivity", "specificity", "f1")
        rows = []
        for emotion, result in metrics["emotions"].items():
            for name, r in list(result["folds"].items()) + [("mean", result["mean"])]:
                rows.append([emotion, name] + [_figure(r[k]) for k in keys])
        rows.append(["all", "mean"] + [_figure(metrics["mean"][k]) for k in keys])
    text = markdown_table(pd.DataFrame(rows, columns=header))
    comparison = comparison_table(metrics)
    heading = "UAR beside the baselines (same folds)" if metrics.get("baselines") else "UAR of each part (same folds)"
    return text if comparison is None else f"{text}\n\n{heading}:\n\n{comparison}"


def comparison_table(metrics):
    """Per-fold and mean UAR of the model, its fused parts alone and the SVM baselines; None without either.

    Classification runs only (a detection run's table lists each emotion).
    """
    if metrics["task"] != "classification":
        return None
    baselines = metrics.get("baselines", {})
    parts = [p for p in PARTS if f"{p}_uar" in metrics["mean"]]
    if not baselines and not parts:
        return None
    names = {"msir": "MSIR part alone", "functionals": "functionals classifier alone"}
    header = ["fold", metrics["model"], *(names[p] for p in parts), *(f"SVM, {b.split('-', 1)[1]}" for b in baselines)]
    rows = []
    for name in [*metrics["folds"], "mean"]:
        figures = metrics["mean"] if name == "mean" else metrics["folds"][name]
        other = [(b["mean"] if name == "mean" else b["folds"].get(name, {})).get("uar") for b in baselines.values()]
        rows.append([name, _figure(figures["uar"]), *(_figure(figures.get(f"{p}_uar")) for p in parts),
                     *(_figure(value) for value in other)])
    return markdown_table(pd.DataFrame(rows, columns=header))


def markdown_table(frame, digits=3):
    """Any table as Markdown (GitHub's pipes, columns aligned): floats to `digits` places, a named index first.

    The one table writer of run folders (results.md), `msir compare` and
    `msir reproduce`: callers format special cells (± or signed figures) as
    text first. A missing or non-finite value is written n/a.

    Args:
        frame: DataFrame. Its cells: numbers, or text written as it is.
        digits: int, defaults to 3. Decimal places of float cells.

    Returns:
        str, the table's lines (no trailing newline).
    """
    if frame.index.name is not None:
        frame = frame.reset_index()
    cell = lambda v: "n/a" if pd.isna(v) else (_figure(v, digits) if isinstance(v, float) else str(v))  # noqa: E731
    shown = pd.DataFrame([[cell(v) for v in row] for row in frame.itertuples(index=False)],
                         columns=[str(c) for c in frame.columns])
    # Every cell is text by now: tabulate must not read "0.750" back as a number and write 0.75.
    return shown.to_markdown(index=False, tablefmt="github", disable_numparse=True)
