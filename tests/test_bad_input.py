"""Bad input, per entry point of the CLI: a one-line error or a warning naming the thing and the fix.

Each table row is a case: the arguments (built from the fixtures), the exit
status, what the output must say, and optionally a check of what must (not)
have happened on disk. A new option's bad values join its entry point's table.
"""

import dataclasses
import json
import os
import shutil
import stat
import types

import numpy as np
import pytest
from conftest import tone, write_wav

from msir_keras.cli import main
from msir_keras.features import FeatureStore, LLD, LogMel


@dataclasses.dataclass
class Case:
    id: str
    args: object  # callable(ctx) -> list of str
    status: int
    says: tuple = ()  # substrings of stdout + stderr
    check: object = None  # callable(ctx, output), further assertions

    def __repr__(self):
        return self.id


def slow(case):
    """A case that trains a model: run with the slow tests (`-m ""`, as CI does)."""
    return pytest.param(case, marks=pytest.mark.slow, id=case.id)


def call(ctx, case, capsys):
    """Runs one case through `main` as `msir` would; returns (status, all output)."""
    args = [str(a) for a in case.args(ctx)]
    try:
        status = main(args)
    except SystemExit as exit_:  # argparse refuses a flag before any work
        status = exit_.code
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert status == case.status, f"msir {' '.join(args)} -> {status}:\n{output[-3000:]}"
    for text in case.says:
        assert text in output, f"{text!r} not in the output of msir {' '.join(args)}:\n{output[-3000:]}"
    assert "Traceback" not in output
    if case.check is not None:
        case.check(ctx, output)
    return output


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, emodb_manifest):
    """The session's manifest (four EmoDB speakers, four utterances per class each) and a folder for cases."""
    import pandas as pd

    return types.SimpleNamespace(folder=tmp_path_factory.mktemp("bad-input"), manifest=emodb_manifest,
                                 table=pd.read_csv(emodb_manifest))


@pytest.fixture(scope="module")
def trained(runs):
    """The session's classification run (tiny preset, two folds, SavedModels beside the .keras files)."""
    return runs["classification"]


@pytest.fixture
def ctx(corpus, emodb_store, tmp_path, emodb_root):
    return types.SimpleNamespace(corpus=corpus, store=emodb_store.root, tmp=tmp_path, emodb=emodb_root,
                                 wav=os.path.join(emodb_root, "wav", "03a01Wa.wav"))


# ----------------------------------------------------------------------------- train / run

def _train(ctx, *extra):
    return ["train", "--corpus", "manifest", "--root", ctx.corpus.manifest, "--wav2vec2", "off",
            "--store", ctx.store, "--out", ctx.tmp / "run", *extra]


def _existing_run(ctx):
    (ctx.tmp / "run").mkdir()
    (ctx.tmp / "run" / "config.json").write_text('{"mine": 1}')
    return _train(ctx)


def _unchanged_run(ctx, output):
    assert (ctx.tmp / "run" / "config.json").read_text() == '{"mine": 1}'


def _foreign_partial(ctx):
    (ctx.tmp / "run.partial").mkdir()
    (ctx.tmp / "run.partial" / "config.json").write_text(json.dumps({"corpus": "emodb", "epochs": 3}))
    return _train(ctx)


def _train_on(ctx, manifest, *extra):
    return ["train", "--corpus", "manifest", "--root", manifest, "--wav2vec2", "off", "--folds", "2",
            "--epochs", "1", "--batch-size", "16", "--store", ctx.tmp / "store", "--out", ctx.tmp / "run", *extra]


def _one_class(ctx):
    table = ctx.corpus.table
    manifest = ctx.tmp / "sad.csv"
    table[table["label"] == "sad"].head(12).to_csv(manifest, index=False)
    return manifest


def _nothing_extracted(ctx, output):
    assert not (ctx.tmp / "store").exists() and not (ctx.tmp / "run.partial").exists()


def _no_finished_run(ctx, output):
    assert not (ctx.tmp / "run").exists()
    assert (ctx.tmp / "run.partial" / "config.json").exists()  # kept: a rerun resumes from it


def _finite_results(ctx, output):
    text = (ctx.tmp / "run" / "metrics.json").read_text()
    assert "NaN" not in text and "null" not in text.replace('"absent": []', "")
    for predictions in (ctx.tmp / "run").rglob("predictions.csv"):
        import pandas as pd

        table = pd.read_csv(predictions)
        assert table.filter(like="p_").notna().all().all() and len(table)


def _with_short_file(ctx):
    """The corpus and a 35 ms file: openSMILE gives one frame of NaN for it ("Segment too short")."""
    short = write_wav(str(ctx.tmp / "short.wav"), tone(0.035))
    manifest = _two_per_class(ctx)
    manifest.write_text(manifest.read_text() + f"{short},sad,3,m\n")
    return manifest


def _overwritten_then_train(ctx):
    """An entry whose data bytes were overwritten after the write, its header and size intact."""
    manifest = _two_per_class(ctx)
    assert main([str(a) for a in _extract(ctx, manifest, "--features", "lld")]) == 0
    entry = sorted((ctx.tmp / "store").rglob("*.npy"))[0]
    data = bytearray(entry.read_bytes())
    header = len(data) - int(np.prod(np.load(entry).shape)) * 4
    data[header:] = np.random.default_rng(0).normal(size=(len(data) - header) // 4).astype("float32").tobytes()
    entry.write_bytes(bytes(data))
    return _train_on(ctx, manifest, "--branches", "lld", "--preset", "tiny", "--max-folds", "1", "--no-savedmodel")


def _two_per_class(ctx):
    """Two utterances per speaker and class of the four speakers: 32 files."""
    manifest = ctx.tmp / "pair.csv"
    ctx.corpus.table.groupby(["speaker", "label"]).head(2)[["path", "label", "speaker", "gender"]].to_csv(
        manifest, index=False)
    return manifest


def _speakers(ctx, speakers, per_class=1, group=False):
    table = ctx.corpus.table
    manifest = ctx.tmp / "some.csv"
    rows = table[table["speaker"].isin(speakers)].groupby(["speaker", "label"]).head(per_class)
    columns = ["path", "label", "speaker", "gender"]
    if group:  # the spoken sentence of EmoDB's file name (03a01Wa.wav: a01), as a manifest's `group`
        rows = rows.assign(group=rows["path"].map(lambda path: os.path.basename(str(path))[2:5]))
        columns.append("group")
    rows[columns].to_csv(manifest, index=False)
    return manifest


def _one_training_speaker(*expected):
    def check(ctx, output):
        _finite_results(ctx, output)
        folds = [path.read_text() for path in (ctx.tmp / "run" / "classification").glob("*/metrics.json")]
        assert folds and all(part in text for part in expected for text in folds)
    return check


def _truncated_config(ctx):
    (ctx.tmp / "old").mkdir()
    (ctx.tmp / "old" / "config.json").write_text('{"corpus": "manifest", "root": ')
    return ["train", "--config", ctx.tmp / "old" / "config.json", "--out", ctx.tmp / "run"]


TRAIN = [
    Case("folds-1", lambda c: _train(c, "--folds", "1"), 2, ("--folds", "must be an integer >= 2")),
    Case("batch-size-0", lambda c: _train(c, "--batch-size", "0"), 2, ("--batch-size", ">= 1")),
    Case("epochs-0", lambda c: _train(c, "--epochs", "0"), 2, ("--epochs", ">= 1")),
    Case("validation-0", lambda c: _train(c, "--validation", "0"), 2, ("--validation", "in (0, 1)")),
    Case("validation-1.5", lambda c: _train(c, "--validation", "1.5"), 2, ("in (0, 1)",)),
    Case("validation-negative", lambda c: _train(c, "--validation", "-0.5"), 2, ("in (0, 1)",)),
    Case("learning-rate-negative", lambda c: _train(c, "--learning-rate", "-1"), 2, ("--learning-rate", "> 0")),
    Case("dropout-1", lambda c: _train(c, "--dropout", "1"), 2, ("--dropout", "in [0, 1)")),
    Case("zeta-2", lambda c: _train(c, "--zeta", "2"), 2, ("--zeta", "in [0, 1]")),
    Case("unknown-branch", lambda c: _train(c, "--branches", "cr,mfcc"), 2, ("--branches", "mfcc")),
    Case("existing-run-folder", _existing_run, 2, ("already holds a run", "--overwrite"), _unchanged_run),
    Case("foreign-partial-run", _foreign_partial, 2, ("unfinished run with another configuration",)),
    Case("more-folds-than-speakers", lambda c: _train(c, "--folds", "6", "--epochs", "1"), 2,
         ("6 folds need at least 6 speakers",)),
    Case("missing-manifest", lambda c: ["train", "--corpus", "manifest", "--root", c.tmp / "none.csv",
                                        "--wav2vec2", "off", "--out", c.tmp / "r"], 2, ("no such manifest",)),
    Case("no-corpus", lambda c: ["train", "--root", c.corpus.manifest], 2, ("--corpus and --root are required",)),
    Case("unknown-setting", lambda c: _train(c, "--set", "learning_rat=0.1"), 2, ("--set learning_rat: not a setting",)),
    Case("setting-out-of-range", lambda c: _train(c, "--set", "validation=2"), 2, ("validation must be",)),
    Case("msir-argument-of-another-kind", lambda c: _train(c, "--set", "dense_units=64"), 2,
         ("--set dense_units: 64 is not a value of its kind; e.g. --set dense_units=[64]",)),
    Case("speeds-not-a-list", lambda c: _train(c, "--set", "speeds=0.9"), 2, ("speeds: a list of factors",)),
    Case("missing-config-file", lambda c: ["train", "--config", c.tmp / "none.json", "--out", c.tmp / "r"], 2,
         ("none.json",)),
    Case("bad-search-space", lambda c: _train(c, "--tune", "paper-learning-rates"), 2, ("neither a known space",)),
    Case("one-class-manifest", lambda c: _train_on(c, _one_class(c)), 2,
         ("1 class(es) (sad)", "classification needs at least two"), _nothing_extracted),
    Case("detection-target-absent", lambda c: _train_on(c, _one_class(c), "--task", "detection", "--emotion", "sad"),
         2, ("detecting sad needs utterances with it and without it, got 12 of 12",), _nothing_extracted),
    slow(Case("loss-becomes-nan", lambda c: _train(c, "--branches", "lld", "--preset", "tiny", "--folds", "2",
                                              "--epochs", "2", "--learning-rate", "1e30", "--no-savedmodel"), 2,
         ("loss became nan at epoch", "test-", "--learning-rate"), _no_finished_run)),
    slow(Case("mixed-float16-on-raw-llds", lambda c: _train(c, "--branches", "lld", "--preset", "tiny", "--folds", "2",
                                                       "--max-folds", "1", "--epochs", "1", "--precision",
                                                       "mixed_float16", "--no-savedmodel"), 0,
         ("run folder",), _finite_results)),
    slow(Case("a-file-too-short-for-opensmile", lambda c: _train_on(c, _with_short_file(c), "--branches", "lld",
                                                               "--preset", "tiny", "--max-folds", "1",
                                                               "--no-savedmodel"), 0,
         ("short.wav", "features hold NaN or infinity", "remove it from the corpus"), _finite_results)),
    slow(Case("store-entry-overwritten", _overwritten_then_train, 0,
         ("damaged feature-store entry", "does not match the checksum", "computed again"), _finite_results)),
    Case("truncated-config", _truncated_config, 2, ("config.json: not valid JSON",)),
    # Three speakers, three folds: two training speakers with one utterance per class; 20 % of one is none.
    Case("a-fold-without-validation-utterances", lambda c: _train_on(c, _speakers(c, [3, 8, 9]), "--folds", "3"),
         2, ("has no validation utterance", "--validation"), _nothing_extracted),
    Case("fusion-setting-without-fusion", lambda c: _train(c, "--set", "fusion_weight=0.5"), 2,
         ("fusion_weight: settings of --model fusion, not of --model msir",)),
    Case("fusion-with-speed-copies", lambda c: _train(c, "--model", "fusion", "--set", "speeds=[0.9]"), 2,
         ("takes no --tune, speeds or --tensorboard",)),
    # Two speakers, two folds: each fold trains on one, so nothing can be chosen on held-out speakers. The
    # runner says so first, then holds out the manifest's groups (sentences), or trains on a fixed budget.
    slow(Case("fusion-with-one-training-speaker-holds-out-groups",
              lambda c: _train_on(c, _speakers(c, [3, 8], per_class=4, group=True), "--model", "fusion", "--folds",
                                  "2", "--branches", "lld", "--preset", "tiny", "--epochs", "2", "--max-folds", "1",
                                  "--no-savedmodel"), 0,
              ("trains on one speaker: the fused detector holds out groups of the corpus's `group` values",),
              _one_training_speaker('"held_out": "group"'))),
    slow(Case("fusion-with-one-training-speaker-and-no-groups-trains-a-fixed-budget",
              lambda c: _train_on(c, _speakers(c, [3, 8], per_class=4), "--model", "fusion", "--folds", "2",
                                  "--branches", "lld", "--preset", "tiny", "--epochs", "2", "--max-folds", "1",
                                  "--no-savedmodel", "--set", "baselines=true"), 0,
              ("no `group` or `text` column", "fixed budget (2 MSIR epochs", "a fixed budget, the SVM takes C=1"),
              _one_training_speaker('"fixed_budget": true'))),
    slow(Case("msir-with-one-training-speaker-validates-on-held-out-groups",
              lambda c: _train_on(c, _speakers(c, [3, 8], per_class=4, group=True), "--folds", "2", "--branches",
                                  "lld", "--preset", "tiny", "--epochs", "2", "--max-folds", "1", "--no-savedmodel"),
              0, ("trains on one speaker: MSIR's epoch is chosen on held-out `group` values",),
              _one_training_speaker('"val_uar"', '"held_out": "group"'))),
]


@pytest.mark.slow
def test_a_run_is_rerun_from_its_config_with_changes(ctx, trained, capsys):
    out = ctx.tmp / "again"
    assert main(["train", "--config", str(trained / "config.json"), "--set", "weight_decay=1e-4",
                 "--epochs", "2", "--max-folds", "1", "--no-savedmodel", "--out", str(out)]) == 0
    before, after = (json.loads((folder / "config.json").read_text()) for folder in (trained, out))
    assert after["model_options"] == {**before["model_options"], "weight_decay": 1e-4}
    assert (after["epochs"], after["max_folds"], after["savedmodel"]) == (2, 1, False)
    changed = ("model_options", "epochs", "max_folds", "savedmodel")
    assert {k: v for k, v in after.items() if k not in changed} == {k: v for k, v in before.items() if k not in changed}


@pytest.mark.parametrize("case", TRAIN, ids=repr)
def test_train_refuses_bad_input(case, ctx, capsys):
    call(ctx, case, capsys)


def _run_two_folds(ctx):
    # The first of the two folds is enough to show msir run's detector and its SVMs on the same folds.
    return ["run", "--corpus", "manifest", "--root", ctx.corpus.manifest, "--wav2vec2", "off", "--folds", "2",
            "--max-folds", "1", "--preset", "tiny", "--epochs", "1", "--batch-size", "16", "--no-savedmodel",
            "--store", ctx.store, "--out", ctx.tmp / "run"]


def _two_folds_written(ctx, output):
    metrics = json.loads((ctx.tmp / "run" / "metrics.json").read_text())
    assert len(metrics["folds"]) == 1
    assert not (ctx.tmp / "run.partial").exists()
    # `msir run`'s detector is the fused one, with both SVMs on the same folds.
    assert metrics["model"] == "fusion"
    assert {name: list(b["folds"]) for name, b in metrics["baselines"].items()} == {
        "svm-compare": list(metrics["folds"]), "svm-egemaps": list(metrics["folds"])}
    assert "SVM, compare" in output


RUN = [
    Case("folds-1", lambda c: ["run", "--corpus", "emodb", "--root", c.emodb, "--folds", "1"], 2, ("--folds",)),
    slow(Case("four-speakers-two-folds", _run_two_folds, 0, ("run folder",), _two_folds_written)),
]


@pytest.mark.parametrize("case", RUN, ids=repr)
def test_run(case, ctx, capsys):
    call(ctx, case, capsys)


@pytest.mark.slow
def test_a_crashed_run_resumes_its_finished_folds_and_replaces_nothing(ctx, trained, capsys, monkeypatch):
    from msir_keras import experiment

    out = ctx.tmp / "run"
    shutil.copytree(trained, out)
    before = (out / "metrics.json").read_text()
    args = _train(ctx, "--branches", "lld", "--preset", "tiny", "--folds", "2", "--epochs", "2", "--batch-size", "16",
                  "--no-savedmodel", "--overwrite")
    calls = []
    real = experiment.run_fold

    def crash_on_second(*a, **k):
        calls.append(a[3].name)
        if len(calls) == 2:
            raise RuntimeError("power cut")
        return real(*a, **k)

    monkeypatch.setattr(experiment, "run_fold", crash_on_second)
    assert main([str(a) for a in args]) == 1
    assert "internal error" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == before  # the old run is untouched
    monkeypatch.setattr(experiment, "run_fold", real)
    assert main([str(a) for a in args]) == 0
    assert "finished before, reused" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert not (ctx.tmp / "run.partial").exists()


# ----------------------------------------------------------------------------- extract

def _extract(ctx, root, *extra):
    return ["extract", "--corpus", "manifest", "--root", root, "--features", "logmel,lld",
            "--store", ctx.tmp / "store", *extra]


def _one_file_manifest(ctx, wav):
    manifest = ctx.tmp / "one.csv"
    manifest.write_text(f"path,label,speaker\n{wav},angry,s1\n")
    return manifest


def _damaged(kind):
    def args(ctx):
        manifest = _one_file_manifest(ctx, ctx.wav)
        assert main([str(a) for a in _extract(ctx, manifest)]) == 0
        entry = next(p for p in (ctx.tmp / "store").rglob("*.npy") if "logmel" in str(p))
        data = entry.read_bytes()
        header = len(data) - int(np.prod(np.load(entry).shape)) * 4
        entry.write_bytes({"empty": b"", "truncated": data[: len(data) // 2],
                           "random": np.random.default_rng(0).bytes(len(data)),
                           "data": data[:header] + np.full((len(data) - header) // 4, 0.5, "float32").tobytes(),
                           }[kind])
        ctx.entry = entry
        return _extract(ctx, manifest)

    return args


def _recomputed(ctx, output):
    from msir_keras.audio import read_audio

    store = FeatureStore(ctx.tmp / "store")
    np.testing.assert_array_equal(store.load_many([ctx.wav], LogMel())[0], LogMel()(read_audio(ctx.wav)))
    assert list((ctx.tmp / "store" / "damaged").rglob("*.npy.*"))  # kept aside for a look


def _suspicious(ctx):
    write_wav(str(ctx.tmp / "silent.wav"), np.zeros(8000, np.float32))
    whole = write_wav(str(ctx.tmp / "whole.wav"), tone(1.0))
    data = open(whole, "rb").read()
    with open(ctx.tmp / "cut.wav", "wb") as handle:
        handle.write(data[: len(data) // 2])
    manifest = ctx.tmp / "m.csv"
    manifest.write_text("path,label,speaker\nsilent.wav,sad,s1\ncut.wav,angry,s2\n")
    return _extract(ctx, manifest)


def _wav_manifest(ctx, *names):
    manifest = ctx.tmp / "m.csv"
    manifest.write_text("path,label,speaker\n" + "".join(f"{n},sad,s{i}\n" for i, n in enumerate(names)))
    return manifest


def _short_header(ctx):
    import struct

    data = bytearray(open(write_wav(str(ctx.tmp / "grown.wav"), tone(1.0)), "rb").read())
    at = data.find(b"data")
    data[at + 4: at + 8] = struct.pack("<I", struct.unpack("<I", data[at + 4: at + 8])[0] // 2)
    (ctx.tmp / "grown.wav").write_bytes(bytes(data))
    return _extract(ctx, _wav_manifest(ctx, "grown.wav"))


def _odd_signals(ctx):
    write_wav(str(ctx.tmp / "dc.wav"), np.full(8000, 0.25, np.float32))
    voice = tone(0.5)
    write_wav(str(ctx.tmp / "inverted.wav"), np.stack([voice, -voice], axis=1))
    return _extract(ctx, _wav_manifest(ctx, "dc.wav", "inverted.wav"))


def _unsized(ctx):
    import struct

    data = bytearray(open(write_wav(str(ctx.tmp / "unsized.wav"), tone(1.0)), "rb").read())
    at = data.find(b"data")
    data[at + 4: at + 8] = struct.pack("<I", 0)
    (ctx.tmp / "unsized.wav").write_bytes(bytes(data))
    return _extract(ctx, _wav_manifest(ctx, "unsized.wav"))


def _suspicious_twice(ctx):
    args = _suspicious(ctx)
    assert main([str(a) for a in args]) == 0
    return args


def _said_twice(ctx, output):
    assert output.count("cut.wav: truncated") == 2 and output.count("silent.wav: digital silence") == 2


def _shared_store(ctx):
    os.umask(0o022)
    return _extract(ctx, _one_file_manifest(ctx, ctx.wav))


def _readable_by_others(ctx, output):
    entries = list((ctx.tmp / "store").rglob("*.npy")) + list((ctx.tmp / "store").rglob("extractor.json"))
    assert entries and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in entries)


EXTRACT = [
    Case("damaged-entry-empty", _damaged("empty"), 0, ("REPAIRED damaged entry", "computed again"), _recomputed),
    Case("damaged-entry-truncated", _damaged("truncated"), 0, ("REPAIRED", "needs"), _recomputed),
    Case("damaged-entry-random", _damaged("random"), 0, ("REPAIRED", "unreadable header"), _recomputed),
    Case("truncated-and-silent-audio", _suspicious, 0,
         ("cut.wav: truncated: the header declares", "silent.wav: digital silence")),
    Case("shared-store-umask", _shared_store, 0, ("1 files extracted",), _readable_by_others),
    Case("suspicious-audio-said-again-on-a-warm-store", _suspicious_twice, 0,
         ("0 files extracted, 2 already in the store",), _said_twice),
    Case("damaged-entry-data-overwritten", _damaged("data"), 0, ("REPAIRED", "does not match the checksum"),
         _recomputed),
    Case("header-declares-less-than-the-file-holds", _short_header, 0,
         ("grown.wav: the header declares less audio than the file holds", "sox --ignore-length")),
    Case("constant-and-cancelling-audio", _odd_signals, 0,
         ("dc.wav: a constant signal", "inverted.wav: its 2 channels cancel out")),
    Case("zero-data-size-header", _unsized, 0, ("unsized.wav: the header's data size is 0", "1 files extracted")),
    Case("batch-size-0", lambda c: _extract(c, c.corpus.manifest, "--batch-size", "0"), 2, (">= 1",)),
    Case("bad-shard", lambda c: _extract(c, c.corpus.manifest, "--shard", "5/4"), 2, ("--shard 5/4",)),
]


@pytest.mark.parametrize("case", EXTRACT, ids=repr)
def test_extract_handles_bad_input(case, ctx, capsys):
    mask = os.umask(0o022)
    try:
        call(ctx, case, capsys)
    finally:
        os.umask(mask)


def test_a_damaged_entry_is_named_when_features_are_loaded(ctx):
    store = FeatureStore(ctx.tmp / "store")
    assert not store.extract([ctx.wav], [LLD()]).failed
    entry = next((ctx.tmp / "store").rglob("*.npy"))
    entry.write_bytes(b"\x93NUMPY")
    from msir_keras.features import MissingFeaturesError

    with pytest.raises(MissingFeaturesError, match=str(entry).replace("\\", "\\\\")):
        FeatureStore(ctx.tmp / "store").load_many([ctx.wav], LLD())


# ----------------------------------------------------------------------------- inspect (manifests)

def _manifest(text, encoding="utf-8"):
    def args(ctx):
        (ctx.tmp / "a.wav").write_bytes(open(ctx.wav, "rb").read())
        (ctx.tmp / "b.wav").write_bytes(open(ctx.wav, "rb").read()[:-2])
        (ctx.tmp / "c.wav").write_bytes(open(ctx.wav, "rb").read()[:-4])
        path = ctx.tmp / "m.csv"
        path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
        return ["inspect", "--corpus", "manifest", "--root", path, "--emotions", "all"]

    return args


def _iemocap_quirks(ctx):
    """A tree where an utterance is listed twice, one with two labels, and a label file is UTF-16."""
    from iemocap_tree import build_iemocap

    root = ctx.tmp / "IEMOCAP_full_release"
    build_iemocap(str(root), sessions=(1, 2))
    labels = root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    lines = labels.read_text().splitlines(keepends=True)
    turns = [line for line in lines if line.startswith("[")]
    repeated = turns[0]  # neu, listed again as it is
    conflicting = turns[4].replace("\tsad\t", "\tang\t")  # sad, listed again as angry
    labels.write_text("".join(lines) + repeated + conflicting)
    other = root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02F_impro01.txt"
    other.write_bytes(other.read_text().encode("utf-16"))
    return ["inspect", "--corpus", "iemocap", "--root", root, "--json"]


def _iemocap_skips_listed(ctx, output):
    counts = json.loads(output[output.index("{"): output.rindex("}") + 1])
    reasons = [entry["reason"] for entry in counts["skipped"]]
    assert sum("duplicate of line" in r for r in reasons) == 1
    assert sum("with labels ['angry', 'sad']" in r for r in reasons) == 2
    # fru and xxx: twice in Session1, once in Session2's readable dialog.
    assert sum("is not among" in r for r in reasons) == 6
    # Session1 keeps 12 - 1 (the utterance with two labels), Session2 its readable dialog's 6.
    assert counts["total"] == 17


INSPECT = [
    Case("duplicate-row", _manifest("path,label,speaker\na.wav,sad,s1\nb.wav,sad,s2\na.wav,sad,s1\n"), 0,
         ("m.csv:4: duplicate of line 2", "2 utterances")),
    Case("two-labels", _manifest("path,label,speaker\na.wav,sad,s1\nb.wav,sad,s2\na.wav,angry,s1\n"), 0,
         ("listed at lines 2, 4 with labels ['angry', 'sad']", "1 utterances")),
    Case("two-speakers", _manifest("path,label,speaker\na.wav,sad,s1\nc.wav,sad,s2\na.wav,sad,s3\n"), 0,
         ("with speakers ['s1', 's3']",)),
    Case("utf8-bom", _manifest("\ufeffpath,label,speaker\na.wav,sad,s1\n"), 0, ("1 utterances",)),
    Case("not-utf8", _manifest("path,label,speaker\na.wav,sad,s1\nb.wav,sad,J\u00fcrgen\n", "latin-1"), 2,
         ("m.csv:3: bytes that are not UTF-8", "save the manifest as UTF-8")),
    Case("missing-column", _manifest("file,emotion\na.wav,sad\n"), 2, ("missing column(s) ['path'",)),
    Case("windows-separators", _manifest("path,label,speaker\nsub\\a.wav,sad,s1\n"), 2,
         ("no usable row", "uses \\ separators: write them as /")),
    Case("iemocap-repeats-conflicts-other-labels-utf16", _iemocap_quirks, 0,
         ("Ses01F_impro01.txt:", "duplicate of line", "with labels ['angry', 'sad']", "label 'fru' is not among",
          "Ses02F_impro01.txt", "bytes that are not UTF-8"), _iemocap_skips_listed),
]


@pytest.mark.parametrize("case", INSPECT, ids=repr)
def test_inspect_reports_manifest_problems_by_line(case, ctx, capsys):
    call(ctx, case, capsys)


# ----------------------------------------------------------------------------- predict

def _several_files(ctx):
    empty = ctx.tmp / "empty.wav"
    import soundfile

    soundfile.write(empty, np.zeros(0, "float32"), 16000)
    (ctx.tmp / "broken.wav").write_bytes(b"RIFF1234WAVEjunk")
    return ["predict", ctx.wav, empty, ctx.tmp / "broken.wav", ctx.tmp / "none.wav",
            os.path.join(ctx.emodb, "wav", "08a01Na.wav"), "--model", ctx.run, "--json"]


def _good_files_predicted(ctx, output):
    rows = json.loads(output[output.index("["): output.rindex("]") + 1])
    assert [os.path.basename(r["path"]) for r in rows] == ["03a01Wa.wav", "08a01Na.wav"]


def _predict(ctx, *extra):
    return ["predict", ctx.wav, "--model", ctx.run, *extra]


def _json_without_nan(ctx, output):
    rows = json.loads(output[output.index("["): output.rindex("]") + 1])  # strict JSON: no NaN literal
    assert [os.path.basename(r["path"]) for r in rows] == ["03a01Wa.wav"]


def _partial_run(ctx):
    partial = ctx.tmp / "run.partial"
    shutil.copytree(ctx.run, partial)
    shutil.rmtree(partial / "classification" / sorted(os.listdir(partial / "classification"))[-1])
    return ["predict", ctx.wav, "--model", partial]


def _folder_of_formats(ctx):
    import soundfile

    folder = ctx.tmp / "calls"
    folder.mkdir()
    signal = np.asarray(soundfile.read(ctx.wav, dtype="float32")[0])
    soundfile.write(folder / "a.w64", signal, 16000, format="W64")
    soundfile.write(folder / "b.caf", signal, 16000, format="CAF")
    soundfile.write(folder / "c.wav", signal, 16000)
    (folder / "notes.txt").write_text("not audio")
    return ["predict", folder, "--model", ctx.run, "--json"]


def _every_format_predicted(ctx, output):
    rows = json.loads(output[output.index("["): output.rindex("]") + 1])
    assert sorted(os.path.basename(r["path"]) for r in rows) == ["a.w64", "b.caf", "c.wav"]
    assert len({round(r["p_angry"], 5) for r in rows}) == 1  # the same audio in three containers


PREDICT = [
    Case("several-files-some-bad", _several_files, 1,
         ("empty.wav: the file holds no samples", "broken.wav: unreadable audio", "none.wav: no such file",
          "3 of 5 file(s) failed"), _good_files_predicted),
    Case("threshold-2", lambda c: _predict(c, "--threshold", "2"), 2, ("--threshold", "in [0, 1]")),
    Case("window-0", lambda c: _predict(c, "--window", "0"), 2, ("--window", "> 0")),
    Case("no-model", lambda c: ["predict", c.wav, "--model", c.tmp], 2, ("no model here",)),
    Case("empty-folder", lambda c: ["predict", c.tmp, "--model", c.run], 2, ("a folder with no audio file",)),
    Case("a-file-too-short-for-opensmile",
         lambda c: ["predict", c.wav, write_wav(str(c.tmp / "short.wav"), tone(0.035)), "--model", c.run, "--json"], 1,
         ("short.wav: lld features hold NaN or infinity", "too short", "1 of 2 file(s) failed"), _json_without_nan),
    Case("hop-without-window", lambda c: _predict(c, "--hop", "1"), 2, ("--hop", "give --window")),
    Case("unfinished-run", _partial_run, 0, ("is an unfinished run", "only the folds it finished")),
    Case("folder-with-other-formats", _folder_of_formats, 0,
         ("1 file(s) left out", "notes.txt"), _every_format_predicted),
]


@pytest.mark.parametrize("case", PREDICT, ids=repr)
def test_predict_handles_bad_input(case, ctx, trained, capsys):
    ctx.run = trained
    call(ctx, case, capsys)


# ----------------------------------------------------------------------------- evaluate

def _other_corpus(ctx):
    """Another corpus: two known classes, one the models do not know, none of the others."""
    rows = ["path,label,speaker"]
    for name, label in (("03a01Wa.wav", "angry"), ("03a02Wc.wav", "angry"), ("03a01Ta.wav", "sad"),
                        ("03a02Ta.wav", "sad"), ("03a04Ad.wav", "fear"), ("03a01Fa.wav", "happy")):
        rows.append(f"{os.path.join(ctx.emodb, 'wav', name)},{label},s1")
    manifest = ctx.tmp / "other.csv"
    manifest.write_text("\n".join(rows[:-1]) + "\n")  # no happy utterance
    return manifest


def _cross(ctx):
    return ["evaluate", ctx.run, "--corpus", "manifest", "--root", _other_corpus(ctx), "--store", ctx.store,
            "--out", ctx.tmp / "cross"]


def _valid_json_only_present_classes(ctx, output):
    text = (ctx.tmp / "cross" / "metrics.json").read_text()
    assert "NaN" not in text
    metrics = json.loads(text)
    assert metrics["absent"] == ["happy", "neutral"]
    assert set(metrics["mean"]["per_emotion"]) == {"angry", "sad"}
    assert "nan" not in (ctx.tmp / "cross" / "results.md").read_text()


def _retest_then_cross(ctx):
    assert main(["evaluate", str(ctx.run), "--store", ctx.store]) == 0
    return ["evaluate", ctx.run, "--corpus", "manifest", "--root", _other_corpus(ctx), "--store", ctx.store]


def _both_kept(ctx, output):
    assert (ctx.run / "evaluation-retest" / "metrics.json").exists()
    assert (ctx.run / "evaluation-manifest-other" / "metrics.json").exists()


def _evaluate_elsewhere(ctx):
    os.chdir(ctx.tmp)  # restored by the test; a default ./feature-store would land here
    return ["evaluate", ctx.run, "--out", ctx.tmp / "retest"]


def _no_new_store(ctx, output):
    assert not (ctx.tmp / "feature-store").exists()
    again = json.loads((ctx.tmp / "retest" / "metrics.json").read_text())
    assert again["mean"]["uar"] == pytest.approx(json.loads((ctx.run / "metrics.json").read_text())["mean"]["uar"])


EVALUATE = [
    Case("cross-corpus-unknown-and-absent-labels", _cross, 0,
         ("1 manifest utterance(s) left out, their labels not among the classes: fear 1",), _valid_json_only_present_classes),
    Case("retest-and-cross-corpus-folders", _retest_then_cross, 0, ("evaluation-manifest-other",), _both_kept),
    Case("not-a-run", lambda c: ["evaluate", c.tmp], 2, ("not a run folder",)),
    Case("the-runs-own-store-without---store", _evaluate_elsewhere, 0, (), _no_new_store),
    Case("corpus-without-root", lambda c: ["evaluate", c.run, "--corpus", "emodb"], 2, ("--corpus needs --root",)),
]


@pytest.mark.parametrize("case", EVALUATE, ids=repr)
def test_evaluate_handles_bad_input(case, ctx, trained, capsys, monkeypatch):
    ctx.run = trained
    monkeypatch.chdir(os.getcwd())  # restores the working folder a case changes
    call(ctx, case, capsys)
