import keras
import numpy as np
from keras.ops import convert_to_numpy as to_numpy  # any backend's tensors (torch's carry gradients)
import pytest

from msir_keras.losses import FocalLoss

RNG = np.random.default_rng(0)


def _probabilities(n, classes):
    logits = RNG.normal(size=(n, classes)) * 2
    return (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")


@pytest.mark.parametrize("zeta,theta", [(0.25, 2.0), (0.75, 2.0), (0.65, 0.5), (0.5, 0.0)])
def test_binary_agrees_with_keras_binary_focal_crossentropy(zeta, theta):
    y_true = RNG.integers(0, 2, size=(32, 1)).astype("float32")
    y_pred = RNG.uniform(0.01, 0.99, size=(32, 1)).astype("float32")
    reference = keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=zeta, gamma=theta)
    ours = FocalLoss(zeta=zeta, theta=theta)
    np.testing.assert_allclose(float(ours(y_true, y_pred)), float(reference(y_true, y_pred)), rtol=1e-5)


@pytest.mark.parametrize("zeta,theta", [(0.25, 2.0), (1.0, 1.0)])
def test_categorical_agrees_with_keras_categorical_focal_crossentropy(zeta, theta):
    y_pred = _probabilities(32, 4)
    labels = RNG.integers(0, 4, size=32)
    one_hot = np.eye(4, dtype="float32")[labels]
    reference = keras.losses.CategoricalFocalCrossentropy(alpha=zeta, gamma=theta)
    ours = FocalLoss(zeta=zeta, theta=theta)
    np.testing.assert_allclose(float(ours(one_hot, y_pred)), float(reference(one_hot, y_pred)), rtol=1e-5)
    # Sparse labels give the same loss as one-hot rows.
    np.testing.assert_allclose(float(ours(labels, y_pred)), float(ours(one_hot, y_pred)), rtol=1e-6)


def test_theta_zero_is_cross_entropy_up_to_zeta():
    y_pred = _probabilities(16, 4)
    labels = RNG.integers(0, 4, size=16)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy()(labels, y_pred)
    np.testing.assert_allclose(float(FocalLoss(zeta=0.5, theta=0.0)(labels, y_pred)),
                               0.5 * float(cross_entropy), rtol=1e-5)


def test_two_way_softmax_with_class_zetas_equals_the_binary_form():
    y_pred = _probabilities(32, 2)
    labels = RNG.integers(0, 2, size=32)
    two_way = FocalLoss(zeta=[0.25, 0.75], theta=2.0)(labels, y_pred)
    binary = FocalLoss(zeta=0.75, theta=2.0)(labels[:, None].astype("float32"), y_pred[:, 1:])
    np.testing.assert_allclose(float(two_way), float(binary), rtol=1e-5)


def test_per_class_zeta_weights_each_class_by_its_own_factor():
    y_pred = _probabilities(8, 4)
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    zeta = [0.1, 0.2, 0.3, 0.4]
    per_example = FocalLoss(zeta=zeta, theta=2.0, reduction=None)(labels, y_pred)
    p = y_pred[np.arange(8), labels]
    expected = -np.array(zeta)[labels] * (1 - p) ** 2 * np.log(p)
    np.testing.assert_allclose(to_numpy(per_example), expected, rtol=1e-5)


def test_aliases_and_serialization():
    loss = FocalLoss(alpha=0.6, gamma=1.5)
    assert (loss.zeta, loss.theta) == (0.6, 1.5)
    again = keras.losses.deserialize(keras.losses.serialize(FocalLoss(zeta=[0.3, 0.7], theta=2.0)))
    assert isinstance(again, FocalLoss) and again.zeta == [0.3, 0.7]
    with pytest.raises(ValueError):
        FocalLoss(zeta=0.5, alpha=0.5)
