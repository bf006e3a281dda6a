"""Experiments: corpus -> cached features -> speaker-independent folds -> train, select, test.

One function, `run_experiment`, runs MSIR (any branch subset, focal or
cross-entropy loss), the fused detector or an SVM baseline on a corpus, for
classification or one-vs-rest detection, and writes a run folder::

    config.json             the ExperimentConfig it ran with
    metrics.json            per-fold and mean figures (`reports.summarise`)
    results.md              the same as a table (`reports.results_table`)
    <target>/<fold>/        model.keras, normalization.json, history.csv,
                            predictions.csv, confusion.png, metrics.json
                            (`training.run_fold`)

The epoch (MSIR) or C (SVM) is chosen on the validation part, drawn from the
training speakers; the test speakers are only ever predicted once, at the end.

A run is written into `<out>.partial` and moved to `<out>` when it has
finished, so a crash never leaves a half-written run where a finished one
was. Started again with the same configuration, a run resumes from its
`.partial` folder: folds whose `metrics.json` was written are not trained
again (`runfolder`). `run_search` is `msir tune`: the search alone, per fold.
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pandas as pd

from msir_keras import engine
from msir_keras.config import ExperimentConfig
from msir_keras.corpora import FOUR_CLASSES, load_corpus, make_folds
from msir_keras.corpora.base import canonical_label
from msir_keras.features import DamagedEntryError, FeatureStore
from msir_keras.features.base import ConfigError
from msir_keras.metrics import mean_reports
from msir_keras.reports import summarise
from msir_keras.runfolder import (
    check_run_folder,
    finished_fold,
    move_into_place,
    staging_folder,
    write_json,
    write_results,
)
from msir_keras.selection import ADD_GROUPS, _without_same_speaker_selection, no_groups, selection_notes
from msir_keras.training import log_fold, run_fold, target_labels, training_copies, tune_fold


def report_skipped(corpus, log=print, shown=10):
    """Logs what a corpus loader left out: labels outside the classes as counts, other entries with where and why."""
    by_label = pd.Series([e["label"] for e in corpus.skipped if "label" in e], dtype=object).value_counts()
    if len(by_label):
        log(f"{by_label.sum()} {corpus.name} utterance(s) left out, their labels not among the classes: "
            + ", ".join(f"{label} {count}" for label, count in sorted(by_label.items())))
    others = [e for e in corpus.skipped if "label" not in e]
    if others:
        log(f"{len(others)} {corpus.name} entr{'y' if len(others) == 1 else 'ies'} left out:")
    for entry in others[:shown]:
        log(f"  {entry['where']}: {entry['reason']}")
    if len(others) > shown:
        log(f"  ... {len(others) - shown} more (`msir inspect --json` lists all)")


def prepare(config, log=print, folds=True, classes=None):
    """Loads the corpus, extracts (or reads cached) features, makes the folds.

    Files whose extraction fails are left out of the experiment and listed;
    everything extracted before stays in the store.

    Args:
        config: ExperimentConfig.
        log: callable(str).
        folds: bool, defaults to True. False (cross-corpus testing) makes no
            folds and returns an empty list for them.
        classes: the labels kept; rows with others are left out and
            reported. Defaults to the config's (`emotions`): the four
            classes, or every label of the corpus.

    Returns:
        (utterance table, FeatureSet, list of Fold, extraction summary).
    """
    from msir_keras.data import FeatureSet

    corpus = load_corpus(config.corpus, config.root, emotions="all")
    if classes is None and config.emotions == "four":
        classes = FOUR_CLASSES
    if classes is not None:
        corpus = corpus.select_labels(list(classes))
    for warning in corpus.warnings:
        log(f"WARNING: {warning}")
    report_skipped(corpus, log)
    table = corpus.utterances
    if folds:  # refused before any extraction: a corpus that cannot make this experiment
        check_classes(config, table)
        made = _make_folds(config, table)[: config.max_folds]
        baselines = [config.for_model(b) for b in BASELINES if config.baselines and b != config.model]
        for note in dict.fromkeys(n for c in (config, *baselines) for n in selection_notes(c, table, made)):
            log(f"NOTE: {note}")
    extractors = {**config.extractors(), **baseline_inputs(config)}
    store = FeatureStore(config.store)
    summary = store.extract(table["path"], list(extractors.values()), progress=True, workers="auto")
    log(f"features: {summary}")
    if summary.failed:
        failed = {path for path, _ in summary.failed}
        table = table[~table["path"].isin(failed)].reset_index(drop=True)
        log(f"{len(failed)} file(s) left out of this experiment; {len(table)} remain")
    if table.empty:
        raise ConfigError(f"{config.root}: no utterance left to use (see the messages above)")
    try:
        data = FeatureSet.from_store(store, table["path"].tolist(), extractors)
    except DamagedEntryError as error:  # moved aside on loading: computed again, once
        for line in str(error).splitlines():
            log(f"WARNING: {line.split(' Run the same')[0]}; computed again")
        log(f"features: {store.extract(table['path'], list(extractors.values()), verify=True)}")
        data = FeatureSet.from_store(store, table["path"].tolist(), extractors)
    if not folds:
        return table, data, [], summary
    return table, data, _make_folds(config, table)[: config.max_folds], summary


BASELINES = ("svm-compare", "svm-egemaps")


def baseline_inputs(config):
    """{input name: extractor} of the SVM baselines a run trains beside its model (`config.baselines`)."""
    if not config.baselines:
        return {}
    from msir_keras.features import baseline_extractor

    return {name.split("-", 1)[1]: baseline_extractor(name.split("-", 1)[1]) for name in BASELINES}


def _make_folds(config, table):
    """The split's folds; a fold with an empty training, validation or test part is refused, named."""
    try:
        made = make_folds(table, config.split, n_folds=config.n_folds, validation=config.validation,
                          seed=config.seed, by=config.validation_by)
    except ValueError as error:
        raise ConfigError(f"{config.root}: {error}") from None
    made = [_without_same_speaker_selection(config, table, fold) for fold in made]
    for fold in made[: config.max_folds]:
        rows = np.concatenate([fold.train, fold.validation])
        fixed_budget = table["speaker"].iloc[rows].nunique() < 2  # nothing held out (see selection_notes)
        empty = [part for part in ("train", "validation", "test") if not len(getattr(fold, part))
                 and not (part == "validation" and fixed_budget)]
        if fixed_budget and not len(fold.validation) and config.tune:
            raise ConfigError(f"{config.root}: fold {fold.name} trains on one speaker and "
                              f"{no_groups(table, np.sort(rows))}: --tune has nothing to choose by; {ADD_GROUPS}")
        if empty:
            raise ConfigError(
                f"{config.root}: fold {fold.name} has no {' and no '.join(empty)} utterance "
                f"({len(table)} utterances, {table['speaker'].nunique()} speakers); give the corpus more "
                "utterances or speakers, or change --validation / --folds")
    return made


def check_classes(config, table):
    """Refuses a corpus with fewer than two classes (classification) or a target without positives or negatives."""
    counts = table["label"].value_counts()
    if config.task == "classification" and len(counts) < 2:
        raise ConfigError(
            f"{config.root}: {len(counts)} class(es) ({', '.join(map(str, counts.index)) or 'none'}) among the "
            "utterances kept; classification needs at least two (check the labels, or --emotions all)")
    if config.task == "detection":
        for target in config.targets:
            target = canonical_label(target)
            if not 0 < counts.get(target, 0) < len(table):
                raise ConfigError(
                    f"{config.root}: detecting {target} needs utterances with it and without it, got "
                    f"{counts.get(target, 0)} of {len(table)}; choose other --emotion targets")


def run_experiment(config, out, log=print, overwrite=False, verbose=0):
    """Runs an experiment end to end and writes its run folder (see the module doc).

    Args:
        config: ExperimentConfig.
        out: str. The run folder; written as `<out>.partial` until finished.
        log: callable(str).
        overwrite: bool, defaults to False. Replace a finished run at `out`
            (kept until this one has finished) and discard a partial run of
            another configuration; without it both are refused.
        verbose: int. Keras's output per epoch (0 none, 1 a progress bar).

    Returns:
        The metrics dict written to `out/metrics.json`.
    """
    check_run_folder(config, out, overwrite)
    if config.model in ("msir", "fusion"):
        engine.check_backend(config)
    staging = staging_folder(out)
    saved = os.path.join(staging, "config.json")
    if os.path.exists(saved) and ExperimentConfig.load(saved).to_dict() != config.to_dict():
        shutil.rmtree(staging)  # another configuration's partial run; --overwrite said to discard it
    # Corpus, features and folds first: a run that cannot start leaves no folder behind.
    table, data, folds, summary = prepare(config, log)
    if os.path.exists(saved):
        log(f"resuming the unfinished run in {staging}")
    os.makedirs(staging, exist_ok=True)
    config.save(saved)
    if summary.failed:
        write_json(os.path.join(staging, "extraction_failures.json"), summary.to_dict()["failed"])
    if summary.warnings:  # suspicious audio the run used: listed with its results
        write_json(os.path.join(staging, "audio_warnings.json"), summary.to_dict()["warnings"])
    targets = ["classification"] if config.task == "classification" else list(config.targets)
    described = (f"{config.model} ({config.preset}, branches {'+'.join(config.branches)}, recipe {config.recipe})"
                 if config.model in ("msir", "fusion") else config.model)
    log(f"{described} on {config.corpus}: "
        f"{len(table)} utterances, {len(folds)} fold(s), task {config.task}")
    results = _run_folds(config, table, data.select(list(config.extractors())), folds, targets, staging, log,
                         verbose)
    metrics = summarise(config, results)
    _report_layer_weights(config, results, metrics, staging)
    if config.baselines:  # the SVMs on the same folds, in baselines/<model>/, reported beside the model
        metrics["baselines"] = {}
        for name in (b for b in BASELINES if b != config.model):
            baseline = config.for_model(name)
            reports = _run_folds(baseline, table, data.select(list(baseline.extractors())), folds, targets,
                                 os.path.join(staging, "baselines", name), log, verbose)
            metrics["baselines"][name] = summarise(baseline, reports)
    metrics = write_results(staging, metrics, log)
    move_into_place(staging, out)
    return metrics


def _report_layer_weights(config, results, metrics, folder):
    """The upstream's learned layer weights per target and fold into metrics.json, and a bar chart each."""
    from msir_keras.plots import plot_layer_weights

    for target, result in results.items():
        weights = {fold: r["layer_weights"] for fold, r in result["folds"].items() if "layer_weights" in r}
        if not weights:
            continue
        metrics.setdefault("layer_weights", {})[target] = weights
        name = "layer_weights.png" if target == "classification" else f"layer_weights_{target}.png"
        plot_layer_weights(pd.DataFrame(weights).T, os.path.join(folder, name),
                           title=f"{config.model} {target}: learned weights of the upstream's hidden states")


def _run_folds(config, table, data, folds, targets, folder, log, verbose):
    """Every target on every fold (a fold finished before is read back): {target: {"folds", "mean"}}."""
    results = {}
    for target in targets:
        reports = {}
        for fold in folds:
            fold_folder = os.path.join(folder, target, fold.name)
            report = finished_fold(config, fold_folder)
            if report is None:
                report = run_fold(config, table, data, fold, target, fold_folder, log, verbose)
            else:
                log_fold(config, target, fold.name, report, log, note="  (finished before, reused)")
            reports[fold.name] = report
        results[target] = {"folds": reports, "mean": mean_reports(list(reports.values()))}
    return results


def run_search(config, out, log=print):
    """`msir tune`: the search of `config.tune` inside each fold (no test), its choices per fold.

    Writes `out/<target>/<fold>/` (keras-tuner's state, trials.csv,
    val_uar_vs_lr.png, best.json) and `out/search.csv`: per fold the chosen
    values, their val_uar, trials and minutes. Started again, every search
    resumes where it stopped. Under keras-tuner's chief/worker mode the
    chief and every worker run this with the same config and `out` (a
    shared folder); the k-th search (targets, then folds) is served on
    KERASTUNER_ORACLE_PORT + k, and only the chief writes results.

    Returns:
        The search.csv table (None on a worker).
    """
    from msir_keras.tuning import cluster_role

    role = cluster_role()
    engine.check_backend(config)
    table, data, folds, _ = prepare(config, log)
    os.makedirs(out, exist_ok=True)
    if role != "worker":
        config.save(os.path.join(out, "config.json"))
    targets = ["classification"] if config.task == "classification" else list(config.targets)
    rows = []
    searches = [(target, fold) for target in targets for fold in folds]
    for index, (target, fold) in enumerate(searches):
        labels, class_names = target_labels(config, table, target)
        folder = os.path.join(out, target, fold.name)
        started = time.perf_counter()
        copies = training_copies(config, table, fold, labels, log)
        result = tune_fold(config, data, fold, labels, class_names, target, folder, log, search_index=index,
                           copies=copies)
        if result is None:
            continue  # a worker: the chief writes this search's results
        chosen = result[2]
        trials = pd.read_csv(os.path.join(folder, "trials.csv"))
        rows.append({"target": target, "fold": fold.name, **chosen,
                     "val_uar": float(trials["val_uar"].max()), "trials": len(trials),
                     "trial_minutes": round(float(trials["seconds"].sum()) / 60, 2),
                     "wall_minutes": round((time.perf_counter() - started) / 60, 2)})
    if role == "worker":
        return None
    summary = pd.DataFrame(rows)
    summary.to_csv(os.path.join(out, "search.csv"), index=False)
    log(summary.to_string(index=False))
    return summary
