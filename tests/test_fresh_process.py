"""Every saved artefact loads in a new process that imported nothing but the entry point.

Models are trained here, in the test process; each is then used by the
`msir` command in a subprocess, as a user does from a new shell. A test that
loads in the process that trained hides a class that only that process had
registered (the FocalLoss of a saved model, once).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from msir_keras.cli import main
from msir_keras.config import ExperimentConfig


def msir(*args, check=True):
    """Runs `msir ARGS` in a fresh interpreter; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0")
    done = subprocess.run([sys.executable, "-m", "msir_keras.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"msir {' '.join(map(str, args))} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, emodb):
    """Four EmoDB speakers, a few utterances of each class each: a corpus brought as a manifest."""
    table = emodb.utterances
    table = table[table["speaker"].isin(["03", "08", "09", "10"])]
    table = table.groupby(["speaker", "label"]).head(4)
    path = tmp_path_factory.mktemp("manifest") / "corpus.csv"
    table[["path", "label", "speaker", "gender"]].to_csv(path, index=False)
    return str(path)


def _train(tmp_path_factory, manifest, store, name, *options):
    out = tmp_path_factory.mktemp("runs") / name
    assert main(["train", "--corpus", "manifest", "--root", manifest, "--folds", "2", "--epochs", "1",
                 "--batch-size", "16", "--store", store, "--out", str(out), *options]) == 0
    return out


@pytest.fixture(scope="module")
def focal_run(tmp_path_factory, manifest, emodb_store):
    # The small-data recipe: its feature masks (training only) are in the saved models.
    return _train(tmp_path_factory, manifest, emodb_store.root, "focal", "--wav2vec2", "off",
                  "--recipe", "small-data")


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory, manifest, emodb_store, focal_run):
    """One run folder per kind of saved model, trained when a test first asks for it."""

    class Runs(dict):
        def __missing__(self, kind):
            store = emodb_store.root
            options = {
                "crossentropy": ("--wav2vec2", "off", "--branches", "lld", "--loss", "crossentropy",
                                 "--ensemble", "2"),
                "detection": ("--wav2vec2", "off", "--branches", "lld", "--task", "detection",
                              "--emotion", "sad", "--emotion", "angry"),
                "wav2vec": ("--wav2vec2", request.getfixturevalue("tiny_wav2vec2"), "--branches", "lld,w2v"),
            }[kind]
            self[kind] = _train(tmp_path_factory, manifest, store, kind, *options)
            return self[kind]

    return Runs(focal=focal_run)


@pytest.fixture(scope="module")
def wavs(emodb_root):
    return [os.path.join(emodb_root, "wav", name) for name in ("03a01Wa.wav", "08a01Na.wav", "13a01Nb.wav")]


def _predictions(done):
    return pd.DataFrame(json.loads(done.stdout))


def _stored_probabilities(run, target, wav):
    """What the training process predicted for `wav` (the fold that tested it), or None."""
    for fold in sorted(os.listdir(run / target)):
        table = pd.read_csv(run / target / fold / "predictions.csv").set_index("path")
        if wav in table.index:
            return fold, table.loc[wav]
    return None, None


def test_focal_classification_run_predicts_evaluates_and_exports_in_a_new_process(runs, wavs, tmp_path,
                                                                                   emodb_store):
    run = runs["focal"]
    assert ExperimentConfig.load(run / "config.json").model_options["feature_masks"] == 2
    table = _predictions(msir("predict", *wavs, "--model", run, "--json"))
    assert len(table) == 3 and set(table["predicted"]) <= {"angry", "happy", "neutral", "sad"}
    np.testing.assert_allclose(table[[f"p_{e}" for e in ("angry", "happy", "neutral", "sad")]].sum(axis=1), 1,
                               rtol=1e-5)
    # The fresh process reproduces the training process's test predictions, fold by fold.
    fold, stored = _stored_probabilities(run, "classification", wavs[0])
    single = _predictions(msir("predict", wavs[0], "--model", run, "--fold", fold, "--json")).iloc[0]
    assert single["p_angry"] == pytest.approx(stored["p_angry"], rel=1e-4, abs=1e-5)

    msir("evaluate", run, "--store", emodb_store.root)
    again = json.loads((run / "evaluation-retest" / "metrics.json").read_text())
    original = json.loads((run / "metrics.json").read_text())
    for name, figures in original["folds"].items():
        assert again["folds"][name]["uar"] == pytest.approx(figures["uar"])

    msir("export", run, "--out", tmp_path / "export")
    exported = _predictions(msir("predict", *wavs, "--model", tmp_path / "export", "--json"))
    columns = [f"p_{e}" for e in ("angry", "happy", "neutral", "sad")]
    np.testing.assert_allclose(exported[columns], table[columns], rtol=1e-4, atol=1e-5)


def test_crossentropy_ensemble_run_predicts_in_a_new_process(runs, wavs):
    run = runs["crossentropy"]
    table = _predictions(msir("predict", *wavs, "--model", run, "--json"))
    assert len(table) == 3 and table["p_sad"].between(0, 1).all()
    # Each fold's model is a two-seed ensemble; a new process gives the training process's probabilities.
    fold, stored = _stored_probabilities(run, "classification", wavs[0])
    assert len(json.loads((run / "classification" / fold / "metrics.json").read_text())["members"]) == 2
    single = _predictions(msir("predict", wavs[0], "--model", run, "--fold", fold, "--json")).iloc[0]
    assert single["p_sad"] == pytest.approx(stored["p_sad"], rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_detection_run_predicts_and_evaluates_in_a_new_process(runs, wavs, emodb_store):
    run = runs["detection"]
    table = _predictions(msir("predict", *wavs, "--model", run, "--json"))
    assert {"p_sad", "sad", "p_angry", "angry"} <= set(table.columns)
    msir("evaluate", run, "--store", emodb_store.root)
    metrics = json.loads((run / "evaluation-retest" / "metrics.json").read_text())
    assert set(metrics["emotions"]) == {"sad", "angry"}


@pytest.mark.slow
def test_wav2vec_run_and_its_export_predict_in_a_new_process(runs, wavs, tmp_path):
    run = runs["wav2vec"]
    from_run = _predictions(msir("predict", *wavs[:2], "--model", run, "--json"))
    msir("export", run, "--out", tmp_path / "export")
    from_export = _predictions(msir("predict", *wavs[:2], "--model", tmp_path / "export", "--json"))
    np.testing.assert_allclose(from_export["p_sad"], from_run["p_sad"], rtol=1e-4, atol=1e-5)


def test_keras_file_loads_with_keras_after_importing_the_model_module(runs):
    fold = sorted(os.listdir(runs["focal"] / "classification"))[0]
    path = runs["focal"] / "classification" / fold / "model.keras"
    code = ("import keras, msir_keras.model; m = keras.saving.load_model(%r); "
            "print(type(m).__name__, type(m.loss).__name__, m.loss.zeta)" % str(path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["MSIR", "FocalLoss", "0.25"]


def test_timeline_of_a_long_recording_from_a_new_process(runs, wavs, tmp_path):
    import soundfile

    from msir_keras.audio import read_audio
    from msir_keras.export import Detector

    signals = [read_audio(w) for w in wavs]
    long = tmp_path / "call.wav"
    soundfile.write(long, np.concatenate(signals), 16000)
    duration = sum(len(s) for s in signals) / 16000
    msir("predict", long, "--model", runs["focal"], "--window", "2", "--hop", "0.5", "--out", tmp_path / "tl")
    table = pd.read_csv(tmp_path / "tl" / "call.timeline.csv")
    assert len(table) == int((duration - 2) / 0.5) + 1
    np.testing.assert_allclose(table["start"], np.arange(len(table)) * 0.5)
    np.testing.assert_allclose(table["end"] - table["start"], 2.0)
    np.testing.assert_allclose(table[[c for c in table if c.startswith("p_")]].sum(axis=1), 1, atol=1e-3)
    windows = json.loads((tmp_path / "tl" / "call.timeline.json").read_text())["windows"]
    assert len(windows) == len(table)
    assert (tmp_path / "tl" / "call.timeline.png").stat().st_size > 10_000
    # One window over a whole file: the sliced whole-file features are the file's own features.
    detector = Detector(str(runs["focal"]))
    whole = detector.timeline(wavs[0], window=60, hop=1)
    assert len(whole) == 1
    direct = detector.predict([wavs[0]])
    assert whole["p_angry"][0] == pytest.approx(direct["p_angry"][0], rel=1e-4, abs=1e-5)
