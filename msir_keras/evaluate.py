"""Evaluating a finished run's models: again on its own test folds, or on another corpus."""

from __future__ import annotations

import dataclasses
import os

from msir_keras.experiment import (
    ExperimentConfig,
    _report,
    prepare,
    summarise,
    target_labels,
    write_results,
)
from msir_keras.metrics import mean_reports


def evaluate_run(run, corpus=None, root=None, store=None, out=None, log=print):
    """Predicts with a run's saved models and writes metrics.json and results.md.

    Without `corpus`, each fold's model is tested on its own fold's test
    speakers (the run's figures, recomputed from the saved models). With
    `corpus` and `root`, every fold model is tested on the whole other corpus
    (cross-corpus), with features extracted using the run's settings.

    Returns:
        The metrics dict.
    """
    from msir_keras.export import LoadedModel, model_folders

    config_path = os.path.join(run, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"{config_path}: not a run folder written by `msir run`/`msir train`")
    config = ExperimentConfig.load(config_path)
    if config.model != "msir":
        raise ValueError(f"{run}: an SVM run keeps no model to evaluate; rerun `msir train --model {config.model}`")
    cross = corpus is not None
    if cross:
        if root is None:
            raise ValueError("--corpus needs --root")
        config = dataclasses.replace(config, corpus=corpus, root=root)
    if store is not None:
        config = dataclasses.replace(config, store=store)
    table, data, folds, _ = prepare(config, log)
    models = model_folders(run)
    results = {}
    for target in sorted({t for t, _ in models}):
        labels, class_names = target_labels(config, table, target)
        reports = {}
        for fold in folds if not cross else []:
            model = LoadedModel(models[(target, fold.name)]).model
            predicted = data.subset(fold.test).predict(model, config.batch_size).argmax(-1)
            reports[fold.name] = _report(config, labels[fold.test], predicted, class_names)
        for (model_target, name), folder in models.items() if cross else []:
            if model_target == target:
                predicted = data.predict(LoadedModel(folder).model, config.batch_size).argmax(-1)
                reports[name] = _report(config, labels, predicted, class_names)
        results[target] = {"folds": reports, "mean": mean_reports(list(reports.values()))}
    out = out or os.path.join(run, f"evaluation-{config.corpus}")
    metrics = write_results(out, summarise(config, results), log)
    log(f"evaluation written to {out}")
    return metrics
