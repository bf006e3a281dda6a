"""Training-only feature masks: spans within the limits in training, no effect at inference."""

import os

import keras
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
    plain = MSIR.from_preset("small", branches=("cr", "lld"))
    masked = MSIR.from_preset("small", branches=("cr", "lld"), time_masks=2, feature_masks=2)
    assert not plain.weights or len(plain.weights) == len(masked.weights)
    masked.set_weights(plain.get_weights())
    expected = plain.predict(batch, verbose=0)
    np.testing.assert_allclose(masked.predict(batch, verbose=0), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(masked(batch, training=False)), expected, rtol=1e-5, atol=1e-6)
    path = str(tmp_path / "masked.keras")
    masked.save(path)
    loaded = load_model(path, compile=False)
    assert loaded.time_masks == 2 and loaded.get_layer("logmel_feature_masks").feature_masks == 2
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
