import json
import os
import re

import numpy as np
import pandas as pd
import pytest

from msir_keras.cli import main
from msir_keras.config import ExperimentConfig
from msir_keras.experiment import prepare
from msir_keras.metrics import uar
from msir_keras.training import target_labels, train_msir


@pytest.mark.slow
def test_msir_learns_well_above_chance_on_real_emodb(emodb_root, emodb_store):
    """The main job's model (`small`, log-Mels + LLDs) on one EmoDB fold, eight training speakers, three epochs.

    The one test of learning on real audio; the five-fold main job's figures are in docs/results.md.
    """
    config = ExperimentConfig(
        corpus="emodb", root=emodb_root, wav2vec2=None, store=emodb_store.root, epochs=3, patience=3,
        batch_size=16,
    )
    table, data, folds, _ = prepare(config, log=lambda *_: None)
    labels, names = target_labels(config, table, "classification")
    fold = folds[0]
    model, history = train_msir(config, data, fold, labels, names, "classification")
    predicted = data.subset(fold.test).predict(model).argmax(-1)
    score = uar(labels[fold.test], predicted, 4)
    assert score > 0.5, f"test UAR {score:.3f} (chance 0.25)"  # 0.743 here
    # The kept weights are those of the best validation epoch.
    best = history["val_uar"].max()
    valid = data.subset(fold.validation)
    assert uar(labels[fold.validation], valid.predict(model).argmax(-1), 4) == pytest.approx(best)


@pytest.mark.slow
def test_svm_baseline_run_on_emodb_folds(emodb_root, emodb_store, tmp_path):
    out = tmp_path / "svm"
    args = ["train", "--corpus", "emodb", "--root", emodb_root, "--model", "svm-egemaps",
            "--store", emodb_store.root, "--out", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["folds"]) == 5
    assert metrics["mean"]["uar"] > 0.6
    fold = out / "classification" / "test-08-03"
    assert {"metrics.json", "predictions.csv", "confusion.png", "history.csv"} <= set(os.listdir(fold))
    predictions = pd.read_csv(fold / "predictions.csv")
    assert set(predictions["speaker"].astype(str).str.zfill(2)) == {"03", "08"}


@pytest.fixture(scope="module")
def three_branch_run(runs, emodb_store):
    """The session's run of all three branches (wav2vec 2.0 on a tiny random checkpoint), and its store."""
    return runs["wav2vec"], emodb_store.root


def test_run_folder_holds_everything_a_user_needs(three_branch_run):
    out, _ = three_branch_run
    config = ExperimentConfig.load(out / "config.json")
    assert config.branches == ("cr", "lld", "w2v") and config.preset == "tiny"
    assert config.model_options == {"dropout": 0.4}
    fold_name = sorted(os.listdir(out / "classification"))[0]
    from msir_keras.serving import LoadedModel

    assert LoadedModel(str(out / "classification" / fold_name), keras=True).model.dropout == 0.4
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["mean"]) >= {"uar", "wa", "macro_f1", "per_emotion"}
    assert set(metrics["mean"]["per_emotion"]["sad"]) >= {"sensitivity", "specificity"}
    fold = out / "classification" / sorted(os.listdir(out / "classification"))[0]
    assert {"model.keras", "normalization.json", "history.csv", "predictions.csv", "metrics.json",
            "confusion.png"} <= set(os.listdir(fold))
    assert len(pd.read_csv(fold / "history.csv")) == 2
    assert re.search(r"^\| mean +\|", (out / "results.md").read_text(), re.MULTILINE)


def test_evaluate_recomputes_the_runs_figures(three_branch_run, capsys):
    out, store = three_branch_run
    assert main(["evaluate", str(out), "--store", str(store)]) == 0
    again = json.loads((out / "evaluation-retest" / "metrics.json").read_text())
    original = json.loads((out / "metrics.json").read_text())
    for fold, figures in original["folds"].items():
        assert again["folds"][fold]["uar"] == pytest.approx(figures["uar"])


def test_predict_reproduces_the_runs_test_predictions(three_branch_run, emodb_manifest, capsys):
    """Export and prediction from the export: tests/test_fresh_process.py, on this same run."""
    out, _ = three_branch_run
    table = pd.read_csv(emodb_manifest)
    wavs = [table[table["speaker"] == speaker]["path"].iloc[0] for speaker in (3, 10)]
    assert main(["predict", *wavs, "--model", str(out), "--json"]) == 0
    from_run = pd.DataFrame(json.loads(capsys.readouterr().out))
    columns = [f"p_{e}" for e in ("angry", "happy", "neutral", "sad")]
    np.testing.assert_allclose(from_run[columns].sum(axis=1), 1.0, rtol=1e-5)
    assert set(from_run["predicted"]) <= {"angry", "happy", "neutral", "sad"}
    # The model's features come from its own settings: each fold's stored test predictions are reproduced.
    for fold in sorted(os.listdir(out / "classification")):
        stored = pd.read_csv(out / "classification" / fold / "predictions.csv").set_index("path")
        tested = [w for w in wavs if w in stored.index]
        assert len(tested) == 1  # speakers 03 and 10 (both male) are tested in different folds
        assert main(["predict", tested[0], "--model", str(out), "--fold", fold, "--json"]) == 0
        single = json.loads(capsys.readouterr().out)[0]
        assert single["p_angry"] == pytest.approx(stored.loc[tested[0], "p_angry"], rel=1e-4, abs=1e-5)


def test_predict_errors_name_the_file(three_branch_run, tmp_path, capsys):
    out, _ = three_branch_run
    empty = tmp_path / "empty.wav"
    import soundfile

    soundfile.write(empty, np.zeros(0, "float32"), 16000)
    assert main(["predict", str(empty), "--model", str(out)]) == 1
    assert str(empty) in capsys.readouterr().err
    assert main(["predict", str(empty), "--model", str(tmp_path)]) == 2
    assert "no model here" in capsys.readouterr().err


@pytest.mark.slow
def test_detection_task_writes_one_detector_per_emotion(runs):
    out = runs["detection"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["emotions"]) == {"sad", "angry"}
    assert set(metrics["mean"]) >= {"uar", "sensitivity", "specificity", "f1"}
    fold = sorted(os.listdir(out / "sad"))[0]
    report = json.loads((out / "sad" / fold / "metrics.json").read_text())
    assert np.array(report["confusion"]).shape == (2, 2)
    from msir_keras.model import load_model

    loss = load_model(str(out / "sad" / fold / "model.keras")).loss
    assert loss.zeta == [pytest.approx(0.35), pytest.approx(0.65)]  # the paper's zeta for sad


@pytest.mark.slow
def test_compare_svm_baseline_on_emodb(emodb_root, emodb_store, tmp_path):
    out = tmp_path / "svm"
    assert main(["train", "--corpus", "emodb", "--root", emodb_root, "--model", "svm-compare",
                 "--store", emodb_store.root, "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["mean"]["uar"] > 0.75


def test_predict_refuses_a_wav2vec2_checkpoint_other_than_the_trained_one(three_branch_run, tmp_path,
                                                                          emodb_root, capsys):
    from msir_keras.features import save_random_checkpoint

    out, _ = three_branch_run
    other = save_random_checkpoint(str(tmp_path / "other"), size="tiny", seed=7)
    wav = os.path.join(emodb_root, "wav", "03a01Wa.wav")
    assert main(["predict", wav, "--model", str(out), "--wav2vec2", other]) == 2
    assert "trained with" in capsys.readouterr().err


@pytest.mark.slow
def test_every_label_of_a_corpus_with_emotions_all(emodb_root, emodb_store, tmp_path, capsys):
    from msir_keras.corpora import load_emodb

    table = load_emodb(emodb_root, emotions="all").utterances
    table = table[table["speaker"].isin(["03", "08", "09", "10"])].groupby(["speaker", "label"]).head(3)
    manifest = tmp_path / "seven.csv"
    table[["path", "label", "speaker", "gender"]].to_csv(manifest, index=False)
    seven = sorted(set(table["label"]))
    assert len(seven) == 7
    out = tmp_path / "run"
    assert main(["train", "--corpus", "manifest", "--root", str(manifest), "--emotions", "all", "--wav2vec2", "off",
                 "--branches", "lld", "--preset", "tiny", "--folds", "2", "--max-folds", "1", "--epochs", "2",
                 "--batch-size", "16", "--no-savedmodel", "--store", emodb_store.root, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    name = next(iter(metrics["folds"]))
    fold = json.loads((out / "classification" / name / "metrics.json").read_text())
    assert fold["class_names"] == seven and np.array(fold["confusion"]).shape == (7, 7)
    tested = pd.read_csv(out / "classification" / name / "predictions.csv")
    assert np.array(fold["confusion"]).sum() == len(tested) == table["speaker"].isin(name[5:].split("-")).sum()
    assert "fear TPR/TNR" in (out / "results.md").read_text()
    capsys.readouterr()
    wav = os.path.join(emodb_root, "wav", "03a02Wc.wav")
    assert main(["predict", wav, "--model", str(out), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)[0]
    assert {f"p_{e}" for e in seven} <= set(predicted) and predicted["predicted"] in seven
    # A retest maps the labels by the model's own classes.
    assert main(["evaluate", str(out), "--store", emodb_store.root]) == 0
    again = json.loads((out / "evaluation-retest" / "metrics.json").read_text())
    assert again["mean"]["uar"] == pytest.approx(metrics["mean"]["uar"])


@pytest.mark.slow
def test_cross_corpus_tests_every_fold_model_and_their_average(runs, emodb_store, emodb, emodb_manifest, tmp_path,
                                                               capsys):
    """A two-fold run tested on one speaker of another corpus: no folds are made there. Tested on its own
    corpus whole, the run is warned that every fold model scores its training speakers too."""
    from sklearn.metrics import balanced_accuracy_score

    from msir_keras.detector import Detector

    out, store = runs["classification"], emodb_store.root
    table = emodb.utterances
    other = table[table["speaker"] == "11"][["path", "label", "speaker"]]
    manifest = tmp_path / "speaker11.csv"
    other.to_csv(manifest, index=False)
    assert main(["evaluate", str(out), "--corpus", "manifest", "--root", str(manifest), "--store", str(store)]) == 0
    assert "training speakers" not in capsys.readouterr().err
    assert main(["evaluate", str(out), "--corpus", "manifest", "--root", emodb_manifest, "--store", str(store),
                 "--out", str(tmp_path / "own")]) == 0
    assert "also scores its own training speakers" in capsys.readouterr().err
    metrics = json.loads((out / "evaluation-manifest-speaker11" / "metrics.json").read_text())
    folds = sorted(os.listdir(out / "classification"))
    assert list(metrics["folds"]) == folds + ["fold-average"]
    assert metrics["mean"]["uar"] == pytest.approx(np.mean([metrics["folds"][f]["uar"] for f in folds]))
    # The average is what `msir predict` gives for the run: the same decisions, from audio.
    predicted = Detector(str(out)).predict(other["path"].tolist())["predicted"]
    assert metrics["folds"]["fold-average"]["uar"] == pytest.approx(
        balanced_accuracy_score(other["label"], predicted), abs=1e-9)


def test_a_session_split_iemocap_run_is_evaluated_on_emodb(tmp_path, emodb_manifest, emodb_store):
    from iemocap_tree import build_iemocap

    root = tmp_path / "IEMOCAP_full_release"
    build_iemocap(str(root))
    run = tmp_path / "iemocap-run"
    assert main(["train", "--corpus", "iemocap", "--root", str(root), "--split", "session", "--task", "detection",
                 "--emotion", "angry", "--branches", "lld", "--wav2vec2", "off", "--preset", "tiny", "--epochs", "1",
                 "--no-savedmodel", "--store", emodb_store.root, "--out", str(run)]) == 0
    assert main(["evaluate", str(run), "--corpus", "manifest", "--root", emodb_manifest,
                 "--store", emodb_store.root]) == 0
    metrics = json.loads((run / "evaluation-manifest-corpus" / "metrics.json").read_text())
    assert list(metrics["emotions"]["angry"]["folds"]) == ["test-session-5"]
    assert 0 <= metrics["mean"]["uar"] <= 1
