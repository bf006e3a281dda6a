"""Runs side by side: per-fold figures of several run folders, with mean and standard deviation (`msir compare`).

Light to import (no TensorFlow): it reads the runs' metrics.json only.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from msir_keras.features.base import ConfigError
from msir_keras.reports import markdown_table


def run_figures(run, figure="uar"):
    """{fold: figure} of a run folder (a detection run: the mean over its emotions per fold)."""
    path = os.path.join(run, "metrics.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: missing; is {run} a finished run folder (not `.partial`)?")
    with open(path) as handle:
        metrics = json.load(handle)
    if metrics["task"] == "classification":
        if figure not in metrics["mean"]:
            raise ConfigError(f"{run}: no figure {figure!r}; a classification run has uar, wa and macro_f1")
        return {fold: values[figure] for fold, values in metrics["folds"].items()}
    per_emotion = [e["folds"] for e in metrics["emotions"].values()]
    if figure not in next(iter(per_emotion[0].values())):
        raise ConfigError(f"{run}: no figure {figure!r}; a detection run has uar, sensitivity, specificity, f1, wa")
    folds = list(per_emotion[0])
    return {fold: float(np.nanmean([np.nan if e[fold][figure] is None else e[fold][figure] for e in per_emotion]))
            for fold in folds}


def compare_runs(runs, names=None, figure="uar", ensemble=False):
    """Runs side by side: one column per run, a row per fold, then mean and standard deviation.

    Folds are matched by name; a run without some fold shows n/a there and
    its mean is over the folds it has (the table says how many). With
    `ensemble`, a last column gives the UAR of the runs' averaged
    probabilities (`ensemble_figures`).

    Returns:
        A DataFrame indexed by fold, then "mean", "std" and "folds".
    """
    names = list(names) if names else [os.path.basename(os.path.normpath(r)) for r in runs]
    if len(names) != len(runs):
        raise ConfigError(f"{len(names)} name(s) for {len(runs)} run(s)")
    columns = {name: pd.Series(run_figures(run, figure), dtype=float) for name, run in zip(names, runs)}
    if ensemble:
        if figure != "uar":
            raise ConfigError("an ensemble column gives UAR only")
        columns["ensemble"] = pd.Series(ensemble_figures(runs), dtype=float)
    table = pd.DataFrame(columns)
    summary = pd.DataFrame({"mean": table.mean(), "std": table.std(ddof=1), "folds": table.count()}).T
    return pd.concat([table, summary])


def compare_markdown(table, digits=3):
    """A compare_runs table as Markdown (std as ±, fold counts as integers)."""
    def cells(fold, row):
        if fold == "folds":
            return [str(int(v)) for v in row]
        return ["n/a" if pd.isna(v) else f"{'±' if fold == 'std' else ''}{v:.{digits}f}" for v in row]

    shown = pd.DataFrame([cells(fold, row) for fold, row in table.iterrows()], columns=table.columns,
                         index=pd.Index(table.index, name="fold"))
    return markdown_table(shown)


def is_search_folder(folder):
    """A `msir tune` folder (finished or not): no metrics.json, a trials.csv under <target>/<fold>/."""
    import glob

    return (not os.path.exists(os.path.join(folder, "metrics.json"))
            and bool(glob.glob(os.path.join(glob.escape(folder), "*", "*", "trials.csv"))))


TRIAL_COLUMNS = ("trial", "val_uar", "best_epoch", "epochs_run", "seconds")


def search_summary(folder):
    """Every combination of a `msir tune` search over its folds: val_uar per fold, mean, std, best first.

    A recipe is chosen for a corpus by its mean val_uar over the folds'
    validation parts (training speakers only); the per-fold columns show
    how much of that is one fold.
    """
    tables = []
    for target in sorted(os.listdir(folder)):
        base = os.path.join(folder, target)
        for fold in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            path = os.path.join(base, fold, "trials.csv")
            if os.path.exists(path):
                tables.append(pd.read_csv(path).assign(target=target, fold=fold))
    if not tables:
        raise FileNotFoundError(f"{folder}: no <target>/<fold>/trials.csv here; is it a `msir tune` folder?")
    trials = pd.concat(tables, ignore_index=True)
    settings = [c for c in trials.columns if c not in TRIAL_COLUMNS + ("target", "fold")]
    wide = trials.pivot_table(index=["target", *settings], columns="fold", values="val_uar")
    wide.columns = [f"val_uar {fold}" for fold in wide.columns]
    folds = wide.copy()
    wide["mean"], wide["std"], wide["folds"] = folds.mean(axis=1), folds.std(axis=1, ddof=1), folds.count(axis=1)
    minutes = trials.groupby(["target", *settings])["seconds"].sum() / 60
    wide["trial_minutes"] = minutes.round(1)
    return wide.sort_values("mean", ascending=False).reset_index()


def ensemble_figures(runs):
    """{fold: UAR} of the runs' averaged class probabilities: an ensemble of runs that differ only by seed.

    Reads each fold's predictions.csv (p_<class> columns) and averages
    them row by row; the runs must have tested the same utterances in the
    same order (the same corpus, split and classes). This is what
    `--ensemble N` computes inside one run, here for runs trained apart.
    """
    from sklearn.metrics import balanced_accuracy_score  # UAR

    folds = None
    for run in runs:
        figures = run_figures(run)
        folds = list(figures) if folds is None else [f for f in folds if f in figures]
    result = {}
    for fold in folds:
        tables = []
        for run in runs:
            path = _fold_file(run, fold, "predictions.csv")
            tables.append(pd.read_csv(path))
        first = tables[0]
        for run, table in zip(runs, tables):
            if not table["path"].equals(first["path"]):
                raise ConfigError(f"{run}: fold {fold} tested other utterances than {runs[0]}; "
                                  "only runs of the same corpus and split can be averaged")
        columns = [c for c in first.columns if c.startswith("p_")]
        if not columns:
            raise ConfigError(f"{runs[0]}: fold {fold} has no class probabilities (an SVM run?)")
        mean = np.mean([t[columns].to_numpy() for t in tables], axis=0)
        classes = [c[2:] for c in columns]
        predicted = np.asarray(classes)[mean.argmax(axis=1)]
        result[fold] = float(balanced_accuracy_score(first["label"].astype(str), predicted))
    return result


def _fold_file(run, fold, name):
    import glob

    found = glob.glob(os.path.join(glob.escape(run), "*", glob.escape(fold), name))
    if len(found) != 1:
        raise FileNotFoundError(f"{run}: expected one {name} for fold {fold}, found {len(found)}")
    return found[0]
