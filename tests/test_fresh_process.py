"""Every saved artefact loads in a new process that imported nothing but the entry point.

The session's runs (tests/conftest.py: classification with the focal loss and
SavedModels, detection, a two-seed ensemble, three branches with wav2vec 2.0)
were trained in the test process; one new interpreter then uses each of them,
in turn, through `msir_keras.cli.main` as `msir` does from a new shell:
predict, evaluate, export, predict from the export, a timeline, and one
bad-input case per command. A test that loads in the process that trained
hides a class that only that process had registered (the FocalLoss of a
saved model, once).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

# With the slow tests (`-m ""`, as CI runs them): a new interpreter pays TensorFlow's import and every
# model's load again. A compiled model's classes in a new process: tests/test_model.py, by default.
pytestmark = pytest.mark.slow

CLASSES = ("angry", "happy", "neutral", "sad")

# Runs each (name, args) through `main` in this one process; prints {name: status, out, err}.
SCRIPT = textwrap.dedent("""
    import contextlib, io, json, sys
    from msir_keras.cli import main

    results = {}
    for name, args in json.load(open(sys.argv[1])):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(args)
            except SystemExit as stop:  # argparse refuses a flag before any work
                status = stop.code
        results[name] = {"status": status, "out": out.getvalue(), "err": err.getvalue()}
    with open(sys.argv[2], "w") as handle:
        json.dump(results, handle)
""")


def _tested(run, target="classification"):
    """(fold, a file that fold tested, the training process's stored probabilities for it)."""
    fold = sorted(os.listdir(run / target))[0]
    stored = pd.read_csv(run / target / fold / "predictions.csv").iloc[0]
    return fold, stored["path"], stored


@pytest.fixture(scope="module")
def wavs(emodb_manifest):
    """Three files of the session runs' corpus, of three speakers."""
    table = pd.read_csv(emodb_manifest)
    return [table[table["speaker"] == speaker]["path"].iloc[0] for speaker in (3, 8, 10)]


@pytest.fixture(scope="module")
def fresh(runs, wavs, emodb_store, tmp_path_factory):
    """Every call below, made in one new interpreter; returns ({name: result}, the calls' folder)."""
    import soundfile

    from msir_keras.audio import read_audio

    folder = tmp_path_factory.mktemp("fresh")
    long = folder / "call.wav"
    soundfile.write(long, np.concatenate([read_audio(w) for w in wavs]), 16000)
    (folder / "broken.wav").write_bytes(b"RIFF1234WAVEjunk")
    (folder / "bad.csv").write_text("file,emotion\na.wav,sad\n")
    (folder / "old-export").mkdir()
    (folder / "old-export" / "saved_model.pb").write_bytes(b"an older one-model export")  # to be replaced whole
    (folder / "notes").mkdir()
    (folder / "notes" / "notes.txt").write_text("not an export: --overwrite must leave it")
    store, models = emodb_store.root, {kind: str(runs[kind]) for kind in ("classification", "detection",
                                                                          "ensemble", "wav2vec", "fusion")}
    tested = {kind: _tested(runs[kind]) for kind in ("classification", "ensemble", "fusion")}
    calls = [
        ("classification/predict", ["predict", *wavs, "--model", models["classification"], "--json"]),
        ("classification/fold", ["predict", tested["classification"][1], "--model", models["classification"],
                                 "--fold", tested["classification"][0], "--json"]),
        ("classification/evaluate", ["evaluate", models["classification"], "--store", store]),
        ("classification/export", ["export", models["classification"], "--out", str(folder / "export")]),
        ("classification/exported", ["predict", *wavs, "--model", str(folder / "export"), "--json"]),
        ("classification/export-again", ["export", models["classification"], "--out", str(folder / "export")]),
        ("classification/export-over", ["export", models["classification"], "--out", str(folder / "old-export"),
                                        "--overwrite"]),
        ("classification/exported-over", ["predict", *wavs, "--model", str(folder / "old-export"), "--json"]),
        ("classification/export-over-notes", ["export", models["classification"], "--out", str(folder / "notes"),
                                              "--overwrite"]),
        ("classification/timeline", ["predict", str(long), "--model", models["classification"], "--window", "2",
                                     "--hop", "0.5", "--out", str(folder / "timeline")]),
        ("ensemble/predict", ["predict", *wavs, "--model", models["ensemble"], "--json"]),
        ("ensemble/fold", ["predict", tested["ensemble"][1], "--model", models["ensemble"],
                           "--fold", tested["ensemble"][0], "--json"]),
        ("detection/predict", ["predict", *wavs, "--model", models["detection"], "--json"]),
        ("detection/evaluate", ["evaluate", models["detection"], "--store", store]),
        ("fusion/fold", ["predict", tested["fusion"][1], "--model", models["fusion"], "--json"]),
        ("fusion/evaluate", ["evaluate", models["fusion"], "--store", store]),
        ("fusion/export", ["export", models["fusion"], "--out", str(folder / "export-fusion")]),
        ("fusion/exported", ["predict", tested["fusion"][1], "--model", str(folder / "export-fusion"), "--json"]),
        ("fusion/timeline", ["predict", str(long), "--model", models["fusion"], "--window", "2", "--hop", "1",
                             "--out", str(folder / "timeline-fusion")]),
        ("wav2vec/predict", ["predict", *wavs[:2], "--model", models["wav2vec"], "--json"]),
        ("wav2vec/export", ["export", models["wav2vec"], "--out", str(folder / "export-w2v")]),
        ("wav2vec/exported", ["predict", *wavs[:2], "--model", str(folder / "export-w2v"), "--json"]),
        # One bad-input case per command (the whole table runs in-process: test_bad_input.py).
        ("bad/predict", ["predict", wavs[0], str(folder / "broken.wav"), "--model", models["classification"]]),
        ("bad/evaluate", ["evaluate", str(folder)]),
        ("bad/train", ["train", "--corpus", "manifest", "--root", "x.csv", "--folds", "1"]),
        ("bad/run", ["run", "--corpus", "emodb", "--root", "x", "--folds", "1"]),
        ("bad/extract", ["extract", "--corpus", "manifest", "--root", "x.csv", "--batch-size", "0"]),
        ("bad/inspect", ["inspect", "--corpus", "manifest", "--root", str(folder / "bad.csv")]),
        ("bad/export", ["export", str(folder), "--out", str(folder / "nothing")]),
    ]
    (folder / "calls.json").write_text(json.dumps(calls))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(folder / "calls.json"), str(folder / "results.json")],
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0"))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((folder / "results.json").read_text()), folder


def _ok(results, name):
    result = results[name]
    assert result["status"] == 0, f"{name} exited {result['status']}:\n{result['err'][-3000:]}"
    return result["out"]


def _table(results, name):
    return pd.DataFrame(json.loads(_ok(results, name)))


def test_classification_run_predicts_evaluates_and_exports(fresh, runs):
    results, folder = fresh
    run = runs["classification"]
    table = _table(results, "classification/predict")
    columns = [f"p_{e}" for e in CLASSES]
    assert len(table) == 3 and set(table["predicted"]) <= set(CLASSES)
    np.testing.assert_allclose(table[columns].sum(axis=1), 1, rtol=1e-5)
    # The new process reproduces the training process's test predictions, fold by fold.
    _, _, stored = _tested(run)
    single = _table(results, "classification/fold").iloc[0]
    assert single["p_angry"] == pytest.approx(stored["p_angry"], rel=1e-4, abs=1e-5)
    _ok(results, "classification/evaluate")
    again = json.loads((run / "evaluation-retest" / "metrics.json").read_text())
    original = json.loads((run / "metrics.json").read_text())
    for name, figures in original["folds"].items():
        assert again["folds"][name]["uar"] == pytest.approx(figures["uar"])
    _ok(results, "classification/export")
    exported = _table(results, "classification/exported")
    np.testing.assert_allclose(exported[columns], table[columns], rtol=1e-4, atol=1e-5)
    # --overwrite replaces an older export whole: its lone model is gone, the run's folds answer.
    _ok(results, "classification/export-over")
    assert not (folder / "old-export" / "saved_model.pb").exists()
    assert (folder / "notes" / "notes.txt").exists()  # --overwrite refused a folder that is not an export
    over = _table(results, "classification/exported-over")
    np.testing.assert_allclose(over[columns], table[columns], rtol=1e-4, atol=1e-5)


def test_ensemble_run_predicts_as_the_training_process(fresh, runs):
    results, _ = fresh
    table = _table(results, "ensemble/predict")
    assert len(table) == 3 and table["p_sad"].between(0, 1).all()
    # Each fold's model is a two-seed ensemble; the new process gives the training process's probabilities.
    fold, _, stored = _tested(runs["ensemble"])
    metrics = json.loads((runs["ensemble"] / "classification" / fold / "metrics.json").read_text())
    assert [m["seed"] for m in metrics["members"]] == [0, 1]
    single = _table(results, "ensemble/fold").iloc[0]
    assert single["p_sad"] == pytest.approx(stored["p_sad"], rel=1e-4, abs=1e-5)


def test_detection_run_predicts_and_evaluates(fresh, runs):
    results, _ = fresh
    table = _table(results, "detection/predict")
    assert {"p_sad", "sad", "p_angry", "angry"} <= set(table.columns)
    _ok(results, "detection/evaluate")
    metrics = json.loads((runs["detection"] / "evaluation-retest" / "metrics.json").read_text())
    assert set(metrics["emotions"]) == {"sad", "angry"}


def test_fused_run_predicts_evaluates_and_exports_as_the_training_process(fresh, runs):
    """MSIR members, the functionals classifier and the weight in one model: a new process, its SavedModel and
    its timeline give what the training process stored."""
    results, folder = fresh
    run = runs["fusion"]
    _, _, stored = _tested(run)
    columns = [f"p_{e}" for e in CLASSES]
    from_run = _table(results, "fusion/fold").iloc[0]
    np.testing.assert_allclose(from_run[columns].to_numpy(float), stored[columns].to_numpy(float), rtol=1e-4,
                               atol=1e-5)
    _ok(results, "fusion/export")
    from_export = _table(results, "fusion/exported").iloc[0]
    np.testing.assert_allclose(from_export[columns].to_numpy(float), stored[columns].to_numpy(float), rtol=1e-4,
                               atol=1e-5)
    _ok(results, "fusion/evaluate")
    again = json.loads((run / "evaluation-retest" / "metrics.json").read_text())
    original = json.loads((run / "metrics.json").read_text())
    for name, figures in original["folds"].items():
        assert again["folds"][name]["uar"] == pytest.approx(figures["uar"])
    _ok(results, "fusion/timeline")
    timeline = pd.read_csv(folder / "timeline-fusion" / "call.timeline.csv")
    assert len(timeline) > 1
    np.testing.assert_allclose(timeline[columns].sum(axis=1), 1, atol=1e-3)


def test_wav2vec_run_and_its_export_predict_alike(fresh):
    results, _ = fresh
    from_run = _table(results, "wav2vec/predict")
    _ok(results, "wav2vec/export")
    from_export = _table(results, "wav2vec/exported")
    np.testing.assert_allclose(from_export["p_sad"], from_run["p_sad"], rtol=1e-4, atol=1e-5)


def test_timeline_of_a_long_recording(fresh, runs, wavs):
    from msir_keras.audio import read_audio
    from msir_keras.detector import Detector

    results, folder = fresh
    _ok(results, "classification/timeline")
    duration = sum(len(read_audio(w)) for w in wavs) / 16000
    table = pd.read_csv(folder / "timeline" / "call.timeline.csv")
    assert len(table) == int((duration - 2) / 0.5) + 1
    np.testing.assert_allclose(table["start"], np.arange(len(table)) * 0.5)
    np.testing.assert_allclose(table["end"] - table["start"], 2.0)
    np.testing.assert_allclose(table[[c for c in table if c.startswith("p_")]].sum(axis=1), 1, atol=1e-3)
    windows = json.loads((folder / "timeline" / "call.timeline.json").read_text())["windows"]
    assert len(windows) == len(table)
    assert (folder / "timeline" / "call.timeline.png").stat().st_size > 10_000
    # One window over a whole file: the sliced whole-file features are the file's own features.
    detector = Detector(str(runs["classification"]))
    whole = detector.timeline(wavs[0], window=60, hop=1)
    assert len(whole) == 1
    direct = detector.predict([wavs[0]])
    assert whole["p_angry"][0] == pytest.approx(direct["p_angry"][0], rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("name, status, says", [
    ("bad/predict", 1, ("broken.wav: unreadable audio", "1 of 2 file(s) failed")),
    ("bad/evaluate", 2, ("not a run folder",)),
    ("bad/train", 2, ("--folds", "must be an integer >= 2")),
    ("bad/run", 2, ("--folds",)),
    ("bad/extract", 2, (">= 1",)),
    ("bad/inspect", 2, ("missing column(s) ['path'",)),
    ("bad/export", 2, ("no model here",)),
    ("classification/export-again", 2, ("already holds files", "--overwrite")),
    ("classification/export-over-notes", 2, ("holds notes.txt, which no export wrote",)),
])
def test_each_command_refuses_bad_input_in_a_new_process(fresh, name, status, says):
    results, _ = fresh
    result = results[name]
    output = result["out"] + result["err"]
    assert result["status"] == status, output[-3000:]
    for text in says:
        assert text in output, output[-3000:]
    assert "Traceback" not in output
