"""Evaluating a finished run's models: again on its own test folds, or on another corpus."""

from __future__ import annotations

import dataclasses
import os
import re
import warnings

import numpy as np

from msir_keras.config import ExperimentConfig
from msir_keras.experiment import prepare
from msir_keras.metrics import mean_reports
from msir_keras.reports import summarise
from msir_keras.runfolder import write_results
from msir_keras.training import _report, target_labels

# The cross-corpus row of the fold models' averaged probabilities (beside one row per fold model).
AVERAGE = "fold-average"


def evaluation_folder(run, corpus=None, root=None):
    """Where an evaluation is written by default: one folder per kind and corpus.

    A re-test goes to `RUN/evaluation-retest`; a cross-corpus test to
    `RUN/evaluation-<corpus>-<name of its root>`, so testing on two corpora (or
    two manifests) never overwrites the other.
    """
    if corpus is None:
        return os.path.join(run, "evaluation-retest")
    stem = os.path.splitext(os.path.basename(os.path.normpath(root)))[0]
    return os.path.join(run, f"evaluation-{corpus}-{re.sub(r'[^A-Za-z0-9._-]+', '_', stem)}")


def evaluate_run(run, corpus=None, root=None, store=None, out=None, log=print):
    """Predicts with a run's saved models and writes metrics.json and results.md.

    Without `corpus`, each fold's model is tested on its own fold's test
    speakers (the run's figures, recomputed from the saved models). With
    `corpus` and `root`, every fold model is tested on the whole other corpus
    (cross-corpus, no folds are made there, so any run tests on any corpus:
    a session-split IEMOCAP run on EmoDB, a five-fold run on two speakers),
    and so is their averaged probability (the `fold-average` row, not in
    the mean), with features extracted using the run's settings and labels
    mapped by name; utterances whose label the models do not know are left
    out and reported, and figures are given for the classes the other
    corpus holds.

    Returns:
        The metrics dict.
    """
    from msir_keras.model import load_model
    from msir_keras.serving import model_folders

    config_path = os.path.join(run, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path}: not a run folder written by `msir run`/`msir train`")
    config = ExperimentConfig.load(config_path)
    if config.model not in ("msir", "fusion"):
        raise ValueError(f"{run}: an SVM run keeps no model to evaluate; rerun `msir train --model {config.model}`")
    config = dataclasses.replace(config, baselines=False)  # the run's models only
    cross = corpus is not None
    if cross:
        if root is None:
            raise ValueError("--corpus needs --root")
        if corpus == config.corpus and _same_place(root, config.root):
            warnings.warn(f"{run} was trained on this corpus ({corpus} at {root}): tested whole, every fold "
                          "model also scores its own training speakers, so the figures are optimistic; "
                          f"`msir evaluate {run}` alone retests each fold on its held-out speakers")
        config = dataclasses.replace(config, corpus=corpus, root=root)
    if store is not None:
        config = dataclasses.replace(config, store=store)
    models = model_folders(run)
    targets = sorted({t for t, _ in models})
    classes = None
    if config.task == "classification":  # the classes the models were trained on, by name
        classes = _trained_classes(next(iter(models.values())))
    table, data, folds, _ = prepare(config, log, folds=not cross, classes=classes)
    results = {}
    for target in targets:
        labels, class_names = target_labels(config, table, target, classes)
        reports = {}
        for fold in folds:
            if (target, fold.name) not in models:
                raise FileNotFoundError(f"{run}: no model for {target} fold {fold.name}; the run folder is incomplete")
            model = load_model(os.path.join(models[(target, fold.name)], "model.keras"), compile=False)
            predicted = data.select(model.feature_inputs).subset(fold.test).predict(model, config.batch_size).argmax(-1)
            reports[fold.name] = _report(config, labels[fold.test], predicted, class_names)
        probabilities = []
        for (model_target, name), folder in models.items() if cross else []:
            if model_target == target:
                model = load_model(os.path.join(folder, "model.keras"), compile=False)
                probabilities.append(data.select(model.feature_inputs).predict(model, config.batch_size))
                reports[name] = _report(config, labels, probabilities[-1].argmax(-1), class_names)
        mean = mean_reports(list(reports.values()))
        if len(probabilities) > 1:  # what `msir predict` does with a run: the fold models' average
            averaged = np.mean(probabilities, axis=0).argmax(-1)
            reports[AVERAGE] = _report(config, labels, averaged, class_names)
        results[target] = {"folds": reports, "mean": mean}
    out = out or evaluation_folder(run, corpus, root)
    metrics = write_results(out, summarise(config, results), log)
    log(f"evaluation written to {out}")
    return metrics


def _same_place(path, other):
    """Whether two corpus roots name the same place (the run's may be relative to where it was trained)."""
    if os.path.exists(other):
        return os.path.realpath(path) == os.path.realpath(other)
    return os.path.basename(os.path.normpath(path)) == os.path.basename(os.path.normpath(other))


def _trained_classes(folder):
    """The class names a fold's model was trained on: from its metrics.json, else from the model itself."""
    import json

    metrics = os.path.join(folder, "metrics.json")
    if os.path.exists(metrics):
        with open(metrics) as handle:
            names = json.load(handle).get("class_names")
        if names:
            return list(names)
    from msir_keras.model import load_model

    return load_model(os.path.join(folder, "model.keras"), compile=False).class_names
