"""Shared fixtures: the real EmoDB beside the checkout, small random wav2vec 2.0 checkpoints."""

import os
import pathlib
import tempfile

# Tests write nothing under the home folder, and keep TensorFlow's notices quiet.
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="keras-home-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from msir_keras.features.lld import load_opensmile  # noqa: E402

# openSMILE's library is loaded its own way before any test module imports TensorFlow.
load_opensmile()

ROOT = pathlib.Path(__file__).resolve().parents[1]
EMODB = ROOT.parent / "shared" / "data" / "emodb"


@pytest.fixture(scope="session")
def emodb_root():
    if not (EMODB / "wav").is_dir():
        pytest.fail(f"EmoDB not found at {EMODB}: the tests read ../shared/data/emodb beside the checkout")
    return str(EMODB)


@pytest.fixture(scope="session")
def emodb(emodb_root):
    from msir_keras.corpora import load_emodb

    return load_emodb(emodb_root, emotions="four")


@pytest.fixture(scope="session")
def sample_wav(emodb_root):
    return os.path.join(emodb_root, "wav", "03a01Fa.wav")


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory):
    """A small random wav2vec 2.0 (group-norm encoder, as the base models) saved to a folder."""
    from msir_keras.features import save_random_checkpoint

    return save_random_checkpoint(str(tmp_path_factory.mktemp("w2v") / "tiny"), size="tiny", seed=0)


@pytest.fixture(scope="session")
def emodb_store(tmp_path_factory, emodb):
    """The test run's one feature store: EmoDB's four classes, with the features MSIR trains on.

    log-Mels and LLDs of the 339 files are extracted here, once; the session
    runs add the tiny wav2vec 2.0 features of their manifest's files, and a
    few tests other features or files (functionals for the SVMs, other
    labels), each computed once for the whole test run.
    """
    from msir_keras.features import FeatureStore, branch_extractors

    store = FeatureStore(str(tmp_path_factory.mktemp("store")))
    extractors = list(branch_extractors().values())
    summary = store.extract(emodb.utterances["path"], extractors, workers=2)  # both cores, on any machine
    assert not summary.failed
    return store


@pytest.fixture(scope="session")
def emodb_manifest(tmp_path_factory, emodb):
    """Four EmoDB speakers (two female, two male), four utterances of each class each: 64 files as a manifest."""
    table = emodb.utterances
    table = table[table["speaker"].isin(["03", "08", "09", "10"])].groupby(["speaker", "label"]).head(4)
    path = tmp_path_factory.mktemp("manifest") / "corpus.csv"
    table[["path", "label", "speaker", "gender"]].to_csv(path, index=False)
    return str(path)


# The artefact kinds a user gets from `msir train`, each trained once per test run on the
# manifest above with the `tiny` preset (two folds): the tests of predict, export, evaluate,
# compare and the fresh-process loading read these run folders instead of training their own
# (a test that writes into one, as `msir evaluate` does, writes its own subfolder).
RUN_KINDS = {
    # Focal loss, the small-data recipe (its feature masks are in the saved models), log-Mels and
    # LLDs; the one kind that keeps its SavedModels (what `msir predict` loads first).
    "classification": ("--wav2vec2", "off", "--recipe", "small-data"),
    # The others train the first of the two folds only.
    "detection": ("--wav2vec2", "off", "--branches", "lld", "--task", "detection", "--emotion", "sad",
                  "--emotion", "angry", "--max-folds", "1", "--no-savedmodel"),
    "ensemble": ("--wav2vec2", "off", "--branches", "lld", "--loss", "crossentropy", "--ensemble", "2",
                 "--max-folds", "1", "--no-savedmodel"),
    # MSIR + F (the functionals branch: early fusion) late-fused with a classifier on the same eGeMAPS
    # functionals, one input for both (MSIR: two members, one per training
    # speaker held out), the two SVM baselines beside it; SavedModels kept (a fused model exports whole).
    "fusion": ("--wav2vec2", "off", "--branches", "lld,func", "--model", "fusion", "--max-folds", "1",
               "--set", "functionals=egemaps", "--set", "baselines=true"),
    # All three branches, the wav2vec one on a tiny random checkpoint; two epochs, dropout 0.4.
    "wav2vec": ("--epochs", "2", "--dropout", "0.4", "--max-folds", "1", "--no-savedmodel"),
}


@pytest.fixture(scope="session")
def runs(request, tmp_path_factory, emodb_manifest, emodb_store):
    """{kind: run folder} of RUN_KINDS, each trained (in this process) when a test first asks for it."""
    from msir_keras.cli import main

    class Runs(dict):
        def __missing__(self, kind):
            options = RUN_KINDS[kind]
            if kind == "wav2vec":
                options = ("--wav2vec2", request.getfixturevalue("tiny_wav2vec2"), *options)
            out = tmp_path_factory.mktemp("runs") / kind
            status = main(["train", "--corpus", "manifest", "--root", emodb_manifest, "--preset", "tiny",
                           "--folds", "2", "--epochs", "1", "--batch-size", "16", "--store", emodb_store.root,
                           "--out", str(out), *options])
            assert status == 0, f"the session's {kind} run failed"
            self[kind] = out
            return out

    return Runs()


def write_wav(path, signal, rate=16000, subtype="PCM_16"):
    import soundfile

    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, np.asarray(signal), rate, subtype=subtype)
    return path


def tone(seconds=0.5, rate=16000, frequency=220.0, seed=0):
    """A voiced-like test signal: a tone with harmonics and a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    signal = sum(np.sin(2 * np.pi * frequency * k * t) / k for k in (1, 2, 3))
    return (0.3 * signal / 1.8 + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
