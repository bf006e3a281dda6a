"""`msir compare`: runs side by side per fold, and a search's combinations over its folds."""

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from msir_keras.compare import compare_runs, is_search_folder, run_figures, search_summary


def _run(folder, uars, task="classification"):
    folder.mkdir(parents=True)
    if task == "classification":
        metrics = {"task": task, "folds": {f: {"uar": u, "wa": u - 0.01} for f, u in uars.items()},
                   "mean": {"uar": float(np.mean(list(uars.values()))), "wa": 0.0}}
    else:  # two detectors per fold: the fold's figure is their mean
        metrics = {"task": task, "emotions": {
            "sad": {"folds": {f: {"uar": u, "f1": 0.5} for f, u in uars.items()}},
            "angry": {"folds": {f: {"uar": u - 0.1, "f1": None} for f, u in uars.items()}}}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return str(folder)


def test_runs_side_by_side_with_mean_and_std_over_folds(tmp_path):
    a = _run(tmp_path / "a", {"f1": 0.8, "f2": 0.6, "f3": 0.7})
    b = _run(tmp_path / "b", {"f1": 0.9, "f2": 0.5})
    table = compare_runs([a, b], names=["msir", "svm"])
    assert list(table.index) == ["f1", "f2", "f3", "mean", "std", "folds"]
    assert table.loc["mean", "msir"] == pytest.approx(0.7)
    assert table.loc["std", "msir"] == pytest.approx(np.std([0.8, 0.6, 0.7], ddof=1))
    assert np.isnan(table.loc["f3", "svm"]) and table.loc["folds", "svm"] == 2
    detection = _run(tmp_path / "d", {"f1": 0.8}, task="detection")
    assert run_figures(detection) == {"f1": pytest.approx(0.75)}
    with pytest.raises(FileNotFoundError, match="finished run folder"):
        run_figures(str(tmp_path / "missing"))
    done = subprocess.run([sys.executable, "-m", "msir_keras.cli", "compare", a, b, "--names", "msir,svm",
                           "--out", str(tmp_path / "t.csv")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(r"\| mean +\| 0\.700 +\| 0\.700 +\|", done.stdout), done.stdout
    assert re.search(r"\| std +\| ±0\.100 +\| ±0\.283 +\|", done.stdout), done.stdout
    assert pd.read_csv(tmp_path / "t.csv", index_col=0).loc["f2", "svm"] == pytest.approx(0.5)


def test_a_search_summary_ranks_combinations_by_their_mean_over_folds(tmp_path):
    for fold, scores in {"f1": (0.7, 0.8), "f2": (0.6, 0.4)}.items():
        path = tmp_path / "classification" / fold
        path.mkdir(parents=True)
        pd.DataFrame({"trial": [0, 1], "batch_size": [32, 64], "val_uar": scores, "best_epoch": [3, 4],
                      "epochs_run": [5, 5], "seconds": [60.0, 120.0]}).to_csv(path / "trials.csv", index=False)
    assert is_search_folder(str(tmp_path))
    summary = search_summary(str(tmp_path))
    assert list(summary["batch_size"]) == [32, 64]  # 0.65 before 0.60
    assert summary["mean"].tolist() == pytest.approx([0.65, 0.6])
    assert summary["trial_minutes"].tolist() == [2.0, 4.0]


def test_an_ensemble_column_averages_the_runs_probabilities(tmp_path):
    # Two runs that each get one of two utterances wrong; averaged, both are right.
    probabilities = {"a": [[0.6, 0.4], [0.6, 0.4]], "b": [[0.9, 0.1], [0.45, 0.55]]}
    runs = []
    for name, rows in probabilities.items():
        run = _run(tmp_path / name, {"f1": 0.5})
        fold = tmp_path / name / "classification" / "f1"
        fold.mkdir(parents=True)
        rows = np.array(rows)
        pd.DataFrame({"path": ["x.wav", "y.wav"], "label": ["angry", "sad"],
                      "p_angry": rows[:, 0], "p_sad": rows[:, 1]}).to_csv(fold / "predictions.csv", index=False)
        runs.append(run)
    table = compare_runs(runs, ensemble=True)
    assert table.loc["f1", "ensemble"] == pytest.approx(0.5)  # mean (0.75, 0.25) and (0.525, 0.475): both angry
    pd.DataFrame({"path": ["x.wav", "y.wav"], "label": ["angry", "sad"], "p_angry": [0.9, 0.2],
                  "p_sad": [0.1, 0.8]}).to_csv(tmp_path / "b" / "classification" / "f1" / "predictions.csv",
                                                index=False)
    assert compare_runs(runs, ensemble=True).loc["f1", "ensemble"] == pytest.approx(1.0)
    pd.DataFrame({"path": ["z.wav", "y.wav"], "label": ["angry", "sad"], "p_angry": [0.9, 0.2],
                  "p_sad": [0.1, 0.8]}).to_csv(tmp_path / "b" / "classification" / "f1" / "predictions.csv",
                                                index=False)
    with pytest.raises(Exception, match="other utterances"):
        compare_runs(runs, ensemble=True)
