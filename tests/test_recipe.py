"""Training recipes: label smoothing, schedules, clipping, class weights, seed ensembles, named presets."""

import dataclasses
import json
import os

import numpy as np
import pytest

import oracles

from msir_keras import engine
from msir_keras.cli.flags import RUN_RECIPE, experiment_config
from msir_keras.cli.parser import build_parser
from msir_keras.config import RECIPES, ExperimentConfig
from msir_keras.data import FeatureSet
from msir_keras.features.base import ConfigError
from msir_keras.model import MSIR, MSIREnsemble, load_model

RNG = np.random.default_rng(11)


def _features(n=24, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(10, 30, size=n)
    labels = np.arange(n) % classes
    # The LLDs carry the class in their mean: a model can learn them in a few steps.
    return FeatureSet({"lld": [rng.normal(size=(t, 6)).astype("float32") + labels[i] for i, t in enumerate(lengths)]},
                      labels)


def _config(**changes):
    settings = dict(wav2vec2=None, branches=("lld",), preset="tiny", epochs=4, patience=10, batch_size=8)
    return ExperimentConfig(**{**settings, **changes})


def test_label_smoothing_matches_a_numpy_reference_for_both_losses():
    probabilities = RNG.dirichlet(np.ones(4), size=6).astype("float32")
    labels = np.array([0, 1, 2, 3, 1, 0])
    smoothed = np.full((6, 4), 0.1 / 4) + 0.9 * np.eye(4)[labels]
    log_p = np.log(probabilities)
    crossentropy = engine.loss_for(_config(loss="crossentropy", label_smoothing=0.1), "classification")
    np.testing.assert_allclose(float(crossentropy(labels, probabilities)), (-smoothed * log_p).sum(1).mean(),
                               rtol=1e-5)
    focal = engine.loss_for(_config(loss="focal", label_smoothing=0.1, zeta=0.25), "classification")
    reference = (-smoothed * 0.25 * (1 - probabilities) ** 2 * log_p).sum(1).mean()
    np.testing.assert_allclose(float(focal(labels, probabilities)), reference, rtol=1e-5)
    # Without smoothing the cross-entropy is Keras's own.
    plain = engine.loss_for(_config(loss="crossentropy"), "classification")
    np.testing.assert_allclose(float(plain(labels, probabilities)),
                               -log_p[np.arange(6), labels].mean(), rtol=1e-5)


def test_balanced_class_weights_match_the_numpy_oracle():
    """scikit-learn's weights on an EmoDB-like skew (angry 127, happy 71, neutral 79, sad 62 files)."""
    labels = np.repeat(np.arange(4), [127, 71, 79, 62])
    weights = engine.class_weights(_config(class_weights="balanced"), labels, 4)
    expected = oracles.balanced_class_weights(labels, 4)
    np.testing.assert_allclose([weights[c] for c in range(4)], [expected[c] for c in range(4)])
    assert all(type(weight) is float for weight in weights.values())  # written into the run's JSON
    assert engine.class_weights(_config(), labels, 4) is None
    with pytest.raises(ConfigError, match=r"no example of class\(es\) \[3\]"):
        engine.class_weights(_config(class_weights="balanced"), labels[labels < 3], 4)


@pytest.mark.slow
def test_schedules_set_the_learning_rate_per_epoch_and_clipping_reaches_adam():
    (cosine,) = engine.schedule_callbacks(_config(lr_schedule="cosine", learning_rate=1e-3), 10)
    np.testing.assert_allclose([cosine.schedule(e, None) for e in range(12)],
                               [oracles.cosine_rate(1e-3, e, 10) for e in range(12)], rtol=1e-5, atol=1e-12)
    data = _features()
    for schedule in ("cosine", "plateau"):
        config = _config(lr_schedule=schedule, clipnorm=1.0, learning_rate=1e-2, patience=2)
        model = engine.build(config, data.frame_shapes(), list("abcd"), data.fit_normalization())
        engine.compile_model(model, config)
        assert model.optimizer.clipnorm == 1.0
        history = engine.fit(model, data, data, config)
        rates = history["learning_rate"].to_numpy()
        if schedule == "cosine":  # the rate each epoch trained with, read back from the optimizer
            np.testing.assert_allclose(rates, [oracles.cosine_rate(1e-2, e, 4) for e in range(len(rates))],
                                       rtol=1e-5)
            assert len(rates) >= 2
        else:
            assert rates[0] == pytest.approx(1e-2) and np.all(np.diff(rates) <= 0)
    (plateau,) = engine.schedule_callbacks(_config(lr_schedule="plateau", patience=8), 10)
    assert (plateau.monitor, plateau.mode, plateau.factor, plateau.patience) == ("val_uar", "max", 0.5, 4)
    assert engine.schedule_callbacks(_config(), 10) == []


@pytest.mark.slow
def test_class_weights_reach_the_training_loss():
    """One step on one batch reports the loss at the initial weights: the mean of every utterance's focal
    loss, each weighted by scikit-learn's balanced class weight when asked (class 0 twice as common here)."""
    import keras

    data = _features()
    skewed = data.subset(np.r_[np.arange(24), np.flatnonzero(data.labels == 0)])
    balanced = oracles.balanced_class_weights(skewed.labels, 4)
    weights = {"none": np.ones(4), "balanced": np.array([balanced[c] for c in range(4)])}
    for name, per_class in weights.items():
        keras.utils.set_random_seed(0)
        config = _config(epochs=1, class_weights=name, batch_size=skewed.size, model_options={"dropout": 0.0})
        model = engine.build(config, data.frame_shapes(), list("abcd"), data.fit_normalization())
        engine.compile_model(model, config)
        losses = keras.ops.convert_to_numpy(model.loss.call(skewed.labels, skewed.predict(model, skewed.size)))
        expected = np.mean(per_class[skewed.labels] * losses)
        assert engine.fit(model, skewed, data, config)["loss"].iloc[0] == pytest.approx(expected, rel=1e-4)
        # Unweighted, the balanced case would be off by several times the tolerance: the test can fail.
        assert name == "none" or abs(expected / np.mean(losses) - 1) > 5e-4


def test_a_search_draws_training_settings_into_the_trial_config():
    import keras_tuner

    from msir_keras.tuning import MSIRHyperModel

    data = _features()
    space = {"learning_rate": {"choice": [1e-3]}, "label_smoothing": {"choice": [0.1]},
             "lr_schedule": {"choice": ["cosine"]}, "class_weights": {"choice": ["balanced"]},
             "epochs": {"choice": [3]}, "feature_masks": {"choice": [1]}}
    hypermodel = MSIRHyperModel(_config(), data, data, list("abcd"), space=space)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    trial = hypermodel.trial_config(hp)
    assert (trial.label_smoothing, trial.lr_schedule, trial.class_weights, trial.epochs) == (0.1, "cosine",
                                                                                            "balanced", 3)
    assert model.backbone.feature_masks == 1 and model.loss.label_smoothing == 0.1
    result = hypermodel.fit(hp, model)
    assert hypermodel.trials_run == 1 and result["epochs_run"] == 3  # the drawn epochs, not the config's 4


def test_recipes_are_presets_the_commands_start_from(tmp_path):
    parser = build_parser()
    base = ["--corpus", "emodb", "--root", "x"]
    run = experiment_config(parser.parse_args(["run", *base]), default_recipe=RUN_RECIPE)
    assert run.recipe == RUN_RECIPE and run.batch_size == RECIPES[RUN_RECIPE]["batch_size"]
    paper = experiment_config(parser.parse_args(["run", *base, "--recipe", "paper"]))
    assert (paper.recipe, paper.batch_size, paper.epochs) == ("paper", 64, 100)
    # Flags and --set apply over the recipe.
    changed = experiment_config(parser.parse_args(["run", *base, "--batch-size", "16", "--set", "ensemble=2"]),
                                 default_recipe=RUN_RECIPE)
    assert (changed.batch_size, changed.ensemble, changed.recipe) == (16, 2, RUN_RECIPE)
    # A run's config.json is taken as it is, unless --recipe is given.
    saved = tmp_path / "config.json"
    dataclasses.replace(ExperimentConfig(), batch_size=48).save(saved)
    assert experiment_config(parser.parse_args(["train", "--config", str(saved)])).batch_size == 48
    small = ExperimentConfig(model_options={"dropout": 0.5}).with_recipe("small-data")
    assert small.model_options == {"dropout": 0.5, **RECIPES["small-data"].get("model_options", {})}
    # Back to the paper's recipe: the small-data masks go, the dropout stays.
    assert small.with_recipe("paper").model_options == {"dropout": 0.5}
    with pytest.raises(ConfigError, match="recipe must be one of"):
        ExperimentConfig().with_recipe("large")
    for name, value in (("label_smoothing", 1.0), ("clipnorm", -1), ("ensemble", 0), ("lr_schedule", "step")):
        with pytest.raises(ConfigError, match=name):
            ExperimentConfig(**{name: value})


def _members(n=2):
    return [MSIR.from_preset("tiny", branches=("cr", "lld"), lld_dim=6, name=f"m{i}", class_names=list("abcd"))
            for i in range(n)]


@pytest.mark.slow
def test_an_ensemble_averages_its_members_and_loads_in_a_fresh_process(tmp_path):
    members = _members(3)
    ensemble = MSIREnsemble(members)
    x = {"logmel": RNG.normal(size=(3, 25, 40, 2)).astype("float32"),
         "lld": RNG.normal(size=(3, 25, 6)).astype("float32")}
    expected = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), expected, atol=1e-6)
    assert ensemble.class_names == list("abcd") and ensemble.feature_shapes() == members[0].feature_shapes()
    # Saved and loaded (a new process loads the session's ensemble run: tests/test_fresh_process.py).
    ensemble.save(tmp_path / "model.keras")
    loaded = load_model(str(tmp_path / "model.keras"), compile=False)
    assert type(loaded).__name__ == "MSIREnsemble" and len(loaded.members) == 3
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    with pytest.raises(ConfigError, match="distinct names"):
        MSIREnsemble([members[0], members[0]])
    with pytest.raises(ConfigError, match="at least two"):
        MSIREnsemble(members[:1])


@pytest.mark.slow
def test_a_run_with_an_ensemble_saves_one_model_that_predict_uses(runs):
    out = runs["ensemble"]
    assert ExperimentConfig.load(out / "config.json").ensemble == 2
    fold = out / "classification" / sorted(os.listdir(out / "classification"))[0]
    metrics = json.loads((fold / "metrics.json").read_text())
    assert [m["seed"] for m in metrics["members"]] == [0, 1]
    model = load_model(str(fold / "model.keras"), compile=False)
    assert isinstance(model, MSIREnsemble)
    # The saved predictions are the ensemble's: msir predict on a test file gives the same probabilities.
    import pandas as pd

    predictions = pd.read_csv(fold / "predictions.csv").iloc[:2]
    from msir_keras.detector import Detector

    again = Detector(str(fold)).predict(predictions["path"].tolist())
    np.testing.assert_allclose(again[[f"p_{c}" for c in model.class_names]].to_numpy(),
                               predictions[[f"p_{c}" for c in model.class_names]].to_numpy(), atol=1e-4)
