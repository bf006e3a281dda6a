"""Every upstream family, from tiny random checkpoints saved as real ones, against `transformers` itself."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

from msir_keras.audio import read_audio
from msir_keras.features import (
    CheckpointError,
    ConfigError,
    DiskSpaceError,
    FeatureStore,
    Upstream,
    UpstreamConfig,
    Wav2Vec2,
    extractor_from_config,
    save_random_checkpoint,
)
from msir_keras.features.checkpoints import checkpoint_fingerprint
from msir_keras.features.random_checkpoints import random_config

# (family, feature encoder norm): the base models' group norm and the large ones' "stable layer norm".
CHECKPOINTS = [("wav2vec2", "group"), ("wav2vec2", "layer"), ("hubert", "group"), ("hubert", "layer"),
               ("wavlm", "group"), ("wavlm", "layer"), ("data2vec-audio", "layer"), ("whisper", "")]
IDS = [f"{family}-{norm}".rstrip("-") for family, norm in CHECKPOINTS]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """checkpoint(family, norm, seed=1): a tiny random checkpoint's folder, saved once per module."""
    folders = {}

    def make(family, norm, seed=1):
        if (family, norm, seed) not in folders:
            folder = str(tmp_path_factory.mktemp("upstreams") / f"{family}-{norm}-{seed}")
            folders[family, norm, seed] = save_random_checkpoint(
                folder, family=family, feat_extract_norm=norm or "group", seed=seed)
        return folders[family, norm, seed]

    return make


@pytest.fixture(scope="module")
def signals(emodb):
    signals = [read_audio(p) for p in emodb.utterances["path"][:4]]
    return signals + [signals[0].copy()]  # equal lengths share a batch where padding is not exact


def _reference(folder, family, signal):
    """(last_hidden_state, hidden_states) of one signal, as `transformers` computes them on its own."""
    import transformers

    if family == "whisper":
        model = transformers.WhisperModel.from_pretrained(folder).encoder.eval()
        inputs = transformers.WhisperFeatureExtractor.from_pretrained(folder)(
            signal, sampling_rate=16000, return_tensors="pt").input_features
        frames = -(-len(signal) // 320)  # the real signal's frames of the 30 s window
    else:
        model = transformers.AutoModel.from_pretrained(folder).eval()
        inputs = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)(
            signal, sampling_rate=16000, return_tensors="pt").input_values
        frames = None
    with torch.no_grad():
        output = model(inputs, output_hidden_states=True)
    return output.last_hidden_state[0, :frames].numpy(), [h[0, :frames].numpy() for h in output.hidden_states]


@pytest.mark.parametrize("family, norm", CHECKPOINTS, ids=IDS)
def test_features_equal_transformers_hidden_states_batched_and_alone(checkpoint, signals, family, norm):
    folder = checkpoint(family, norm)
    references = [_reference(folder, family, signal) for signal in signals]
    for layer in (None, 1, -1):
        extractor = Upstream(folder, layer=layer, batch_size=4)
        assert extractor.family.model_type == family and extractor.frame_rate == 50.0
        for ours, (last, hidden) in zip(extractor.extract_many(signals), references):
            expected = last if layer is None else hidden[layer]
            assert ours.dtype == np.float32 and ours.shape == expected.shape == (len(expected), 32)
            np.testing.assert_allclose(ours, expected, atol=1e-5)
        last, hidden = references[1]
        np.testing.assert_allclose(extractor(signals[1]), last if layer is None else hidden[layer], atol=1e-5)
    # Every hidden state, (T, layers + 1, hidden) in float16: the references rounded to it.
    every = Upstream(folder, layer="all", batch_size=4)
    assert every.feature_shape == (3, 32) and every.store_dtype == "float16"
    one = Upstream(folder, layer=1, batch_size=4).extract_many(signals)
    for ours, (_, hidden), single in zip(every.extract_many(signals), references, one):
        assert ours.dtype == np.float16 and ours.shape == (len(hidden[0]), 3, 32)
        np.testing.assert_allclose(ours.astype(np.float32), np.stack(hidden, axis=1), rtol=1e-3, atol=1e-5)
        np.testing.assert_array_equal(ours[:, 1], single.astype(np.float16))


def _legacy_identity(folder, layer=None, normalize=True, windows=(30.0, 2.0)):
    """What `Wav2Vec2.identity()` and `key()` gave before other upstreams (its code, restated)."""
    identity = {"extractor": "wav2vec2", "config": {"layer": layer, "normalize": normalize},
                "weights": checkpoint_fingerprint(folder)}
    if tuple(windows) != (30.0, 2.0):
        identity["windows"] = list(windows)
    text = json.dumps(identity, sort_keys=True)
    return identity, f"wav2vec2-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def test_wav2vec2_identity_is_unchanged_so_existing_store_entries_are_found(tiny_wav2vec2):
    for layer, normalize, windows in ((None, True, (30.0, 2.0)), (1, True, (30.0, 2.0)), (-1, False, (4.0, 0.5)),
                                      (None, True, (None, 2.0))):
        identity, key = _legacy_identity(tiny_wav2vec2, layer, normalize, windows)
        settings = dict(layer=layer, normalize=normalize, chunk_length=windows[0], chunk_overlap=windows[1])
        for extractor in (Wav2Vec2(source=tiny_wav2vec2, **settings), Upstream(tiny_wav2vec2, **settings)):
            assert extractor.identity() == identity and extractor.key() == key
    # The checkpoint's own feature extractor decides when normalize is not given: True without one.
    assert Upstream(tiny_wav2vec2).key() == _legacy_identity(tiny_wav2vec2)[1]


def test_identity_differs_across_families_layers_and_weights(checkpoint, tmp_path):
    keys = {}
    for family, norm in CHECKPOINTS:
        for layer in (None, 1, "all"):
            extractor = Upstream(checkpoint(family, norm), layer=layer)
            keys[family, norm, layer] = extractor.key()
            assert extractor.key().startswith(f"{family}-")
            if (family, layer) != ("wav2vec2", None) and layer != 1:
                assert extractor.identity()["family"] == family
    assert len(set(keys.values())) == len(keys)
    folder = checkpoint("wavlm", "group")
    assert Upstream(checkpoint("wavlm", "group", seed=2)).key() != Upstream(folder).key()
    assert Upstream(shutil.copytree(folder, str(tmp_path / "moved"))).key() == Upstream(folder).key()
    # The settings round-trip through the name and config a trained model records.
    extractor = Upstream(folder, layer="all")
    again = extractor_from_config(extractor.name, json.loads(json.dumps(extractor.get_config())))
    assert again.key() == extractor.key() and again.config == UpstreamConfig(folder, "all", None)
    # A checkpoint's feature extractor that does not normalise makes other features, under another key.
    with open(os.path.join(str(tmp_path / "moved"), "preprocessor_config.json"), "w") as handle:
        json.dump({"do_normalize": False}, handle)
    assert not Upstream(str(tmp_path / "moved")).normalize
    assert Upstream(str(tmp_path / "moved")).identity()["config"]["normalize"] is False


@pytest.mark.parametrize("family, norm", CHECKPOINTS[:-1], ids=IDS[:-1])
def test_long_signal_in_windows_matches_whole(checkpoint, emodb, family, norm):
    """A 10.6 s signal in 4 s windows (0.5 s context each side) against the same signal encoded whole."""
    folder = checkpoint(family, norm)
    signal = np.concatenate([read_audio(p) for p in emodb.utterances["path"][:6]])
    windowed = Upstream(folder, chunk_length=4.0, chunk_overlap=0.5)
    spans = windowed.windows(len(signal))
    kept = [frames for _, frames in spans]
    lengths = []
    forward = windowed._forward
    windowed._forward = lambda parts: lengths.extend(map(len, parts)) or forward(parts)
    chunked = windowed(signal)
    whole = Upstream(folder, chunk_length=None)(signal)
    assert len(spans) == 4 and kept[0][0] == 0 and kept[-1][1] == len(whole) == len(chunked)
    assert all(a[1] == b[0] for a, b in zip(kept, kept[1:]))  # the kept frames tile the signal once
    assert len(lengths) == 4 and max(lengths) <= 4.0 * 16000  # memory bounded by the window
    # Random weights attend everywhere: only attention beyond a window's context differs (0.1 to 0.7 %).
    assert np.linalg.norm(chunked - whole) / np.linalg.norm(whole) < 0.01
    if family == "wavlm":  # every hidden state goes the same way
        every = Upstream(folder, layer="all", chunk_length=4.0, chunk_overlap=0.5)(signal)
        last = Upstream(folder, layer=-1, chunk_length=4.0, chunk_overlap=0.5)(signal)
        np.testing.assert_array_equal(every[:, -1], last.astype(np.float16))


def test_whisper_encodes_long_signals_window_by_window(checkpoint, emodb):
    """70 s through Whisper's 30 s windows: each window's kept frames are what `transformers` gives for it."""
    folder = checkpoint("whisper", "")
    signal, index = [], 0
    while sum(map(len, signal)) < 70 * 16000:
        signal.append(read_audio(emodb.utterances["path"][index]))
        index += 1
    signal = np.concatenate(signal)[: 70 * 16000 + 123]
    extractor = Upstream(folder, layer="all", chunk_length=None)  # Whisper windows whatever chunk_length says
    spans = extractor.windows(len(signal))
    features = extractor(signal)
    assert features.shape == (-(-len(signal) // 320), 3, 32)
    assert len(spans) == 3 and all(stop - start <= 30 * 16000 for (start, stop), _ in spans)
    assert [frames for _, frames in spans] == [(0, 1299), (1299, 2598), (2598, 3501)]
    for (start, stop), (first, last) in spans:
        _, hidden = _reference(folder, "whisper", signal[start:stop])
        expected = np.stack(hidden, axis=1)[first - start // 320: last - start // 320]
        np.testing.assert_allclose(features[first:last].astype(np.float32), expected, rtol=1e-3, atol=1e-5)


def test_real_checkpoints_with_heads_load_their_encoder(checkpoint, signals, tmp_path):
    """Hub checkpoints are often Wav2Vec2ForCTC or WhisperForConditionalGeneration: the encoder's weights load."""
    import transformers

    torch.manual_seed(3)
    whisper = transformers.WhisperForConditionalGeneration(random_config("whisper")).eval()
    whisper.save_pretrained(str(tmp_path / "whisper"))  # no preprocessor_config.json: Whisper's standard one
    inputs = transformers.WhisperFeatureExtractor()(signals[0], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = whisper.model.encoder(inputs.input_features).last_hidden_state[0, : -(-len(signals[0]) // 320)]
    np.testing.assert_allclose(Upstream(str(tmp_path / "whisper"))(signals[0]), expected.numpy(), atol=1e-5)
    # Another family's weights under Whisper's config would be random features: refused.
    shutil.copytree(checkpoint("whisper", ""), str(tmp_path / "mixed"))
    shutil.copy(os.path.join(checkpoint("wavlm", "group"), "model.safetensors"), str(tmp_path / "mixed"))
    with pytest.raises(CheckpointError, match="would be random"):
        Upstream(str(tmp_path / "mixed"))(signals[0])


def test_settings_refused_where_they_enter(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="'all'"):
        UpstreamConfig(layer="last")
    with pytest.raises(ConfigError, match="out of range.*-3 to 2"):
        Upstream(checkpoint("hubert", "group"), layer=3).key()
    folder = shutil.copytree(checkpoint("hubert", "group"), str(tmp_path / "other"))
    with open(os.path.join(folder, "config.json")) as handle:
        config = json.load(handle)
    with open(os.path.join(folder, "config.json"), "w") as handle:
        json.dump({**config, "model_type": "speech_to_text"}, handle)
    with pytest.raises(CheckpointError, match="wavlm.*whisper"):
        Upstream(folder).key()


def test_disk_cost_of_every_layer_at_base_size(tmp_path):
    """float16 bytes per hour of audio of layer "all", from config.json alone (no weights needed)."""
    costs = {}
    for family in ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper"):
        folder = str(tmp_path / family)
        random_config(family, size="base").save_pretrained(folder)
        every, one = Upstream(folder, layer="all"), Upstream(folder)
        costs[family] = every.bytes_per_hour()
        assert one.bytes_per_hour() == 3600 * 50 * every.hidden_size * 4
    assert costs["wav2vec2"] == costs["hubert"] == costs["wavlm"] == costs["data2vec-audio"] == 3600 * 50 * 13 * 768 * 2
    assert costs["whisper"] == 3600 * 50 * 7 * 512 * 2  # whisper-base's encoder: 6 blocks of 512


def test_store_keeps_every_layer_in_float16_and_refuses_what_the_disk_cannot_hold(checkpoint, emodb, tmp_path,
                                                                                     monkeypatch):
    import collections

    from msir_keras.features import schedule

    paths = list(emodb.utterances["path"][:3])
    extractor = Upstream(checkpoint("wavlm", "layer"), layer="all")
    store = FeatureStore(str(tmp_path / "store"))
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(schedule.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    refusal = r"of 5 s of audio need 51.7 kB .*upstream 34\.6 MB per hour of audio.*1 kB free"
    with pytest.raises(DiskSpaceError, match=refusal):
        store.extract(paths, [extractor])
    assert not os.path.exists(store.root)  # refused before any work
    monkeypatch.undo()
    summary = store.extract(paths, [extractor], verify=True)
    assert summary.computed == 3 and not summary.failed
    arrays = store.load_many(paths, extractor)  # checksums verified
    assert all(a.dtype == np.float16 and a.shape[1:] == (3, 32) for a in arrays)
    # Batched there, alone here: at most one float16 step apart where the float32 values round apart.
    np.testing.assert_allclose(arrays[0].astype(np.float32), extractor(read_audio(paths[0])).astype(np.float32),
                               rtol=2e-3, atol=1e-5)
    # Entries already stored need no room: a full disk does not stop the cached run.
    monkeypatch.setattr(schedule.shutil, "disk_usage", lambda path: usage(10**6, 10**6, 0))
    assert store.extract(paths, [extractor]).cached == 3


@pytest.mark.slow  # a two-epoch training and a fresh-process prediction
def test_msir_with_wavlm_every_layer_trains_predicts_and_refuses_another_upstream(checkpoint, emodb_manifest,
                                                                                   emodb_store, sample_wav, tmp_path):
    """`msir train --upstream WAVLM --upstream-layer all`: the store holds every hidden state as float16, the
    learned layer weights are in metrics.json and a bar chart, `msir predict` in a new process gives
    probabilities, and refuses features of another upstream."""
    import subprocess
    import sys

    folder, run = checkpoint("wavlm", "layer"), tmp_path / "run"
    train = [sys.executable, "-m", "msir_keras.cli", "train", "--corpus", "manifest", "--root", emodb_manifest,
             "--upstream", folder, "--upstream-layer", "all", "--branches", "lld,w2v", "--preset", "tiny",
             "--folds", "2", "--max-folds", "1", "--epochs", "2", "--batch-size", "16", "--no-savedmodel",
             "--store", emodb_store.root, "--out", str(run)]
    result = subprocess.run(train, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    (weights,) = metrics["layer_weights"]["classification"].values()
    layers = random_config("wavlm", "tiny", "layer").num_hidden_layers + 1
    assert len(weights) == layers and abs(sum(weights) - 1) < 1e-3
    assert (run / "layer_weights.png").stat().st_size > 0 and "upstream layer weights" in result.stdout
    stored = [np.load(p, mmap_mode="r") for p in _store_arrays(emodb_store.root, "wavlm")]
    assert stored and all(a.dtype == np.float16 and a.shape[1:] == (layers, 32) for a in stored[:3])

    predict = [sys.executable, "-m", "msir_keras.cli", "predict", "--model", str(run), sample_wav, "--json"]
    result = subprocess.run(predict, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(result.stdout)
    assert abs(sum(v for k, v in row.items() if k.startswith("p_")) - 1) < 1e-5
    other = checkpoint("wavlm", "layer", seed=2)
    result = subprocess.run([*predict, "--upstream", other], capture_output=True, text=True)
    assert result.returncode != 0 and "w2v" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _store_arrays(root, family):
    """The store's .npy files of one upstream family (its entries' folders are named after it)."""
    return [os.path.join(d, f) for d, _, files in os.walk(root) if family in d for f in files if f.endswith(".npy")]
