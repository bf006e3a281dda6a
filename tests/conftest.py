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
    """log-Mel and LLD features of EmoDB's four classes, extracted once for the session."""
    from msir_keras.features import FeatureStore, branch_extractors

    store = FeatureStore(str(tmp_path_factory.mktemp("store")))
    summary = store.extract(emodb.utterances["path"], list(branch_extractors().values()))
    assert not summary.failed
    return store


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
