"""Experiments: corpus -> cached features -> speaker-independent folds -> train, select, test.

One function, `run_experiment`, runs MSIR (any branch subset, focal or
cross-entropy loss) or an SVM baseline on a corpus, for 4-class
classification or one-vs-rest detection, and writes a run folder::

    config.json             the ExperimentConfig it ran with
    metrics.json            per-fold and mean figures
    results.md              the same as a table
    <target>/<fold>/        model.keras, normalization.json, history.csv,
                            predictions.csv, confusion.png, metrics.json

The epoch (MSIR) or C (SVM) is chosen on the validation part, drawn from the
training speakers; the test speakers are only ever predicted once, at the end.

A run is written into `<out>.partial` and moved to `<out>` when it has
finished, so a crash never leaves a half-written run where a finished one
was. Started again with the same configuration, a run resumes from its
`.partial` folder: folds whose `metrics.json` was written are not trained again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time

import numpy as np
import pandas as pd

from msir_keras.config import PAPER_ZETA, ExperimentConfig  # noqa: F401  (the runner's config)
from msir_keras.corpora import FOUR_CLASSES, class_labels, detection_labels, load_corpus, make_folds
from msir_keras.corpora.base import canonical_label
from msir_keras.features import DamagedEntryError, FeatureStore
from msir_keras.features.store import atomic_write
from msir_keras.features.base import ConfigError
from msir_keras.fusion import GROUP_COLUMNS, grouping_column, selection_groups
from msir_keras.metrics import classification_report, detection_report, mean_reports

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


ADD_GROUPS = "add a `group` column (e.g. the spoken text) to the manifest to choose on held-out groups"


def no_groups(table, rows):
    """Why a fold's training rows have no grouping to hold out (`fusion.grouping_column` found none)."""
    present = [c for c in GROUP_COLUMNS if c in table]
    if not present:
        return "the corpus has no `group` or `text` column"
    reasons = []
    for column in present:
        values = table[column].iloc[rows]
        blank = int(values.isna().sum())
        reasons.append(f"`{column}` is empty on {blank} of its {len(rows)} training utterances (fill them)" if blank
                       else f"`{column}` has one value among its training utterances")
    return "; ".join(reasons)


def selection_notes(config, table, folds):
    """One line per fold that cannot choose its settings on speakers it did not train on, saying what it does.

    A same-speaker score picks what fits that speaker: on a corpus of two
    speakers (one per training part), MSIR's val_uar reached 1.0 while the
    test speaker got chance. Such folds hold out another grouping (a
    `group` or `text` column: `fusion.GROUP_COLUMNS`) or train on a fixed
    budget (`_without_same_speaker_selection`, `fusion.selection_groups`).
    """
    notes = []
    for fold in folds:
        rows = np.sort(np.concatenate([fold.train, fold.validation]))
        count = table["speaker"].iloc[rows].nunique()
        if config.model == "fusion" and count < config.inner_folds:
            by, _, groups = selection_groups(table, rows, config.inner_folds)
            if by == "speaker":
                notes.append(f"fold {fold.name} trains on {count} speakers, fewer than inner_folds="
                             f"{config.inner_folds}: the fused detector holds out {count} speaker groups")
            elif by is not None:
                notes.append(f"fold {fold.name} trains on one speaker: the fused detector holds out groups of the "
                             f"corpus's `{by}` values instead ({'; '.join(', '.join(g) for g in groups)})")
            else:
                notes.append(f"fold {fold.name} trains on one speaker and {no_groups(table, rows)}: the fused "
                             f"detector trains on a fixed budget ({config.epochs} MSIR epochs, ComParE C=1, equal "
                             f"weights); {ADD_GROUPS}")
        elif config.model != "fusion" and count < 2:
            fold = _without_same_speaker_selection(config, table, fold)
            selection = fold_selection(table, fold)
            what = "MSIR's epoch" if config.model == "msir" else "the SVM's C"
            if selection.get("fixed_budget"):
                budget = f"MSIR trains {config.epochs} epochs (no early stopping)" if config.model == "msir" \
                    else "the SVM takes C=1"
                notes.append(f"fold {fold.name} trains on one speaker and {no_groups(table, rows)}: a fixed "
                             f"budget, {budget}; {ADD_GROUPS}")
            else:
                held = sorted(set(table[selection["held_out"]].iloc[fold.validation].astype(str)))
                notes.append(f"fold {fold.name} trains on one speaker: {what} is chosen on held-out "
                             f"`{selection['held_out']}` values ({', '.join(held)}), not on that speaker's other "
                             "utterances")
    return notes


def fold_selection(table, fold):
    """What a (non-fused) fold with one training speaker validates on: {"held_out": column} or a fixed budget.

    Returns {} for a fold with two training speakers or more.
    """
    rows = np.concatenate([fold.train, fold.validation])
    if table["speaker"].iloc[rows].nunique() >= 2:
        return {}
    if not len(fold.validation):
        return {"held_out": None, "fixed_budget": True}
    return {"held_out": grouping_column(table, np.sort(rows))}


def _without_same_speaker_selection(config, table, fold):
    """A fold whose training part holds one speaker: validation on held-out groups, or none (fixed budget).

    For MSIR and the SVMs (the fused detector holds out groups itself):
    the validation part is made of whole values of `fusion.grouping_column`,
    drawn with the config's seed until they hold a `config.validation`
    share of the utterances (never every value); without such a column it
    is empty, and `engine.fit`
    trains every epoch and keeps the last, `baselines.fit_svm` takes C=1.
    """
    rows = np.sort(np.concatenate([fold.train, fold.validation]))
    if config.model == "fusion" or config.validation <= 0 or table["speaker"].iloc[rows].nunique() >= 2:
        return fold
    column = grouping_column(table, rows)
    if column is None:
        return dataclasses.replace(fold, train=rows, validation=rows[:0])
    keys = table[column].iloc[rows].astype(str).to_numpy()
    values = np.random.default_rng(config.seed).permutation(sorted(set(keys)))
    # Whole values, drawn in turn until they hold the validation share of the utterances (never all values).
    sizes = np.cumsum([np.count_nonzero(keys == value) for value in values[:-1]])
    count = int(np.searchsorted(sizes, config.validation * len(rows))) + 1
    in_validation = np.isin(keys, values[: min(count, len(values) - 1)])
    return dataclasses.replace(fold, train=rows[~in_validation], validation=rows[in_validation])


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


def target_labels(config, table, target, classes=None):
    """(labels, class names) of one target: the classes, or an emotion vs the rest.

    The classes are `classes` (a trained model's), else the config's
    (`emotions`): the four, or every label of the table in alphabetical order.
    """
    if config.task == "classification":
        if classes is None:
            classes = FOUR_CLASSES if config.emotions == "four" else sorted(set(table["label"]))
        return class_labels(table, list(classes)), list(classes)
    return detection_labels(table, target), [f"not-{target}", target]


def train_msir(config, data, fold, labels, class_names, target, verbose=0):
    """Trains MSIR on one fold with the engine; the weights of the best validation-UAR epoch are kept.

    Returns:
        (model, history DataFrame).
    """
    from msir_keras import engine

    return engine.train(config, data, fold, labels, class_names, target, verbose=verbose)


def training_copies(config, table, fold, labels, log=print):
    """Speed-perturbed copies of the fold's training utterances (`config.speeds`), labelled; None if off.

    Only `fold.train` rows are perturbed: no copy of a validation or test
    utterance is ever made. Each copy is a store entry of its own
    (`augment.SpeedPerturbed`), computed once and reused by later folds
    and runs. A file whose copy fails is left out of the copies, and said.
    """
    if not config.speeds or config.model != "msir":
        return None
    from msir_keras.augment import SpeedPerturbed
    from msir_keras.data import FeatureSet

    store = FeatureStore(config.store)
    paths = table["path"].iloc[fold.train].tolist()
    copies = []
    for factor in config.speeds:
        extractors = {name: SpeedPerturbed(e, factor) for name, e in config.extractors().items()}
        summary = store.extract(paths, list(extractors.values()))
        log(f"    speed {factor:g} copies of {len(paths)} training utterances: {summary}")
        failed = {path for path, _ in summary.failed}
        for path, reason in summary.failed:
            log(f"WARNING: {path}: no copy at speed {factor:g} ({reason})")
        kept = [i for i, path in enumerate(paths) if path not in failed]
        copies.append(FeatureSet.from_store(store, [paths[i] for i in kept], extractors,
                                            labels[np.asarray(fold.train)[kept]]))
    return copies[0].concatenate(*copies[1:])


def tune_fold(config, data, fold, labels, class_names, target, folder, log=print, search_index=0, copies=None):
    """Searches `config.tune` on one fold's training speakers (scored on its validation part).

    `copies` (augmented training utterances, `training_copies`) join the
    training part of every trial.

    Returns:
        (the config with the chosen training settings (learning rate, batch
        size, ...), the chosen MSIR options, every chosen value); None on a
        keras-tuner worker.
    """
    from msir_keras import tuning

    labelled = data.with_labels(labels)
    train = labelled.subset(fold.train)
    if copies is not None:
        train = train.concatenate(copies)
    chosen, _ = tuning.tune(config, train, labelled.subset(fold.validation), class_names,
                            target, tuning.load_space(config.tune), folder, config.tuner, config.max_trials,
                            log=log, search_index=search_index)
    if chosen is None:
        return None
    log(f"    {target} {fold.name}: chosen on validation {chosen}")
    fold_config = dataclasses.replace(
        config, tune=None, **{k: v for k, v in chosen.items() if k in tuning.TRAINING_CHOICES})
    overrides = {k: v for k, v in chosen.items() if k not in tuning.TRAINING_CHOICES}
    return fold_config, overrides, chosen


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


def _fit_baseline(config, data, fold, labels):
    """An SVM on one fold: C chosen on its validation part (a fixed C where it has none)."""
    from msir_keras.baselines import fit_svm

    name = next(iter(data.features))
    x = np.stack(data.features[name])
    model, best_c, scores = fit_svm(
        x[fold.train], labels[fold.train], x[fold.validation], labels[fold.validation],
        seed=config.seed,
    )
    predicted = model.predict(x[fold.test])
    history = pd.DataFrame({"C": list(scores), "val_uar": list(scores.values())})
    return predicted, None, history, {"C": best_c}


def train_members(config, data, fold, labels, class_names, target, callbacks, verbose, copies, overrides):
    """Trains `config.ensemble` models on one fold (seeds seed, seed+1, ...); one model, or their MSIREnsemble.

    Returns:
        (model, history DataFrame (a `member` column for an ensemble), a
        list of {"seed", "best_epoch", "epochs_run", "val_uar"} per member).
    """
    from msir_keras import engine

    models, histories, members = [], [], []
    for index in range(config.ensemble):
        seed = config.seed + index
        named = {"name": f"msir_seed{seed}"} if config.ensemble > 1 else {}
        model, history = engine.train(config, data, fold, labels, class_names, target, seed=seed,
                                      callbacks=callbacks, verbose=verbose, copies=copies, **overrides, **named)
        models.append(model)
        histories.append(history.assign(member=seed) if config.ensemble > 1 else history)
        if "val_uar" in history:
            members.append({"seed": seed, "best_epoch": int(history["val_uar"].idxmax()) + 1,
                            "epochs_run": len(history), "val_uar": float(history["val_uar"].max())})
        else:  # a fixed budget (no validation part): the last epoch
            members.append({"seed": seed, "best_epoch": len(history), "epochs_run": len(history)})
    if len(models) == 1:
        return models[0], histories[0], members
    from msir_keras.model import MSIREnsemble

    return MSIREnsemble(models), pd.concat(histories, ignore_index=True), members


def _report(config, y_true, y_pred, class_names):
    if config.task == "classification":
        return classification_report(y_true, y_pred, class_names)
    return detection_report(y_true, y_pred)


def run_fold(config, table, data, fold, target, folder, log=print, verbose=0):
    """Trains and tests one target on one fold, writing its folder. Returns its report."""
    from msir_keras.plots import plot_confusion

    started = time.perf_counter()
    os.makedirs(folder, exist_ok=True)
    labels, class_names = target_labels(config, table, target)
    # One training speaker: validate on held-out groups or nothing (an SVM beside another model gets its folds).
    fold = _without_same_speaker_selection(config, table, fold)
    held_out = {} if config.model == "fusion" else fold_selection(table, fold)
    trained = config.model in ("msir", "fusion")
    if config.model == "fusion":
        from msir_keras.fusion import train_fused

        model, history, extra, selection = _checked_training(
            lambda: train_fused(config, table, data, fold, labels, class_names, target, log, verbose), target, fold)
        if selection is not None:  # None: a fixed budget, nothing chosen
            selection.to_csv(os.path.join(folder, "selection.csv"), index=False)
        data = data.select(model.feature_inputs)
    elif config.model == "msir":
        fold_config, overrides, chosen = config, {}, {}
        copies = training_copies(config, table, fold, labels, log)
        if config.tune:
            fold_config, overrides, chosen = tune_fold(config, data, fold, labels, class_names, target,
                                                       os.path.join(folder, "tuning"), log, copies=copies)
        callbacks = []
        if config.tensorboard:
            import keras

            callbacks.append(keras.callbacks.TensorBoard(log_dir=os.path.join(folder, "tensorboard")))
        model, history, members = _checked_training(
            lambda: train_members(fold_config, data, fold, labels, class_names, target, callbacks, verbose,
                                  copies, overrides), target, fold)
        extra = members[0]
        if len(members) > 1 and "val_uar" in extra:
            extra = {**extra, "val_uar": float(np.mean([m["val_uar"] for m in members])), "members": members}
        elif len(members) > 1:
            extra = {**extra, "members": members}
        if chosen:
            extra["chosen"] = chosen
    else:
        predicted, probabilities, history, extra = _fit_baseline(config, data, fold, labels)
    if held_out:
        extra = {**extra, "selection": held_out}
    if trained:
        from msir_keras.engine import NonFiniteLossError

        probabilities = data.subset(fold.test).predict(model, config.batch_size)
        if not np.all(np.isfinite(probabilities)):
            raise NonFiniteLossError(f"{target} {fold.name}: the model's test probabilities hold NaN or "
                                     "infinity; nothing of this fold is written (try --precision float32 or "
                                     "a lower --learning-rate)")
        predicted = probabilities.argmax(axis=-1)
        model.save(os.path.join(folder, "model.keras"))
        from msir_keras.export import export_model
        from msir_keras.serving import SERVING, tensorflow_backend

        if config.savedmodel and tensorflow_backend():  # under JAX or PyTorch: model.keras alone
            # A SavedModel beside it: `msir predict` loads it without tracing the model again.
            export_model(model, os.path.join(folder, SERVING))
        statistics = model.get_normalization()
        with open(os.path.join(folder, "normalization.json"), "w") as handle:
            json.dump({k: {"mean": m.tolist(), "std": s.tolist()} for k, (m, s) in statistics.items()},
                      handle)
    history.to_csv(os.path.join(folder, "history.csv"), index=False)
    test = table.iloc[fold.test]
    predictions = pd.DataFrame({
        "path": test["path"].to_numpy(),
        "speaker": test["speaker"].to_numpy(),
        "label": [class_names[i] for i in labels[fold.test]],
        "predicted": [class_names[i] for i in predicted],
    })
    if probabilities is not None:
        for index, name in enumerate(class_names):
            predictions[f"p_{name}"] = probabilities[:, index]
    if config.model == "fusion":  # each part's own probabilities and UAR, beside the fused ones
        from msir_keras.fusion import part_probabilities

        for part, values in part_probabilities(model, data.subset(fold.test), config.batch_size).items():
            for index, name in enumerate(class_names):
                predictions[f"{part}_p_{name}"] = values[:, index]
            extra[f"{part}_uar"] = _report(config, labels[fold.test], values.argmax(axis=1), class_names)["uar"]
    predictions.to_csv(os.path.join(folder, "predictions.csv"), index=False)
    report = _report(config, labels[fold.test], predicted, class_names)
    if config.model == "fusion":  # it trains on both parts, holding out groups of them in turn (`selection`)
        fold = dataclasses.replace(fold, train=np.sort(np.concatenate([fold.train, fold.validation])),
                                   validation=fold.validation[:0])
    report.update(fold=fold.to_dict(table), seconds=round(time.perf_counter() - started, 1), **extra)
    plot_confusion(report["confusion"], class_names, os.path.join(folder, "confusion.png"),
                   title=f"{config.model} {target}, {fold.name}: UAR {report['uar']:.1%}")
    # Written last: its presence marks the fold as finished (a resumed run skips it).
    write_json(os.path.join(folder, "metrics.json"), report)
    _log_fold(config, target, fold.name, report, log)
    return report


def _checked_training(train, target, fold):
    """Runs `train()`; a NaN or infinite loss is re-raised naming the target and fold."""
    from msir_keras.engine import NonFiniteLossError

    try:
        return train()
    except NonFiniteLossError as error:
        raise NonFiniteLossError(f"{target} {fold.name}: {error}. The folds finished before are kept: the "
                                 "same command resumes from them; with other settings add --overwrite") from None


def _log_fold(config, target, name, report, log, note=""):
    """A fold's line: its test figures, the best val_uar (the epoch's choice) and its time."""
    chosen = ""
    if "members" in report and "val_uar" in report:  # an ensemble, or a fused detector's MSIR members
        chosen = f"  best val_uar {report['val_uar']:.3f} (mean of {len(report['members'])} models' best epochs)"
    elif "val_uar" in report:
        chosen = f"  best val_uar {report['val_uar']:.3f} (epoch {report['best_epoch']})"
    if config.model.startswith("svm-"):  # named: a run prints its baselines' lines after its own
        chosen = f"  ({config.model}, C={report['C']:g})" if "C" in report else f"  ({config.model})"
    log(f"  {target:>14} {name:<22} UAR {report['uar']:.3f}  "
        + (f"WA {report['wa']:.3f}  macro-F1 {report['macro_f1']:.3f}"
           if config.task == "classification"
           else f"TPR {report['sensitivity']:.3f}  TNR {report['specificity']:.3f}  F1 {report['f1']:.3f}")
        + chosen + (f"  {report['seconds']:.0f} s" if "seconds" in report else "") + note)


def finished_fold(config, folder):
    """The saved report of a fold that a previous attempt finished, or None."""
    path = os.path.join(folder, "metrics.json")
    if not os.path.exists(path) or (config.model in ("msir", "fusion") and not os.path.exists(
            os.path.join(folder, "model.keras"))):
        return None
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError:  # killed while writing it: the fold is trained again
        return None


def write_json(path, value):
    """Writes valid JSON, whole or not at all: NaN and infinity (undefined figures) become null."""
    text = json.dumps(_finite(value), indent=2, allow_nan=False).encode()
    atomic_write(path, lambda stream: stream.write(text))


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class RunFolderError(ConfigError):
    """A run folder that would be overwritten, or a partial run of another configuration."""


def staging_folder(out):
    return os.path.normpath(out) + ".partial"


def check_run_folder(config, out, overwrite=False):
    """Refuses, before any work, to write over a finished run or a foreign partial one."""
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise RunFolderError(
            f"{out} already holds a run; pass --overwrite to replace it (the old one is kept until "
            "the new one has finished) or choose another --out"
        )
    staging = staging_folder(out)
    saved = os.path.join(staging, "config.json")
    if os.path.exists(saved) and not overwrite:
        if ExperimentConfig.load(saved).to_dict() != ExperimentConfig.from_dict(config.to_dict()).to_dict():
            raise RunFolderError(
                f"{staging} holds an unfinished run with another configuration; pass --overwrite "
                "to discard it, or delete it"
            )


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
    if config.baselines:  # the SVMs on the same folds, in baselines/<model>/, reported beside the model
        metrics["baselines"] = {}
        for name in (b for b in BASELINES if b != config.model):
            baseline = config.for_model(name)
            reports = _run_folds(baseline, table, data.select(list(baseline.extractors())), folds, targets,
                                 os.path.join(staging, "baselines", name), log, verbose)
            metrics["baselines"][name] = summarise(baseline, reports)
    metrics = write_results(staging, metrics, log)
    _move_into_place(staging, out)
    return metrics


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
                _log_fold(config, target, fold.name, report, log, note="  (finished before, reused)")
            reports[fold.name] = report
        results[target] = {"folds": reports, "mean": mean_reports(list(reports.values()))}
    return results


def _move_into_place(staging, out):
    """Replaces `out` by the finished `staging` folder; an old run goes only once the new one is there."""
    old = None
    if os.path.exists(out):
        old = f"{os.path.normpath(out)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old)


def write_results(out, metrics, log=print):
    """Writes metrics.json and results.md (the table, also logged) into `out`."""
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "metrics.json"), metrics)
    text = results_table(metrics)
    with open(os.path.join(out, "results.md"), "w") as handle:
        handle.write(text + "\n")
    log(text)
    return metrics


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
    text = _markdown(header, rows)
    comparison = comparison_table(metrics)
    heading = "UAR beside the baselines (same folds)" if metrics.get("baselines") else "UAR of each part (same folds)"
    return text if comparison is None else f"{text}\n\n{heading}:\n\n{comparison}"


def _markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


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
    return _markdown(header, rows)
