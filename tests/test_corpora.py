import json

import numpy as np
import pandas as pd
import pytest
from conftest import tone, write_wav
from iemocap_tree import build_iemocap

from msir_keras.cli import main
from msir_keras.corpora import (
    CorpusError,
    class_labels,
    detection_labels,
    leave_one_session_out,
    leave_speakers_out,
    load_emodb,
    load_iemocap,
    load_manifest,
    session_independent,
)


def test_iemocap_tree_parses_labels_speakers_and_merges_excited(tmp_path):
    per_session = build_iemocap(str(tmp_path))
    corpus = load_iemocap(str(tmp_path))
    table = corpus.utterances
    assert len(table) == 5 * per_session
    assert table["label"].value_counts().to_dict() == {"happy": 20, "sad": 20, "neutral": 10, "angry": 10}
    row = table[table["utterance"] == "Ses01F_impro01_M001"].iloc[0]
    assert (row["label"], row["speaker"], row["gender"], row["session"]) == ("happy", "Ses01M", "M", 1)
    assert table[table["utterance"] == "Ses01F_impro01_F002"]["label"].item() == "happy"  # exc
    assert set(table["speaker"]) == {f"Ses0{s}{g}" for s in range(1, 6) for g in "FM"}
    # The toy tree is not the published corpus: the loader says so.
    assert corpus.warnings and "5531" in corpus.warnings[0]


def test_iemocap_improvised_scripted_and_missing_wavs(tmp_path):
    build_iemocap(str(tmp_path), missing_wav="Ses02M_script01_1_M003")
    improvised = load_iemocap(str(tmp_path), kind="improvised").utterances
    scripted = load_iemocap(str(tmp_path), kind="scripted").utterances
    assert improvised["improvised"].all() and not scripted["improvised"].any()
    assert len(improvised) == 30 and len(scripted) == 29
    skipped = load_iemocap(str(tmp_path)).skipped
    assert [s["where"].endswith("Ses02M_script01_1_M003.wav") for s in skipped if "label" not in s] == [True]
    # Every turn labelled outside the categories is listed too: fru and xxx, in each of the ten dialogs.
    assert sorted(s["label"] for s in skipped if "label" in s) == ["fru"] * 10 + ["xxx"] * 10
    with pytest.raises(CorpusError, match="IEMOCAP_full_release"):
        load_iemocap(str(tmp_path / "Session1"))


def test_emodb_counts_match_its_readme(emodb_root):
    corpus = load_emodb(emodb_root)
    table = corpus.utterances
    assert len(table) == 535
    assert table["label"].value_counts().to_dict() == {
        "angry": 127, "boredom": 81, "neutral": 79, "happy": 71, "fear": 69, "sad": 62, "disgust": 46,
    }
    assert table.groupby("speaker").size().to_dict()["16"] == 71
    assert table.groupby("speaker")["gender"].first().value_counts().to_dict() == {"F": 5, "M": 5}
    four = load_emodb(emodb_root, emotions="four")
    assert len(four) == 339 and len(four.skipped) == 196


def test_manifest_maps_labels_and_reports_bad_rows_by_line(tmp_path):
    audio = tmp_path / "audio"
    for name in ("a", "b", "c", "d"):
        write_wav(str(audio / f"{name}.wav"), tone(0.3))
    (tmp_path / "m.csv").write_text(
        "path,label,speaker,session,gender\n"
        "audio/a.wav,Anger,s1,1,f\n"          # line 2
        f"{audio / 'b.wav'},happiness,s2,1,M\n"  # line 3: absolute path
        "audio/missing.wav,sad,s1,1,F\n"      # line 4: missing file
        "audio/c.wav,surprise,s2,2,M\n"       # line 5: not one of the four
        "audio/c.wav,,s2,2,M\n"               # line 6: empty label
        "audio/d.wav,Sadness,s3,2,\n"         # line 7
    )
    corpus = load_manifest(str(tmp_path / "m.csv"), labels=["angry", "happy", "neutral", "sad"])
    assert corpus.utterances["label"].tolist() == ["angry", "happy", "sad"]
    genders = corpus.utterances["gender"].tolist()
    assert genders[:2] == ["F", "M"] and pd.isna(genders[2])
    lines = {s["where"].rsplit(":", 1)[1]: s["reason"] for s in corpus.skipped}
    assert set(lines) == {"4", "5", "6"}
    assert "no such file" in lines["4"] and "unknown label" in lines["5"] and "empty" in lines["6"]
    # All emotions: other labels are kept as given.
    assert "surprise" in set(load_manifest(str(tmp_path / "m.csv")).utterances["label"])
    (tmp_path / "bad.csv").write_text("file,emotion\nx.wav,sad\n")
    with pytest.raises(CorpusError, match="missing column"):
        load_manifest(str(tmp_path / "bad.csv"))


def _speakers(table, rows):
    return set(table["speaker"].iloc[rows])


@pytest.mark.parametrize("by", ["utterances", "speakers"])
def test_no_speaker_is_ever_in_train_and_test(emodb, by):
    table = emodb.utterances
    folds = leave_speakers_out(table, n_folds=5, by=by)
    assert len(folds) == 5
    tested = set()
    for fold in folds:
        test = _speakers(table, fold.test)
        assert not test & (_speakers(table, fold.train) | _speakers(table, fold.validation))
        assert set(table["gender"].iloc[fold.test]) == {"F", "M"} and len(test) == 2
        assert _speakers(table, fold.validation) <= set(table["speaker"]) - test
        if by == "speakers":
            assert not _speakers(table, fold.validation) & _speakers(table, fold.train)
        assert len(set(fold.train) | set(fold.validation) | set(fold.test)) == len(table)
        tested |= test
    assert tested == set(table["speaker"])


def test_session_splits_on_iemocap_layout(tmp_path):
    build_iemocap(str(tmp_path))
    table = load_iemocap(str(tmp_path)).utterances
    (fold,) = session_independent(table)
    assert set(table["session"].iloc[fold.test]) == {5}
    assert set(table["session"].iloc[np.r_[fold.train, fold.validation]]) == {1, 2, 3, 4}
    assert len(leave_one_session_out(table)) == 5


def test_task_labels(emodb):
    table = emodb.utterances
    ids = class_labels(table)
    assert np.bincount(ids).tolist() == [127, 71, 79, 62]  # angry, happy, neutral, sad
    assert detection_labels(table, "sadness").sum() == 62


def test_inspect_json_and_csv(tmp_path, emodb_root, capsys):
    out = tmp_path / "table.csv"
    assert main(["inspect", "--corpus", "emodb", "--root", emodb_root, "--json", "--csv", str(out)]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert {"total", "by_label", "by_session", "by_speaker", "skipped"} <= set(counts)
    assert counts["total"] == 339 and counts["by_label"]["sad"] == 62
    assert len(pd.read_csv(out)) == 339
    assert main(["inspect", "--corpus", "iemocap", "--root", str(tmp_path)]) == 2
    assert "Session1" in capsys.readouterr().err
