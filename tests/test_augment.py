"""Augmentation: speed-perturbed training copies, and feature masks that act in training only."""

import dataclasses
import json
import os

import numpy as np
import pytest

from msir_keras.augment import FeatureMasks
from msir_keras.model import MSIR, load_model

RNG = np.random.default_rng(5)


def _spans(flags):
    """Lengths of the runs of True in a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], flags.astype(int), [0]]))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


def test_masks_are_spans_within_their_limits_and_only_in_training():
    lengths = np.array([100, 60, 1])
    x = RNG.normal(size=(3, 100, 40, 2)).astype("float32") + 10  # no value is 0 by chance
    for row, n in enumerate(lengths):
        x[row, n:] = 0
    layer = FeatureMasks(time_masks=2, time_width=0.2, feature_masks=2, feature_width=0.25, seed=1)
    np.testing.assert_array_equal(np.asarray(layer(x, lengths)), x)
    masked = np.asarray(layer(x, lengths, training=True))
    zero = masked == 0
    assert zero.any()
    np.testing.assert_array_equal(masked[~zero], x[~zero])  # masks zero values, change nothing else
    for row, n in enumerate(lengths):
        assert zero[row, n:].all()  # padding stays padding
        frames = zero[row, :n].all(axis=(1, 2))  # whole frames: time masks
        bands = zero[row, :n].all(axis=(0, 2))  # whole Mel bands: feature masks
        assert all(span <= 2 * int(0.2 * n) for span in _spans(frames))
        assert bands.sum() <= 2 * int(0.25 * 40)
        # Every zero lies in a masked frame or a masked band.
        assert not (zero[row, :n] & ~frames[:, None, None] & ~bands[None, :, None]).any()
    assert zero[0, :100].all(axis=(1, 2)).any() and zero[0, :100].all(axis=(0, 2)).any()
    again = FeatureMasks.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()


def test_a_model_with_masks_predicts_as_the_same_weights_without_them(tmp_path):
    lengths = [57, 31]
    batch = {name: np.zeros((2, 57, *shape), "float32")
             for name, shape in (("logmel", (40, 2)), ("lld", (195,)))}
    for name in batch:
        for row, n in enumerate(lengths):
            batch[name][row, :n] = RNG.normal(size=(n, *batch[name].shape[2:]))
    plain = MSIR.from_preset("tiny", branches=("cr", "lld"))
    masked = MSIR.from_preset("tiny", branches=("cr", "lld"), time_masks=2, feature_masks=2)
    assert not plain.weights or len(plain.weights) == len(masked.weights)
    masked.set_weights(plain.get_weights())
    expected = plain.predict(batch, verbose=0)
    np.testing.assert_allclose(masked.predict(batch, verbose=0), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(masked(batch, training=False)), expected, rtol=1e-5, atol=1e-6)
    path = str(tmp_path / "masked.keras")
    masked.save(path)
    loaded = load_model(path, compile=False)
    assert loaded.backbone.time_masks == 2 and loaded.backbone.get_layer("logmel_feature_masks").feature_masks == 2
    np.testing.assert_allclose(loaded.predict(batch, verbose=0), expected, rtol=1e-5, atol=1e-6)
    # In training (which also moves batch-norm statistics, so last) the masks act.
    assert not np.allclose(np.asarray(masked(batch, training=True)), np.asarray(plain(batch, training=True)))


def test_mask_settings_are_checked_where_they_enter():
    from msir_keras.config import ExperimentConfig
    from msir_keras.features.base import ConfigError

    config = ExperimentConfig().with_settings(["time_masks=2", "feature_mask_width=0.2"])
    assert config.model_options == {"time_masks": 2, "feature_mask_width": 0.2}
    with pytest.raises(ConfigError, match="feature_mask_width"):
        ExperimentConfig().with_settings(["feature_mask_width=1.5"])
    with pytest.raises(ValueError, match="time_width"):
        FeatureMasks(time_width=1.0)
    config = ExperimentConfig().with_settings(["speeds=[0.9, 1.1]"])
    assert config.speeds == (0.9, 1.1)
    assert ExperimentConfig.from_dict(json.loads(json.dumps(config.to_dict()))).speeds == (0.9, 1.1)
    with pytest.raises(ConfigError, match="speeds"):
        ExperimentConfig(speeds=(1.0,))


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_scales_length_and_pitch(factor):
    from msir_keras.augment import speed_perturb

    rate = 16000
    tone = np.sin(2 * np.pi * 200 * np.arange(rate) / rate).astype("float32")
    played = speed_perturb(tone, factor)
    assert played.dtype == np.float32 and abs(len(played) - rate / factor) <= 1
    spectrum = np.abs(np.fft.rfft(played * np.hanning(len(played))))
    peak = np.argmax(spectrum) * rate / len(played)
    assert peak == pytest.approx(200 * factor, abs=1.5)
    assert np.abs(played).max() == pytest.approx(1.0, abs=0.02)  # the filter keeps the level
    with pytest.raises(ValueError, match="speed factor"):
        speed_perturb(tone, 3.0)


@pytest.mark.slow
def test_copies_only_of_training_utterances_computed_once(emodb_root, emodb_store, tmp_path):
    from msir_keras.augment import SpeedPerturbed
    from msir_keras.config import ExperimentConfig
    from msir_keras.experiment import prepare
    from msir_keras.training import target_labels, training_copies
    from msir_keras.features import FeatureStore
    from msir_keras.corpora import load_emodb

    table = load_emodb(emodb_root, emotions="four").utterances
    table = table[table["speaker"].isin(["03", "08", "09", "10"])].groupby(["speaker", "label"]).head(2)
    manifest = tmp_path / "corpus.csv"
    table[["path", "label", "speaker", "gender"]].to_csv(manifest, index=False)
    store = tmp_path / "store"
    config = ExperimentConfig(corpus="manifest", root=str(manifest), wav2vec2=None, branches=("lld",),
                              store=str(store), preset="tiny", n_folds=2, speeds=(0.9, 1.1))
    table, data, folds, _ = prepare(config, log=lambda *_: None)
    fold = folds[0]
    labels, _ = target_labels(config, table, "classification")
    logged = []
    copies = training_copies(config, table, fold, labels, log=logged.append)
    assert copies.size == 2 * len(fold.train)
    np.testing.assert_array_equal(copies.labels, np.tile(labels[fold.train], 2))
    originals = data.subset(fold.train).lengths()
    ratio = copies.lengths() / np.tile(originals, 2)
    assert np.allclose(ratio[: len(originals)], 1 / 0.9, atol=0.02) and np.allclose(ratio[len(originals):],
                                                                                        1 / 1.1, atol=0.02)
    # The store holds a copy of each training file per speed, and none of a validation or test file.
    features = FeatureStore(str(store))
    extractor = config.extractors()["lld"]
    for factor in (0.9, 1.1):
        stored = {name[:-4] for _, _, names in os.walk(store / SpeedPerturbed(extractor, factor).key())
                  for name in names if name.endswith(".npy")}
        assert stored == {features.digest(p) for p in table["path"].iloc[fold.train]}
    held_out = {features.digest(p) for p in table["path"].iloc[np.concatenate([fold.validation, fold.test])]}
    assert not held_out & {features.digest(p) for p in table["path"].iloc[fold.train]}
    # The engine trains on the training part and its copies (the normalisation is fitted on both).
    from msir_keras import engine

    model, history = engine.train(dataclasses.replace(config, epochs=1, batch_size=16), data, fold, labels,
                                  ["angry", "happy", "neutral", "sad"], "classification", copies=copies)
    mean, _ = data.with_labels(labels).subset(fold.train).concatenate(copies).fit_normalization()["lld"]
    np.testing.assert_allclose(model.get_normalization()["lld"][0], mean, rtol=1e-5, atol=1e-6)
    assert len(history) == 1
    # Asked again (another run, the next fold), the copies come from the store.
    logged.clear()
    training_copies(config, table, fold, labels, log=logged.append)
    assert all("0 files extracted" in line for line in logged) and len(logged) == 2
