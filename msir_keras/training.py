"""Training one fold: MSIR (one model, a seed ensemble, a keras-tuner search), the fused detector or an SVM.

`run_fold` trains one target on one fold, chooses on the fold's validation
part only (`selection` for a fold with one training speaker), predicts its
test part once and writes the fold's folder::

    model.keras, normalization.json     MSIR and the fused detector
    selection.csv                       the fused detector's choices on held-out groups
    history.csv, predictions.csv, confusion.png
    metrics.json                        written last: the fold has finished
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import pandas as pd

from msir_keras.corpora import FOUR_CLASSES, class_labels, detection_labels
from msir_keras.features import FeatureStore
from msir_keras.metrics import classification_report, detection_report
from msir_keras.runfolder import write_json
from msir_keras.selection import _without_same_speaker_selection, fold_selection


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
        from msir_keras.model import upstream_layer_weights

        weights = upstream_layer_weights(model)
        if weights is not None:  # `--upstream-layer all`: which hidden states the model learned to use
            extra = {**extra, "layer_weights": [round(float(w), 4) for w in weights]}
            log(f"    {fold.name}: upstream layer weights " + " ".join(f"{w:.2f}" for w in weights)
                + f" (largest: hidden state {int(np.argmax(weights))})")
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
    log_fold(config, target, fold.name, report, log)
    return report


def _checked_training(train, target, fold):
    """Runs `train()`; a NaN or infinite loss is re-raised naming the target and fold."""
    from msir_keras.engine import NonFiniteLossError

    try:
        return train()
    except NonFiniteLossError as error:
        raise NonFiniteLossError(f"{target} {fold.name}: {error}. The folds finished before are kept: the "
                                 "same command resumes from them; with other settings add --overwrite") from None


def log_fold(config, target, name, report, log, note=""):
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
