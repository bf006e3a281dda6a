"""`msir reproduce`: Table 1's rows as configurations, shared and reused runs, the tables and figures."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from iemocap_tree import build_iemocap
from msir_keras.cli import main
from msir_keras.config import PAPER_ZETA, ExperimentConfig
from msir_keras.corpora import FOUR_CLASSES
from msir_keras.features.base import ConfigError
from msir_keras.paper_tables import ORDER, ordering
from msir_keras.reproduce import load_rows, plan, select_rows

# SPEC.md, "What the paper reports": Table 1, UAR / F1 (%).
PAPER_TABLE1 = {
    "ComParE + SVM": (64.8, 60.1), "eGeMAPS + SVM": (62.6, 65.3), "ACRNN (2D)": (75.0, 60.7),
    "ACRNN (3D)": (74.8, 60.7), "ACRNN (2D) + LLF-LSTM (1D-LLD)": (77.4, 62.9),
    "ACRNN (2D) + LLF-LSTM (2D-LLD)": (78.0, 64.1), "ACRNN (2D) + LLF-LSTM (3D-LLD)": (78.9, 65.6),
    "MLAI-Co.Att": (79.1, 69.1), "w2v-EN": (74.3, 58.9), "LLF-LSTM (3D-LLD)": (79.4, 66.3),
    "LLF-LSTM (3D-LLD) + w2v-EN": (79.8, 67.8), "MSIR (w/o FL)": (80.9, 71.1), "MSIR": (82.1, 71.2),
}


def test_the_rows_file_holds_the_papers_table_1():
    rows = load_rows()
    assert {r["name"]: (r["paper"]["uar"], r["paper"]["f1"]) for r in rows} == PAPER_TABLE1
    assert [r["name"] for r in rows] == list(PAPER_TABLE1)  # the paper's order
    msir = next(r for r in rows if r["key"] == "msir")
    assert msir["paper"]["sensitivity"] == {"happy": 57.5, "neutral": 59.3, "sad": 64.1, "angry": 70.7}
    assert msir["paper"]["specificity"] == {"happy": 87.3, "neutral": 86.0, "sad": 96.6, "angry": 98.4}
    # Every key of the ordering groups is a row.
    assert {k for _, keys in ORDER for k in keys} <= {r["key"] for r in rows}


def test_plan_with_the_wav2vec_branch_off_skips_shares_and_drops(tmp_path):
    base = ExperimentConfig(corpus="emodb", root="emodb", wav2vec2=None)
    parts = plan(base, load_rows(), FOUR_CLASSES, str(tmp_path), zetas=(0.25, 0.75))
    by = {(p.row, p.emotion): p for p in parts}
    for emotion in FOUR_CLASSES:
        assert by[("mlai", emotion)].config is None and "not reproduced" in by[("mlai", emotion)].note
        for row in ("w2v-en", "llf-3d-w2v"):
            assert by[(row, emotion)].config is None and "needs the wav2vec branch" in by[(row, emotion)].note
        # MSIR (w/o FL) without wav2vec is ACRNN (2D) + LLF-LSTM (3D-LLD): one run for both.
        ce, two = by[("msir-ce", emotion)], by[("acrnn-2d-llf-3d", emotion)]
        assert ce.folder == two.folder and ce.same_as == "acrnn-2d-llf-3d"
        msir = by[("msir", emotion)]
        assert msir.config.branches == ("cr", "lld") and "without the wav2vec branch" in msir.note
        assert msir.config.zeta == PAPER_ZETA[emotion] and msir.config.targets == (emotion,)
        # Fig. 5's point at the paper's zeta is MSIR's own run.
        for zeta in (0.25, 0.75):
            point = by[(f"zeta-{zeta:g}", emotion)]
            assert (point.folder == msir.folder) == (zeta == PAPER_ZETA[emotion])
    assert by[("acrnn-3d", "sad")].config.logmel == {"deltas": 2}
    assert by[("acrnn-2d-llf-1d", "sad")].config.lld == {"deltas": 0}
    assert by[("compare-svm", "sad")].config.model == "svm-compare"
    # 10 runnable rows, 9 distinct configurations, per emotion; zetas 0.25 and 0.75 add 5 runs.
    assert len({p.folder for p in parts if p.folder}) == 9 * 4 + 5


def test_plan_with_a_wav2vec_checkpoint_runs_every_row_apart(tmp_path):
    base = ExperimentConfig(corpus="iemocap", root="x", wav2vec2="/models/w2v", split="session")
    parts = plan(base, load_rows(), ("angry",), str(tmp_path), zetas=())
    runnable = [p for p in parts if p.config is not None]
    assert [p.row for p in runnable] == [r["key"] for r in load_rows() if r["key"] != "mlai"]
    assert len({p.folder for p in runnable}) == len(runnable)
    assert next(p for p in runnable if p.row == "w2v-en").config.branches == ("w2v",)


def test_rows_are_chosen_by_key_or_number_and_bad_rows_files_are_refused(tmp_path):
    rows = load_rows()
    assert [r["key"] for r in select_rows(rows, ["13", "acrnn-2d", "1"])] == ["compare-svm", "acrnn-2d", "msir"]
    with pytest.raises(ConfigError, match="no row 'msir-3'"):
        select_rows(rows, ["msir-3"])
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"rows": [{"key": "a", "name": "A", "settings": {"branchez": ["cr"]}}]}))
    with pytest.raises(ConfigError, match=r"rows.json: row 1 \(a\): \['branchez'\] are not experiment settings"):
        load_rows(str(path))
    path.write_text(json.dumps({"rows": [{"key": "a", "name": "A", "settings": {}}] * 2}))
    with pytest.raises(ConfigError, match="the key 'a' is used twice"):
        load_rows(str(path))
    with pytest.raises(ConfigError, match="no such rows file"):
        load_rows(str(tmp_path / "missing.json"))


def test_the_ordering_check_compares_group_means():
    table = pd.DataFrame({"UAR": [60.0, 62.0, 70.0, 75.0, 74.0, 73.0]},
                         index=["compare-svm", "egemaps-svm", "acrnn-2d", "acrnn-2d-llf-3d", "msir-ce", "msir"])
    assert ordering(table) == [("SVM baselines", 61.0, None), ("one branch", 70.0, True),
                               ("two branches", 75.0, True), ("MSIR (w/o FL)", 74.0, False), ("MSIR", 73.0, False)]
    # A row with fewer emotions' runs than the others (still running) does not count.
    table["emotions"] = [4, 4, 4, 2, 4, 4]
    assert [group for group, _, _ in ordering(table)] == ["SVM baselines", "one branch", "MSIR (w/o FL)", "MSIR"]


def _iemocap(tmp_path):
    root = tmp_path / "IEMOCAP_full_release"
    build_iemocap(str(root))
    return str(root)


def test_svm_rows_on_an_iemocap_tree_then_a_restart_reuses_them(tmp_path, capsys):
    root, out, store = _iemocap(tmp_path), tmp_path / "results", str(tmp_path / "store")
    args = ["reproduce", "--corpus", "iemocap", "--root", root, "--wav2vec2", "off", "--rows", "1,2",
            "--emotions", "angry,sad", "--zetas", "none", "--store", store, "--out", str(out)]
    # --report-only trains nothing: the tables list the rows as not run yet.
    assert main(args + ["--report-only"]) == 0
    waiting = pd.read_csv(out / "table1.csv", index_col="key")
    assert waiting["UAR"].isna().all() and (waiting["note"] == "not run yet: angry, sad").all()
    assert "egemaps-svm: not run yet (sad)" in (out / "report.md").read_text()
    assert not (out / "runs").exists()
    assert main(args) == 0
    table = pd.read_csv(out / "table1.csv", index_col="key")
    assert list(table.index) == ["compare-svm", "egemaps-svm"] and list(table["folds"]) == [1, 1]
    assert list(table["emotions"]) == [2, 2]
    # Table 1's UAR is the mean over the emotions' runs (session 5 is the one test fold).
    for key in table.index:
        figures = [json.loads((out / "runs" / key / e / "metrics.json").read_text())["mean"]["uar"]
                   for e in ("angry", "sad")]
        assert table.loc[key, "UAR"] == pytest.approx(100 * np.mean(figures), abs=0.01)
        assert table.loc[key, "paper UAR"] == PAPER_TABLE1[table.loc[key, "row"]][0]
    config = json.loads((out / "runs" / "compare-svm" / "sad" / "config.json").read_text())
    assert (config["split"], config["task"], config["targets"]) == ("session", "detection", ["sad"])
    report = (out / "report.md").read_text()
    assert "test folds: test-session-5" in report and re.search(r"\| compare-svm +\| ComParE \+ SVM +\|", report)
    assert not (out / "table3.csv").exists()  # none of Tables 3-4's methods ran
    capsys.readouterr()
    stamp = os.path.getmtime(out / "runs" / "egemaps-svm" / "angry" / "metrics.json")
    assert main(args) == 0
    said = capsys.readouterr().out
    assert said.count("finished before, reused") == 4 and "training ->" not in said
    assert os.path.getmtime(out / "runs" / "egemaps-svm" / "angry" / "metrics.json") == stamp


def test_a_bad_reproduce_call_says_what_to_fix(tmp_path, capsys):
    root = _iemocap(tmp_path)
    base = ["reproduce", "--corpus", "iemocap", "--root", root, "--wav2vec2", "off", "--out", str(tmp_path / "r")]
    assert main(base + ["--emotions", "bored"]) == 2
    assert "--emotions: ['bored'] are not among the paper's" in capsys.readouterr().err
    assert main(base + ["--rows", "99"]) == 2
    assert "--rows: no row '99'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stopped:
        main(base + ["--zetas", "1.5"])
    assert stopped.value.code == 2 and "--zetas: must be a number in [0, 1], got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before any work


@pytest.mark.slow
def test_every_row_end_to_end_on_an_iemocap_tree_in_a_new_process(tmp_path, tiny_wav2vec2):
    """The whole table on generated IEMOCAP audio (numbers meaningless; files, shapes, row set checked),
    then a restart after a crash in row 9 trains row 9 alone."""
    root, out = _iemocap(tmp_path), tmp_path / "results"
    command = [sys.executable, "-m", "msir_keras.cli", "reproduce", "--corpus", "iemocap", "--root", root,
               "--wav2vec2", tiny_wav2vec2, "--emotions", "angry", "--zetas", "0.25,0.75", "--preset", "tiny",
               "--epochs", "1", "--patience", "1", "--no-savedmodel", "--store", str(tmp_path / "store"), "--out", str(out)]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = {"table1.csv", "table1.md", "table3.csv", "table3.md", "table4.csv", "table4.md", "zeta.csv",
                "zeta.md", "fig2_uar.png", "fig3_f1.png", "fig4_confusion.png", "fig5_zeta.png", "report.md"}
    assert expected <= set(os.listdir(out))
    table = pd.read_csv(out / "table1.csv", index_col="key")
    # The rows that read the third branch name its upstream (a tiny random checkpoint, not the paper's).
    named = [n.replace("w2v-EN", "tiny") if "w2v-EN" in n else f"{n} (tiny)" if n.startswith("MSIR") else n
             for n in PAPER_TABLE1]
    assert list(table["row"]) == named
    assert table["UAR"].isna().sum() == 1 and "not reproduced" in table.loc["mlai", "note"]
    assert table.drop(index="mlai")["UAR"].between(0, 100).all()
    for number in (3, 4):
        part = pd.read_csv(out / f"table{number}.csv", index_col="key")
        assert list(part.index) == ["acrnn-2d-llf-3d", "msir-ce", "llf-3d-w2v", "msir"]  # the paper's order
        assert list(part.columns) == ["row", "angry", "angry paper", "angry Δ"]
    zeta = pd.read_csv(out / "zeta.csv", index_col="zeta")
    assert list(zeta.index) == ["0.25", "0.75", "crossentropy"] and list(zeta.columns) == ["angry"]
    assert json.loads((out / "runs" / "w2v-en" / "angry" / "config.json").read_text())["branches"] == ["w2v"]
    # A crash while row 9 (w2v-EN) trained: its run folder is unfinished.
    os.replace(out / "runs" / "w2v-en" / "angry", out / "runs" / "w2v-en" / "angry.partial")
    os.remove(out / "runs" / "w2v-en" / "angry.partial" / "metrics.json")
    os.remove(out / "runs" / "w2v-en" / "angry.partial" / "angry" / "test-session-5" / "metrics.json")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("training ->") == 1 and "w2v-en / angry: training" in done.stdout
    assert done.stdout.count("finished before, reused") == 12  # 11 rows and the zeta point at 0.75
    assert (out / "runs" / "w2v-en" / "angry" / "metrics.json").exists()


def test_tables_name_an_upstream_other_than_the_papers(tmp_path):
    """With WavLM's every layer instead of wav2vec 2.0 base, the rows that read it say so; the others do not."""
    from msir_keras.paper_tables import table1

    rows = load_rows()
    base = ExperimentConfig(corpus="emodb", root="x", wav2vec2="/checkpoints/wavlm-base-plus/", wav2vec2_layer="all")
    table = table1(rows, plan(base, rows, ["angry"], str(tmp_path)), {}, ["angry"])
    names = {row["key"]: row["name"] for row in rows}
    assert table.loc["w2v-en", "row"] == "wavlm-base-plus, every layer"
    assert table.loc["msir", "row"] == f"{names['msir']} (wavlm-base-plus, every layer)"
    assert table.loc["acrnn-2d", "row"] == names["acrnn-2d"]
    paper = table1(rows, plan(ExperimentConfig(corpus="emodb", root="x"), rows, ["angry"], str(tmp_path)), {},
                   ["angry"])
    assert list(paper["row"]) == [row["name"] for row in rows]
