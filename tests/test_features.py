import json

import numpy as np
import pytest
import python_speech_features as psf
import torch

from msir_keras.audio import read_audio
from msir_keras.features import (
    LLD,
    CheckpointError,
    Functionals,
    LogMel,
    LogMelConfig,
    Wav2Vec2,
    extractor_from_config,
    save_random_checkpoint,
)
from msir_keras.features.lld import load_opensmile

opensmile = load_opensmile()


@pytest.fixture(scope="module")
def signal(sample_wav):
    return read_audio(sample_wav)


def test_logmel_hamming_matches_python_speech_features(signal):
    features = LogMel()(signal)
    energies, _ = psf.fbank(signal, 16000, 0.025, 0.01, 40, 512, winfunc=np.hamming)
    static = np.log(energies)
    assert features.shape == (len(static), 40, 2)
    np.testing.assert_allclose(features[..., 0], static, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(features[..., 1], psf.delta(static, 2), rtol=1e-5, atol=1e-4)


def test_logmel_rectangular_equals_logfbank_and_3d_adds_second_delta(signal):
    features = LogMel(window="rectangular", deltas=2)(signal)
    static = psf.logfbank(signal, 16000, nfilt=40, nfft=512)
    np.testing.assert_allclose(features[..., 0], static, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(features[..., 2], psf.delta(psf.delta(static, 2), 2), rtol=1e-5, atol=1e-4)
    # The int16-vs-float convention the SPEC fixes: float input, 2*ln(32768) lower.
    int_static = psf.logfbank(signal * 32768.0, 16000, nfilt=40, nfft=512)
    assert np.median(int_static - static) == pytest.approx(2 * np.log(32768), abs=0.01)


def _delta_reference(x, n=2):
    """The delta regression formula written out, frame by frame, edges repeated."""
    padded = np.concatenate([x[:1].repeat(n, 0), x, x[-1:].repeat(n, 0)])
    denominator = 2 * sum(k * k for k in range(1, n + 1))
    return np.stack([
        sum(k * (padded[t + n + k] - padded[t + n - k]) for k in range(1, n + 1)) / denominator
        for t in range(len(x))
    ])


def test_lld_matches_opensmile_aligned_by_position(signal):
    features = LLD()(signal)
    lld = opensmile.Smile(
        opensmile.FeatureSet.ComParE_2016, opensmile.FeatureLevel.LowLevelDescriptors
    ).process_signal(signal, 16000).to_numpy()
    deltas = opensmile.Smile(
        opensmile.FeatureSet.ComParE_2016, opensmile.FeatureLevel.LowLevelDescriptors_Deltas
    ).process_signal(signal, 16000).to_numpy()
    assert len(deltas) == len(lld) + 2  # why alignment is by position
    assert features.shape == (len(lld), 195)
    np.testing.assert_allclose(features[:, :65], lld, rtol=1e-6)
    np.testing.assert_allclose(features[:, 65:130], deltas[: len(lld)], rtol=1e-6)
    np.testing.assert_allclose(features[:, 130:], _delta_reference(deltas[: len(lld)]), rtol=1e-4, atol=1e-5)
    assert LLD(deltas=0)(signal).shape == (len(lld), 65)
    np.testing.assert_array_equal(LLD(deltas=1)(signal), features[:, :130])


def test_functionals_match_opensmile(signal):
    for name, size in (("ComParE_2016", 6373), ("eGeMAPSv02", 88)):
        ours = Functionals(feature_set=name)(signal)
        theirs = opensmile.Smile(
            opensmile.FeatureSet[name], opensmile.FeatureLevel.Functionals
        ).process_signal(signal, 16000).to_numpy()[0]
        assert ours.shape == (size,)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_configs_round_trip_to_json_and_key_changes_with_any_setting():
    for extractor in (LogMel(deltas=2), LLD(deltas=1), Functionals(feature_set="eGeMAPSv02")):
        text = json.dumps(extractor.get_config())
        again = extractor_from_config(extractor.name, json.loads(text))
        assert again.config == extractor.config and again.key() == extractor.key()
    assert LogMel().key() != LogMel(nfft=1024).key() != LogMel(deltas=2).key()
    with pytest.raises(ValueError, match="no setting"):
        LogMelConfig.from_dict({"filters": 40})


def _reference_hidden_states(folder, signal, layer=None):
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    model = Wav2Vec2Model.from_pretrained(folder).eval()
    normalized = Wav2Vec2FeatureExtractor(do_normalize=True)(
        signal, sampling_rate=16000, return_tensors="pt"
    ).input_values
    with torch.no_grad():
        output = model(normalized, output_hidden_states=True)
    states = output.last_hidden_state if layer is None else output.hidden_states[layer]
    return states[0].numpy()


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_wav2vec2_equals_transformers_batched_and_unbatched(tmp_path, emodb, norm):
    folder = save_random_checkpoint(str(tmp_path / norm), size="tiny", seed=1, feat_extract_norm=norm)
    signals = [read_audio(p) for p in emodb.utterances["path"][:5]]
    signals.append(signals[0].copy())  # equal lengths share a batch for group norm
    extractor = Wav2Vec2(source=folder, batch_size=4)
    batched = extractor.extract_many(signals)
    for signal, ours in zip(signals, batched):
        reference = _reference_hidden_states(folder, signal)
        assert ours.shape == reference.shape == (reference.shape[0], 32)
        np.testing.assert_allclose(ours, reference, atol=2e-5)
        np.testing.assert_allclose(extractor(signal), reference, atol=2e-5)


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_wav2vec2_long_signal_in_windows_matches_whole(tmp_path, emodb, norm):
    """A 10.6 s signal in 4 s windows (0.5 s context each side) against the same signal encoded whole."""
    folder = save_random_checkpoint(str(tmp_path / norm), size="tiny", seed=2, feat_extract_norm=norm)
    signal = np.concatenate([read_audio(p) for p in emodb.utterances["path"][:6]])
    whole = Wav2Vec2(source=folder, chunk_length=None)(signal)
    windowed = Wav2Vec2(source=folder, chunk_length=4.0, chunk_overlap=0.5)
    windows = windowed.windows(len(signal))
    # The kept frames tile the whole signal's frames exactly once, in order.
    kept = [frames for _, frames in windows]
    assert len(windows) == 4 and kept[0][0] == 0 and kept[-1][1] == len(whole)
    assert all(a[1] == b[0] for a, b in zip(kept, kept[1:]))
    assert all(stop - start <= 4.0 * 16000 for (start, stop), _ in windows)
    chunked = windowed(signal)
    assert chunked.shape == whole.shape
    # Only attention beyond a window's context differs (the group norm gets the whole signal's statistics).
    assert np.linalg.norm(chunked - whole) / np.linalg.norm(whole) < 0.005
    # extract_many sends a long signal through the windows and batches the short ones as before.
    short = read_audio(emodb.utterances["path"][0])
    batch = windowed.extract_many([short, signal])
    np.testing.assert_allclose(batch[1], chunked, atol=1e-6)
    np.testing.assert_allclose(batch[0], Wav2Vec2(source=folder, chunk_length=None)(short), atol=2e-5)


def test_wav2vec2_layer_selection_and_identity(tiny_wav2vec2, signal, tmp_path):
    ours = Wav2Vec2(source=tiny_wav2vec2, layer=1)(signal)
    np.testing.assert_allclose(ours, _reference_hidden_states(tiny_wav2vec2, signal, layer=1), atol=2e-5)
    assert Wav2Vec2(source=tiny_wav2vec2).key() != Wav2Vec2(source=tiny_wav2vec2, layer=1).key()
    # The key follows the weights, not the folder: a copy keys the same, other weights do not.
    import shutil

    copy = shutil.copytree(tiny_wav2vec2, str(tmp_path / "copy"))
    other = save_random_checkpoint(str(tmp_path / "other"), size="tiny", seed=5)
    assert Wav2Vec2(source=copy).key() == Wav2Vec2(source=tiny_wav2vec2).key()
    assert Wav2Vec2(source=other).key() != Wav2Vec2(source=tiny_wav2vec2).key()


def test_unreachable_hub_fails_at_once_naming_the_local_folder_option(tmp_path):
    with pytest.raises(CheckpointError) as caught:
        Wav2Vec2(source="no-such-org/no-such-wav2vec2-model").key()
    message = str(caught.value)
    assert "save_pretrained" in message and "--wav2vec2" in message
    with pytest.raises(CheckpointError, match="config.json"):
        Wav2Vec2(source=str(tmp_path)).key()


def test_opensmile_runs_in_a_process_that_loaded_tensorflow_first(sample_wav):
    import subprocess
    import sys

    code = (
        "import tensorflow, numpy as np\n"
        "from msir_keras.audio import read_audio\n"
        "from msir_keras.features import LLD, Functionals\n"
        f"x = read_audio({sample_wav!r})\n"
        "for _ in range(3): a = LLD()(x); b = Functionals()(x)\n"
        "print(a.shape, b.shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-1500:]
    assert "(185, 195) (6373,)" in result.stdout
