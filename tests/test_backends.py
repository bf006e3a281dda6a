"""MSIR under Keras's JAX and PyTorch backends, on a Python where TensorFlow cannot be imported.

The GPU machine this project is lent has JAX and PyTorch but no TensorFlow:
these tests hide TensorFlow (`no_tensorflow/sitecustomize.py`) and run the
model, layer, loss and metric tests, then a tiny `msir train` and a
fresh-process `msir predict`, under each backend. The input pipeline's
batches are checked here, and what TensorFlow's trainer reads of them.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from msir_keras.data import JAX_PAD_TO, FeatureSet

HERE = os.path.dirname(os.path.abspath(__file__))
BACKENDS = ("jax", "torch")


def _environment(backend):
    """The environment of a process on `backend` without TensorFlow."""
    paths = [os.path.join(HERE, "no_tensorflow"), os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def _features(seed=0, count=37):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 90, count)
    return FeatureSet({"lld": [rng.normal(size=(n, 3)).astype(np.float32) for n in lengths],
                       "egemaps": [rng.normal(size=(88,)).astype(np.float32) for _ in lengths]},
                      rng.integers(0, 4, count))


def test_the_pipeline_buckets_by_length_and_tensorflow_reads_the_same_batches():
    """Prediction batches are those of the tf.data pipeline the package used before (kept as the benchmarks'
    reference), and TensorFlow's trainer reads them exactly; a training epoch holds every utterance once, in
    as many batches as tf.data's, each batch cut from a window sorted by length; epochs differ, seeds repeat."""
    import importlib.util

    from msir_keras.batches import tensorflow_dataset

    spec = importlib.util.spec_from_file_location(
        "tfdata_reference", os.path.join(HERE, "..", "benchmarks", "tfdata_reference.py"))
    tfdata = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tfdata)
    data = _features()
    expected = list(tfdata.tfdata_dataset(data, 8, shuffle=False, with_labels=False))
    read = list(data.pipeline(8, shuffle=False, with_labels=False))  # TensorFlow: a tf.data.Dataset
    got = data.batches(8, shuffle=False, with_labels=False)
    assert len(read) == len(expected)
    for (ours,), (theirs,) in zip(read, expected):
        for name in ("lld", "egemaps"):
            np.testing.assert_array_equal(ours[name].numpy(), theirs[name].numpy())
    assert len(got) == len(expected)
    for index, (reference,) in enumerate(expected):
        (batch,) = got[index]
        for name in ("lld", "egemaps"):
            np.testing.assert_array_equal(batch[name], reference[name].numpy())

    training = data.batches(8, shuffle=True, seed=3, bucket_batches=2)
    assert len(training) == int(tensorflow_dataset(data.batches(8, shuffle=True, bucket_batches=2)).cardinality())
    assert len(training) == int(tfdata.tfdata_dataset(data, 8, shuffle=True, bucket_batches=2).cardinality())
    epochs = []
    for _ in range(2):
        rows = [training.batches[i] for i in range(len(training))]
        assert sorted(np.concatenate(rows).tolist()) == list(range(data.size))
        lengths = data.lengths()
        for index, batch_rows in enumerate(rows):
            inputs, labels = training[index]
            assert inputs["lld"].shape[1] == lengths[batch_rows].max() and len(labels) == len(batch_rows)
        epochs.append(np.concatenate(rows))
        training.on_epoch_end()
    assert not np.array_equal(*epochs)
    again = data.batches(8, shuffle=True, seed=3, bucket_batches=2)
    assert np.array_equal(np.concatenate(again.batches), epochs[0])
    padded = data.batches(8, shuffle=False, pad_to=JAX_PAD_TO)
    assert all(padded[i][0]["lld"].shape[1] % JAX_PAD_TO == 0 for i in range(len(padded)))


@pytest.mark.slow  # each backend compiles the model anew (JAX once per shape): CI runs them
@pytest.mark.parametrize("backend", BACKENDS)
def test_model_layer_loss_and_metric_tests_pass_under(backend):
    # test_layers.py runs the shared layer test for every registered layer, model (MSIR, its backbone, the
    # ensemble, late fusion), loss and metric; test_model.py's TensorFlow-side checks stay in the main run
    # (under JAX they compiled every shape anew: 340 s of CI's time).
    files = [os.path.join(HERE, name) for name in ("test_layers.py", "test_losses.py", "test_metrics.py")]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                            env=_environment(backend), capture_output=True, text=True, cwd=HERE)
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout.splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_train_and_predict_under(backend, tmp_path, emodb_manifest, emodb_store, sample_wav):
    """A tiny `msir train` (under JAX, data parallel over two devices) and a fresh-process `msir predict`
    without TensorFlow; the run's model.keras gives the same probabilities under TensorFlow (this process)."""
    from msir_keras.detector import Detector

    run = tmp_path / "run"
    train = [sys.executable, "-m", "msir_keras.cli", "train", "--corpus", "manifest", "--root", emodb_manifest,
             "--wav2vec2", "off", "--branches", "lld,func", "--preset", "tiny", "--folds", "2", "--max-folds", "1",
             "--epochs", "1", "--batch-size", "16", "--store", emodb_store.root, "--out", str(run)]
    environment = _environment(backend)
    if backend == "jax":  # keras.distribution.DataParallel over two CPU devices, as over a machine's GPUs,
        environment["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"  # with the CR branch's batch norm
        train += ["--strategy", "mirrored", "--branches", "cr,lld,func", "--set", "class_weights=balanced"]
    result = subprocess.run(train, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    fold = next((run / "classification").iterdir())
    assert (fold / "model.keras").exists() and not (fold / "serving").exists()  # a SavedModel is TensorFlow's

    predict = [sys.executable, "-m", "msir_keras.cli", "predict", "--model", str(run), sample_wav, "--json"]
    result = subprocess.run(predict, env=_environment(backend), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = pd.DataFrame(json.loads(result.stdout)).filter(like="p_").to_numpy(float)
    ours = Detector(str(run)).predict([sample_wav]).filter(like="p_").to_numpy(float)
    assert theirs.shape == (1, 4)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)


@pytest.mark.slow
def test_what_a_backend_cannot_run_is_refused_before_any_work(tmp_path, emodb_manifest):
    """`msir train` under PyTorch with --strategy mirrored, or without TensorFlow with --tensorboard: a
    one-line error, exit 2, and no run folder."""
    base = [sys.executable, "-m", "msir_keras.cli", "train", "--corpus", "manifest", "--root", emodb_manifest,
            "--wav2vec2", "off", "--preset", "tiny", "--store", str(tmp_path / "store")]
    for backend, flags, reason in (("torch", ["--strategy", "mirrored"], "--strategy mirrored runs under"),
                                   ("jax", ["--tensorboard"], "--tensorboard writes its logs with TensorFlow")):
        out = tmp_path / backend
        result = subprocess.run([*base, *flags, "--out", str(out)], env=_environment(backend),
                                capture_output=True, text=True)
        assert result.returncode == 2, result.stderr[-2000:]
        assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not out.exists() and not (tmp_path / "store").exists()
    # No TensorFlow and no KERAS_BACKEND: Keras's default backend is missing, said in one line.
    environment = {k: v for k, v in _environment("jax").items() if k != "KERAS_BACKEND"}
    environment["KERAS_HOME"] = str(tmp_path / "keras-home")
    result = subprocess.run([*base, "--out", str(tmp_path / "default")], env=environment, capture_output=True,
                            text=True)
    assert result.returncode == 2 and result.stderr.strip() == (
        "msir train: error: Keras's backend is tensorflow, which is not installed here: set KERAS_BACKEND=jax "
        "(installed here)"), result.stderr
