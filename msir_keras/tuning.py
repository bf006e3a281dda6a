"""keras-tuner over MSIR: the paper's learning-rate grid, and wider search spaces.

A search runs on the training speakers only: each trial trains on a fold's
training part and is scored by `val_uar` on its validation part (speakers
or utterances of the training speakers); the fold's test speakers never
reach a trial. With speaker folds the search runs inside each fold (nested
selection); with the session split, once on sessions 1-4.

Search spaces are data: {"name": {"choice": [...]}} or {"name": {"float":
[low, high], "step": s, "sampling": "log"}} or {"name": {"int": [low, high],
"step": s}}. The names in `TRAINING_CHOICES` (learning_rate, batch_size,
epochs, patience, label_smoothing, lr_schedule, clipnorm, class_weights)
are training settings of the experiment's config; every other name is an
MSIR argument (dropout, cr_lstm_units, weight_decay, feature_masks, ...).

Example:
>>> space = SPACES["paper-lr"]
>>> len(space["learning_rate"]["choice"])
10
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time

import numpy as np
import pandas as pd

from msir_keras.config import TUNERS
from msir_keras.features.base import ConfigError

# The paper's grid (section 4.1), in the paper's order.
PAPER_LEARNING_RATES = [5e-6, 1e-6, 5e-5, 1e-5, 5e-4, 1e-4, 5e-3, 1e-3, 5e-2, 1e-2]
SPACES = {"paper-lr": {"learning_rate": {"choice": PAPER_LEARNING_RATES}}}
TRAINING_CHOICES = ("learning_rate", "batch_size", "epochs", "patience", "label_smoothing", "lr_schedule",
                    "clipnorm", "class_weights")


def load_space(name_or_path):
    """A search space by name (`SPACES`) or from a JSON file, checked."""
    if name_or_path in SPACES:
        space = SPACES[name_or_path]
    elif os.path.isfile(name_or_path):
        with open(name_or_path) as handle:
            try:
                space = json.load(handle)
            except json.JSONDecodeError as error:
                raise ConfigError(f"{name_or_path}: not valid JSON ({error})") from None
    else:
        raise ConfigError(f"--space {name_or_path!r}: neither a known space {sorted(SPACES)} nor a JSON file")
    for name, spec in space.items():
        kinds = [k for k in ("choice", "float", "int") if k in spec]
        if len(kinds) != 1:
            raise ConfigError(f"search space entry {name!r} needs one of choice/float/int, got {spec}")
    return space


def draw(hp, name, spec):
    """One hyperparameter from its spec."""
    if "choice" in spec:
        return hp.Choice(name, list(spec["choice"]), ordered=False)
    low, high = spec["float"] if "float" in spec else spec["int"]
    if "float" in spec:
        return hp.Float(name, low, high, step=spec.get("step"), sampling=spec.get("sampling", "linear"))
    return hp.Int(name, low, high, step=spec.get("step", 1), sampling=spec.get("sampling", "linear"))


def _hypermodel_base():
    import keras_tuner

    return keras_tuner.HyperModel


class MSIRHyperModel(_hypermodel_base()):
    """MSIR as a keras-tuner HyperModel: `build(hp)` draws the space, `fit` trains with the engine.

    The learning rate is always drawn, from the space's `learning_rate`
    entry or else from the paper's grid (`PAPER_LEARNING_RATES`).

    Args:
        config: ExperimentConfig. Everything not drawn comes from it.
        train, valid: labelled FeatureSets: a fold's training and validation parts.
        class_names: list of str. target: str ("classification" or an emotion).
        space: dict, a search space (see the module doc); defaults to the paper's grid.
        seed: int or None. Every trial starts from this seed (weights, batch order).
    """

    def __init__(self, config, train, valid, class_names, target="classification", space=None, seed=None):
        super().__init__(name="msir")
        self.config = config
        self.train, self.valid = train, valid
        self.class_names = list(class_names)
        self.target = target
        self.space = dict(space or SPACES["paper-lr"])
        self.seed = config.seed if seed is None else seed
        self.normalization = train.fit_normalization()
        self.trials_run = 0

    def trial_config(self, hp):
        """The config with this trial's training choices (the same values in `build` and `fit`)."""
        import dataclasses

        drawn = {name: draw(hp, name, spec) for name, spec in self.space.items() if name in TRAINING_CHOICES}
        drawn["learning_rate"] = draw(hp, "learning_rate",
                                      self.space.get("learning_rate", {"choice": PAPER_LEARNING_RATES}))
        return dataclasses.replace(self.config, **drawn)

    def build(self, hp):
        from msir_keras import engine

        import keras

        keras.utils.set_random_seed(self.seed)
        config = self.trial_config(hp)
        overrides = {name: draw(hp, name, spec) for name, spec in self.space.items()
                     if name not in TRAINING_CHOICES}
        model = engine.build(config, self.train.frame_shapes(), self.class_names, self.normalization,
                             engine.feature_config(config), **overrides)
        return engine.compile_model(model, config, self.target)

    def fit(self, hp, model, *args, callbacks=(), verbose=0, epochs=None, initial_epoch=0, **kwargs):
        """Trains one trial; `epochs` and `initial_epoch` are keras-tuner's where it passes them.

        Hyperband gives each trial its budget (`epochs`) and, for a trial
        that continues a parent's weights, the epoch to start from
        (`initial_epoch`); other tuners pass neither, and the trial trains
        the config's (or the drawn) epochs.
        """
        from msir_keras import engine

        started = time.perf_counter()
        try:
            history = engine.fit(model, self.train, self.valid, self.trial_config(hp), seed=self.seed,
                                 epochs=epochs, initial_epoch=initial_epoch, callbacks=list(callbacks),
                                 verbose=verbose)
        except engine.NonFiniteLossError:
            # A rate that diverges is a result of the search, not a failure of it: recorded at
            # val_uar 0 (keras-tuner would drop a failed trial, and stop after three in a row).
            self.trials_run += 1
            return {"val_uar": 0.0, "best_epoch": 0, "epochs_run": 0, "diverged": 1.0,
                    "seconds": time.perf_counter() - started}
        self.trials_run += 1
        best = int(history["val_uar"].idxmax())
        return {
            "val_uar": float(history["val_uar"].iloc[best]),
            "best_epoch": int(history["epoch"].iloc[best]) + 1,
            "epochs_run": len(history),
            "seconds": time.perf_counter() - started,
        }


def _grid_oracle(objective, max_trials, seed):
    """A grid oracle that resumes: the next combination is the first not tried yet.

    keras-tuner's GridSearchOracle keeps its walk through the grid in memory
    only; reloaded from disk after a kill it stops at once. This one derives
    the next combination from the trials on disk (`tried_so_far`), so a
    search killed after trial 4 goes on with trial 5. Failed trials are not
    tried again. Under keras-tuner's chief/worker mode no two workers get
    the same combination.
    """
    import keras_tuner
    from keras_tuner.engine.trial import TrialStatus

    class ResumableGridOracle(keras_tuner.Oracle):
        def populate_space(self, trial_id):
            space = [hp for hp in self.get_space().space]
            grids = []
            for hp in space:
                values = getattr(hp, "values", None)
                if values is None:
                    raise ConfigError(f"grid search needs a finite set of values for {hp.name!r}: give it "
                                      "a choice list or a step, or use --tuner bayesian")
                grids.append(list(values))
            running = [t.hyperparameters.values for t in self.ongoing_trials.values()]
            for combination in itertools.product(*grids):
                values = {hp.name: value for hp, value in zip(space, combination)}
                if not self._tried(values) and values not in running:
                    return {"status": TrialStatus.RUNNING, "values": values}
            # Nothing left to hand out: this tuner stops, while others finish what they run (the
            # chief waits for them). IDLE would have it ask again at once, a busy loop over gRPC.
            return {"status": TrialStatus.STOPPED, "values": None}

        def _tried(self, values):
            return self._compute_values_hash(values) in self._tried_so_far

    return ResumableGridOracle(objective=objective, max_trials=max_trials, seed=seed)


CLUSTER_VARIABLES = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def cluster_role(environ=None):
    """This process's part in keras-tuner's chief/worker mode: None (alone), "chief" or "worker".

    keras-tuner reads three variables: `KERASTUNER_ORACLE_IP` and
    `KERASTUNER_ORACLE_PORT` name the chief, `KERASTUNER_TUNER_ID` this
    process ("chief" on the chief; "tuner0", "tuner1"... on the workers).
    They are checked here, before any work.
    """
    environ = os.environ if environ is None else environ
    given = [name for name in CLUSTER_VARIABLES if environ.get(name)]
    if not given:
        return None
    if len(given) < len(CLUSTER_VARIABLES):
        missing = [name for name in CLUSTER_VARIABLES if name not in given]
        raise ConfigError(f"keras-tuner's chief/worker mode needs {', '.join(CLUSTER_VARIABLES)}; "
                          f"{', '.join(missing)} not set (KERASTUNER_TUNER_ID: chief on the chief, "
                          "tuner0, tuner1, ... on the workers)")
    port = environ["KERASTUNER_ORACLE_PORT"]
    if not port.isdigit():
        raise ConfigError(f"KERASTUNER_ORACLE_PORT must be a port number, got {port!r}")
    return "chief" if "chief" in environ["KERASTUNER_TUNER_ID"] else "worker"


@contextlib.contextmanager
def _search_port(search_index):
    """Search `i` of a run is served on KERASTUNER_ORACLE_PORT + i.

    A worker that finishes one fold's search goes on to the next fold's
    while the chief may still wait for another worker's last trial; on one
    port it would ask the finished oracle for a trial and be told to stop.
    keras-tuner reads the port from the environment when the tuner is made
    and when the chief serves, so it is set for this block and restored.
    """
    if cluster_role() is None or not search_index:
        yield
        return
    base = os.environ["KERASTUNER_ORACLE_PORT"]
    os.environ["KERASTUNER_ORACLE_PORT"] = str(int(base) + search_index)
    try:
        yield
    finally:
        os.environ["KERASTUNER_ORACLE_PORT"] = base


def make_tuner(hypermodel, kind="grid", max_trials=None, directory="tuning", project_name="search",
               strategy=None, overwrite=False, seed=0):
    """A keras-tuner tuner over `hypermodel`, objective val_uar (max), resumable unless `overwrite`."""
    import keras_tuner

    if kind not in TUNERS:
        raise ConfigError(f"--tuner must be one of {TUNERS}, got {kind!r}")
    common = dict(objective=keras_tuner.Objective("val_uar", direction="max"), directory=directory,
                  project_name=project_name, overwrite=overwrite, distribution_strategy=strategy, seed=seed)
    if kind == "grid":
        oracle = _grid_oracle(common.pop("objective"), max_trials, common.pop("seed"))
        return keras_tuner.Tuner(oracle=oracle, hypermodel=hypermodel, **common)
    if kind == "bayesian":
        return keras_tuner.BayesianOptimization(hypermodel, max_trials=max_trials or 20, **common)
    return keras_tuner.Hyperband(hypermodel, max_epochs=hypermodel.config.epochs, **common)


def trial_table(tuner):
    """Every finished trial: its hyperparameters, val_uar, epochs and seconds, best first."""
    rows = []
    for trial in tuner.oracle.trials.values():
        if trial.status != "COMPLETED":
            continue
        row = {"trial": trial.trial_id, **trial.hyperparameters.values}
        for name in ("val_uar", "best_epoch", "epochs_run", "seconds"):
            row[name] = trial.metrics.get_best_value(name) if trial.metrics.exists(name) else np.nan
        # A trial whose loss became NaN or infinite (its val_uar is recorded as 0).
        row["diverged"] = bool(trial.metrics.exists("diverged") and trial.metrics.get_best_value("diverged"))
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values("val_uar", ascending=False, kind="stable").reset_index(drop=True) if rows else table


def tune(config, train, valid, class_names, target, space, folder, kind="grid", max_trials=None,
         strategy=None, overwrite=False, log=print, search_index=0):
    """Runs (or resumes) one search in `folder`; writes trials.csv and val_uar_vs_lr.png.

    In keras-tuner's chief/worker mode (`cluster_role`) the chief serves
    the search's oracle on KERASTUNER_ORACLE_PORT + `search_index` and
    writes the results when every worker is done; a worker runs the trials
    the chief hands it and writes nothing but its trials' checkpoints.

    Returns:
        (best hyperparameter values dict, the tuner); on a worker (None, the tuner).
    """
    from msir_keras.plots import plot_search

    from msir_keras.engine import make_strategy, precision

    role = cluster_role()
    if role == "worker" and overwrite:
        raise ConfigError("a keras-tuner worker cannot --overwrite: the search folder is the chief's")
    hypermodel = MSIRHyperModel(config, train, valid, class_names, target, space)
    strategy = strategy if strategy is not None else make_strategy(config.strategy)
    callbacks = []
    if config.tensorboard:
        import keras

        # keras-tuner gives each trial its own folder under this one.
        callbacks.append(keras.callbacks.TensorBoard(log_dir=os.path.join(folder, "tensorboard")))
    with _search_port(search_index):
        tuner = make_tuner(hypermodel, kind, max_trials, directory=folder, project_name="keras-tuner",
                           strategy=strategy, overwrite=overwrite, seed=config.seed)
        if role != "worker":
            done = sum(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
            if done:
                log(f"    resuming the search in {folder}: {done} trial(s) finished before")
        if role is not None:
            log(f"    {os.environ['KERASTUNER_TUNER_ID']}: {'serving' if role == 'chief' else 'joining'} the search "
                f"of {target} on {os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}")
        with precision(config.precision):
            tuner.search(callbacks=callbacks, verbose=0)
    if role == "worker":
        log(f"    {os.environ['KERASTUNER_TUNER_ID']}: ran {hypermodel.trials_run} trial(s) of this search; "
            "the chief writes its results")
        return None, tuner
    table = trial_table(tuner)
    if table.empty:
        failed = [t for t in tuner.oracle.trials.values() if t.status == "FAILED"]
        reason = failed[0].message.strip().splitlines()[-1] if failed and failed[0].message else "unknown"
        raise RuntimeError(f"{folder}: no trial of the search finished ({len(failed)} failed; the first: {reason})")
    table.to_csv(os.path.join(folder, "trials.csv"), index=False)
    if len(table) and "learning_rate" in table:
        plot_search(table, os.path.join(folder, "val_uar_vs_lr.png"),
                    title=f"{target}: val_uar per learning rate ({len(table)} trials)")
    best = tuner.get_best_hyperparameters(1)[0].values
    with open(os.path.join(folder, "best.json"), "w") as handle:
        json.dump(best, handle, indent=2)
    return best, tuner
