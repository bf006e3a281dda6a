"""The training engine and keras-tuner: searches see only training speakers, resume, and distribute."""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from msir_keras import engine
from msir_keras.cli import main
from msir_keras.config import ExperimentConfig
from msir_keras.experiment import prepare, run_search
from msir_keras.tuning import PAPER_LEARNING_RATES, SPACES, load_space


@pytest.fixture(scope="module")
def manifest(emodb_manifest):
    return emodb_manifest


@pytest.fixture
def two_rates(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"learning_rate": {"choice": [1e-3, 5e-4]}}))
    return str(path)


def _config(manifest, store, space, **extra):
    return ExperimentConfig(corpus="manifest", root=manifest, wav2vec2=None, branches=("lld",), store=store,
                            preset="tiny", n_folds=2, max_folds=1, epochs=1, batch_size=16, tune=space,
                            savedmodel=False, **extra)


def test_the_paper_grid_is_defined_once():
    assert SPACES["paper-lr"]["learning_rate"]["choice"] is PAPER_LEARNING_RATES
    assert sorted(PAPER_LEARNING_RATES) == [1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2]


@pytest.mark.slow
def test_no_test_speaker_ever_reaches_a_trial_and_a_search_resumes(manifest, emodb_store, two_rates, tmp_path,
                                                                    monkeypatch):
    config = _config(manifest, emodb_store.root, two_rates, max_trials=1)
    table, data, folds, _ = prepare(config, log=lambda *_: None)
    row_of = {array.tobytes(): row for row, array in enumerate(data.features["lld"])}
    fold = folds[0]
    seen = []
    real_fit = engine.fit

    def spy(model, train, valid, *args, **kwargs):
        seen.append(([row_of[a.tobytes()] for a in train.features["lld"]],
                     [row_of[a.tobytes()] for a in valid.features["lld"]]))
        return real_fit(model, train, valid, *args, **kwargs)

    monkeypatch.setattr(engine, "fit", spy)
    out = tmp_path / "search"
    run_search(config, str(out), log=lambda *_: None)
    assert len(seen) == 1  # max_trials 1
    # Killed here; started again without the cap, the search runs only the trial still missing.
    summary = run_search(_config(manifest, emodb_store.root, two_rates), str(out), log=lambda *_: None)
    assert len(seen) == 2
    test_rows = set(fold.test)
    for train_rows, valid_rows in seen:
        assert sorted(train_rows) == sorted(fold.train) and sorted(valid_rows) == sorted(fold.validation)
        assert not (set(train_rows) | set(valid_rows)) & test_rows
    trials = pd.read_csv(out / "classification" / fold.name / "trials.csv")
    assert sorted(trials["learning_rate"]) == [5e-4, 1e-3]
    assert {"val_uar", "best_epoch", "epochs_run", "seconds"} <= set(trials.columns)
    assert trials["val_uar"].between(0, 1).all()
    assert (out / "classification" / fold.name / "val_uar_vs_lr.png").stat().st_size > 10_000
    assert summary["learning_rate"].iloc[0] == trials["learning_rate"].iloc[0]  # best first


@pytest.mark.slow
def test_train_with_tune_writes_the_choice_per_fold(manifest, emodb_store, two_rates, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--corpus", "manifest", "--root", manifest, "--wav2vec2", "off", "--branches", "lld",
                 "--preset", "tiny", "--folds", "2", "--max-folds", "1", "--epochs", "1", "--batch-size", "16",
                 "--no-savedmodel",
                 "--store", emodb_store.root, "--tune", two_rates, "--out", str(out)]) == 0
    fold = os.listdir(out / "classification")[0]
    report = json.loads((out / "classification" / fold / "metrics.json").read_text())
    assert report["chosen"]["learning_rate"] in (1e-3, 5e-4)
    assert (out / "classification" / fold / "tuning" / "trials.csv").exists()
    assert len(json.loads((out / "metrics.json").read_text())["folds"]) == 1


def test_a_bad_search_space_is_refused_before_any_work(tmp_path):
    (tmp_path / "bad.json").write_text('{"dropout": {"between": [0, 1]}}')
    from msir_keras.features.base import ConfigError

    with pytest.raises(ConfigError, match="dropout"):
        load_space(str(tmp_path / "bad.json"))
    with pytest.raises(ConfigError, match="neither a known space"):
        load_space("paper-learning-rates")


MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from msir_keras import engine
    from msir_keras.data import FeatureSet
    from msir_keras.config import ExperimentConfig

    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 80, size=48)  # 3 batches of 16: 8 per replica
    data = FeatureSet({"lld": [rng.normal(size=(n, 65)).astype("float32") for n in lengths],
                       "logmel": [rng.normal(size=(n, 40, 2)).astype("float32") for n in lengths]},
                      rng.integers(0, 4, size=48))
    # No dropout: its random masks differ between replicas.
    config = ExperimentConfig(wav2vec2=None, branches=("cr", "lld"), preset="tiny", epochs=1, batch_size=16,
                              model_options={"dropout": 0.0})

    def built(strategy):
        tf.keras.utils.set_random_seed(0)
        with strategy.scope():
            model = engine.build(config, data.frame_shapes(), ["a", "b", "c", "d"], data.fit_normalization())
            engine.compile_model(model, config)
            start = [w.copy() for w in model.get_weights()]
        return model, start

    single, start = built(tf.distribute.OneDeviceStrategy("/cpu:0"))
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored, _ = built(mirrored_strategy)
    mirrored.set_weights(start)
    # The same global batches: 16 on one device, 8 per replica on two.
    dataset = data.pipeline(16, shuffle=False)
    loss_single = single.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    with mirrored_strategy.scope():
        loss_mirrored = mirrored.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    history = single.fit(dataset, epochs=1, verbose=0).history["loss"][0]
    with mirrored_strategy.scope():
        history_mirrored = mirrored.fit(dataset, epochs=1, verbose=0).history["loss"][0]
    # Length buckets leave odd rests (and 33 = 2 x 16 + 1): cut to multiples of the replica count.
    part = data.subset(range(33))
    with mirrored_strategy.scope():
        tiny_loss = mirrored.fit(part.pipeline(16, shuffle=True, replicas=2), epochs=1, verbose=0).history["loss"][0]
    # Evaluation sets of any size, the val_uar of one device: 5 < one batch, 17 = 16 + 1, 21 = 16 + 5.
    mirrored.set_weights(single.get_weights())
    evaluations = []
    for size in (5, 17, 21):
        part = data.subset(range(size))
        one = single.evaluate(part.pipeline(16, shuffle=False), verbose=0, return_dict=True)
        with mirrored_strategy.scope():
            two = mirrored.evaluate(part.pipeline(16, shuffle=False, replicas=2), verbose=0, return_dict=True)
        evaluations.append([one["uar"], two["uar"], one["loss"], two["loss"]])
    print(json.dumps({"replicas": mirrored_strategy.num_replicas_in_sync, "evaluations": evaluations,
                      "synchronized": bool(mirrored.backbone.get_layer("cr_branch").get_layer("bn1").synchronized),
                      "loss": [loss_single, loss_mirrored], "fit": [history, history_mirrored],
                      "tiny": tiny_loss}))
""")


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_devices_matches_one_device():
    done = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["synchronized"]
    assert result["loss"][1] == pytest.approx(result["loss"][0], rel=1e-4)
    assert result["fit"][1] == pytest.approx(result["fit"][0], rel=2e-3)
    assert np.isfinite(result["tiny"])
    for uar_one, uar_two, loss_one, loss_two in result["evaluations"]:
        assert uar_two == pytest.approx(uar_one, abs=1e-6) and loss_two == pytest.approx(loss_one, rel=1e-4)


def _free_ports(count):
    """A base port with `count` free ports from it (a chief serves search k on base + k)."""
    import socket

    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        try:
            for offset in range(1, count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
    pytest.skip("no free localhost ports")


def _run_together(commands, timeout=900):
    """Starts every (args, env) at once; returns their outputs, or fails with the first that failed."""
    import time

    processes = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for args, env in commands]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in processes):
            failed = [p for p in processes if p.returncode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    outputs = [process.communicate()[0] for process in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    return outputs


@pytest.mark.slow
def test_a_chief_and_two_workers_run_every_trial_of_the_grid_once(manifest, emodb_store, tmp_path):
    rates = [1e-3, 5e-4, 1e-4, 5e-3]
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"learning_rate": {"choice": rates}}))
    out = tmp_path / "search"
    args = [sys.executable, "-m", "msir_keras.cli", "tune", "--corpus", "manifest", "--root", manifest,
            "--wav2vec2", "off", "--branches", "lld", "--preset", "tiny", "--folds", "2", "--epochs", "1",
            "--batch-size", "16",
            "--store", emodb_store.root, "--space", str(space), "--out", str(out)]
    # Two folds, two searches: the chief serves them on port and port + 1.
    cluster = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERASTUNER_ORACLE_IP="127.0.0.1",
                   KERASTUNER_ORACLE_PORT=str(_free_ports(2)))
    outputs = _run_together([(args, dict(cluster, KERASTUNER_TUNER_ID=name))
                             for name in ("chief", "tuner0", "tuner1")])
    summary = pd.read_csv(out / "search.csv")
    assert len(summary) == 2
    for fold in summary["fold"]:
        trials = pd.read_csv(out / "classification" / fold / "trials.csv")
        assert sorted(trials["learning_rate"]) == sorted(rates)
        trial_folders = [name for name in os.listdir(out / "classification" / fold / "keras-tuner")
                         if name.startswith("trial_")]
        assert len(trial_folders) == len(rates)
    # The workers ran every trial, each once; the chief ran none.
    ran = [int(count) for output in outputs[1:] for count in re.findall(r"ran (\d+) trial\(s\) of this", output)]
    assert len(ran) == 4 and sum(ran) == 2 * len(rates)
    assert "serving the search" in outputs[0] and "ran " not in outputs[0]


def test_the_cluster_role_comes_from_keras_tuners_variables():
    from msir_keras.features.base import ConfigError
    from msir_keras.tuning import cluster_role

    named = {"KERASTUNER_ORACLE_IP": "10.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}
    assert cluster_role({}) is None
    assert cluster_role(dict(named, KERASTUNER_TUNER_ID="chief")) == "chief"
    assert cluster_role(dict(named, KERASTUNER_TUNER_ID="tuner1")) == "worker"
    with pytest.raises(ConfigError, match="KERASTUNER_TUNER_ID not set"):
        cluster_role(named)
    with pytest.raises(ConfigError, match="port number, got 'http'"):
        cluster_role(dict(named, KERASTUNER_TUNER_ID="tuner0", KERASTUNER_ORACLE_PORT="http"))


def _synthetic(n=24, seed=0):
    from msir_keras.data import FeatureSet

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    return FeatureSet({"lld": [rng.normal(size=(int(t), 6)).astype("float32") + labels[i]
                               for i, t in enumerate(rng.integers(10, 30, size=n))]}, labels)


def test_a_trial_trains_the_epochs_keras_tuner_passes():
    import keras_tuner

    from msir_keras.tuning import MSIRHyperModel

    data = _synthetic()
    config = ExperimentConfig(wav2vec2=None, branches=("lld",), preset="tiny", epochs=5, patience=5, batch_size=8)
    hypermodel = MSIRHyperModel(config, data, data, list("abcd"), space={"learning_rate": {"choice": [1e-3]}})
    hp = keras_tuner.HyperParameters()
    result = hypermodel.fit(hp, hypermodel.build(hp), epochs=3, initial_epoch=1)  # as Hyperband continues a trial
    assert result["epochs_run"] == 2 and 1 < result["best_epoch"] <= 3


@pytest.mark.slow
def test_hyperband_gives_each_trial_its_budget_and_continues_from_the_parent(tmp_path):
    from msir_keras.tuning import MSIRHyperModel, make_tuner

    import keras_tuner

    data = _synthetic()
    config = ExperimentConfig(wav2vec2=None, branches=("lld",), preset="tiny", epochs=2, patience=2, batch_size=8)
    hypermodel = MSIRHyperModel(config, data, data, list("abcd"),
                                space={"learning_rate": {"float": [1e-4, 1e-2], "sampling": "log"}})
    assert isinstance(make_tuner(hypermodel, "hyperband", directory=str(tmp_path / "made")), keras_tuner.Hyperband)
    # Budgets of 1 and 2 epochs: the smallest Hyperband that continues a trial (factor 2).
    tuner = keras_tuner.Hyperband(hypermodel, objective=keras_tuner.Objective("val_uar", "max"), max_epochs=2,
                                  factor=2, directory=str(tmp_path), seed=0)
    tuner.search(verbose=0)
    trials = list(tuner.oracle.trials.values())
    budgets = [(t.hyperparameters.values["tuner/initial_epoch"], t.hyperparameters.values["tuner/epochs"])
               for t in trials]
    assert any(start > 0 for start, _ in budgets)  # at least one trial continued a parent
    for trial, (start, stop) in zip(trials, budgets):
        # Each trial trains its own epochs only: a continued one does not start from zero again.
        assert trial.metrics.get_last_value("epochs_run") == stop - start
        assert start < trial.metrics.get_last_value("best_epoch") <= stop
