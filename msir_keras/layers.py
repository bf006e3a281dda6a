"""Registered layers: lengths and masks of padded sequences, z-scores, attention pooling.

Sequences are right-padded with zeros. A sequence's valid length is the
position of its last frame that is not all zeros (at least 1, so no mask is
ever empty and the cuDNN LSTM kernel stays valid); masks come from lengths.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

PACKAGE = "msir_keras"


def sequence_mask(lengths, maxlen):
    """(B,) lengths -> (B, maxlen) boolean mask, True on valid frames."""
    return ops.less(ops.arange(maxlen)[None, :], ops.cast(lengths, "int32")[:, None])


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrameLengths(keras.layers.Layer):
    """Valid lengths of right-zero-padded sequences, shaped (B,), int32, at least 1.

    Example:
    >>> import numpy as np
    >>> x = np.zeros((2, 5, 3), "float32"); x[0, :4] = 1; x[1, 1] = 1
    >>> FrameLengths()(x).numpy().tolist()
    [4, 2]
    """

    def call(self, inputs):
        axes = tuple(range(2, len(inputs.shape)))
        nonzero = ops.not_equal(inputs, 0)
        if axes:
            nonzero = ops.any(nonzero, axis=axes)
        positions = ops.arange(1, ops.shape(inputs)[1] + 1, dtype="int32")
        lengths = ops.max(ops.where(nonzero, positions[None, :], 0), axis=1)
        return ops.maximum(lengths, 1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((inputs.shape[0],), dtype="int32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskFromLengths(keras.layers.Layer):
    """[(B,) lengths, (B, T, ...) sequence] -> (B, T) boolean padding mask."""

    def call(self, inputs):
        lengths, sequence = inputs
        return sequence_mask(lengths, ops.shape(sequence)[1])

    def compute_output_spec(self, inputs):
        lengths, sequence = inputs
        return keras.KerasTensor(sequence.shape[:2], dtype="bool")


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaskFrames(keras.layers.Layer):
    """Sets the frames at and after each sequence's length to `fill_value`.

    Args:
        fill_value: float or "min", defaults to 0. "min" fills with the
            dtype's lowest value, so a following max-pooling ignores padding.
    """

    def __init__(self, fill_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.fill_value = fill_value

    def call(self, inputs, lengths):
        mask = sequence_mask(lengths, ops.shape(inputs)[1])
        mask = ops.reshape(mask, ops.shape(mask) + (1,) * (len(inputs.shape) - 2))
        if self.fill_value == "min":
            fill = _lowest(inputs.dtype)
        else:
            fill = self.fill_value
        return ops.where(mask, inputs, ops.cast(fill, inputs.dtype))

    def get_config(self):
        return {**super().get_config(), "fill_value": self.fill_value}


def _lowest(dtype):
    """The lowest finite value of a float dtype (a TensorFlow or numpy dtype, or its name)."""
    return {"float16": -65504.0, "bfloat16": -3.38e38}.get(keras.backend.standardize_dtype(dtype), -3.4e38)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PooledLengths(keras.layers.Layer):
    """Lengths after a 'same'-padded pooling of `stride` on time: ceil(lengths / stride)."""

    def __init__(self, stride=2, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride

    def call(self, lengths):
        return ops.floor_divide(lengths + (self.stride - 1), self.stride)

    def compute_output_spec(self, lengths):
        return keras.KerasTensor(lengths.shape, dtype=lengths.dtype)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Standardize(keras.layers.Layer):
    """z-scores per feature dimension, with statistics stored as (non-trainable) weights.

    The statistics are fitted on the training part only (see
    `msir_keras.data.fit_normalization`) and set with `set_statistics`, so a
    saved model carries them and needs no side file to predict.

    Args:
        feature_shape: tuple of int. The shape of one frame, e.g. (40, 2).
    """

    def __init__(self, feature_shape, **kwargs):
        super().__init__(**kwargs)
        self.feature_shape = tuple(feature_shape)

    def build(self, input_shape):
        self.mean = self.add_weight(
            name="mean", shape=self.feature_shape, initializer="zeros", trainable=False
        )
        self.std = self.add_weight(
            name="std", shape=self.feature_shape, initializer="ones", trainable=False
        )

    def set_statistics(self, mean, std):
        self.mean.assign(ops.cast(mean, self.mean.dtype))
        self.std.assign(ops.cast(std, self.std.dtype))

    def call(self, inputs):
        mean = ops.cast(self.mean, inputs.dtype)
        std = ops.cast(self.std, inputs.dtype)
        return (inputs - mean) / std

    def get_config(self):
        return {**super().get_config(), "feature_shape": list(self.feature_shape)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionPooling(keras.layers.Layer):
    """Attention pooling over time (paper eq. 2, ACRNN).

    Scores `s_t = w . tanh(h_t)`, weights `a = softmax(s)` over the valid
    frames only, output `sum_t a_t h_t`. Padded frames get no weight, so the
    same sequence padded to two lengths pools to the same vector.

    Call arguments:
        inputs: (B, T, D) float tensor.
        padding_mask: (B, T) boolean tensor, True on valid frames, or None.

    Returns:
        (B, D) float tensor.
    """

    def __init__(self, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[-1], 1),
            initializer=self.kernel_initializer,
        )

    def call(self, inputs, padding_mask=None, mask=None):
        padding_mask = padding_mask if padding_mask is not None else mask
        scores = ops.squeeze(ops.matmul(ops.tanh(inputs), self.kernel), axis=-1)
        if padding_mask is not None:
            scores = ops.where(padding_mask, scores, _lowest(scores.dtype))
        weights = ops.softmax(scores, axis=-1)
        if padding_mask is not None:
            weights = weights * ops.cast(padding_mask, weights.dtype)
        return ops.sum(inputs * weights[..., None], axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


_MERGES = {
    "concat": lambda forward, backward: ops.concatenate([forward, backward], axis=-1),
    "sum": ops.add,
}


@keras.saving.register_keras_serializable(package=PACKAGE)
class BiLSTM(keras.layers.Layer):
    """A bidirectional LSTM over right-padded sequences, returning every frame.

    The same computation as `keras.layers.Bidirectional(LSTM(units,
    return_sequences=True), merge_mode)`: the backward LSTM reads the valid
    frames from last to first, its outputs are flipped back into time order,
    and padded frames output zeros in both directions. Its config is only
    `units` and `merge_mode`. Keras's wrapper re-serialises its inner layer
    while a model loads, and inside the loader's object-sharing scope a
    reused Python `id` can hand one branch another branch's backward LSTM
    ("Forward layer and backward layer should have different go_backwards
    value"), depending on what the process allocated before.

    Args:
        units: LSTM units per direction.
        merge_mode: "concat" (B, T, 2 * units) or "sum" (B, T, units).
    """

    def __init__(self, units, merge_mode="concat", **kwargs):
        super().__init__(**kwargs)
        if merge_mode not in _MERGES:
            raise ValueError(f"merge_mode must be one of {sorted(_MERGES)}, got {merge_mode!r}")
        self.units = units
        self.merge_mode = merge_mode
        self.supports_masking = True
        options = dict(return_sequences=True, zero_output_for_mask=True, dtype=self.dtype_policy)
        self.forward_layer = keras.layers.LSTM(units, name="forward_lstm", **options)
        self.backward_layer = keras.layers.LSTM(units, go_backwards=True, name="backward_lstm", **options)

    def build(self, input_shape):
        self.forward_layer.build(input_shape)
        self.backward_layer.build(input_shape)

    def call(self, inputs, mask=None, training=None):
        forward = self.forward_layer(inputs, mask=mask, training=training)
        backward = self.backward_layer(inputs, mask=mask, training=training)
        return _MERGES[self.merge_mode](forward, ops.flip(backward, axis=1))

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        width = 2 * self.units if self.merge_mode == "concat" else self.units
        return (*input_shape[:-1], width)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "merge_mode": self.merge_mode}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FunctionalsClassifier(keras.layers.Layer):
    """A multinomial logistic regression on z-scored functionals, as a Keras layer.

    p = softmax(((x - mean) / std) W + b), x the concatenated functional
    vectors (B, D) of `inputs_names` in order: scikit-learn's
    `make_pipeline(StandardScaler(), LogisticRegression())` with its fitted
    statistics and coefficients (`from_sklearn`), so a saved model holds the
    whole classifier and needs no pickle. Its weights are not trained by Keras.

    Args:
        inputs_names: list of str. The functional sets it reads, e.g. ["compare", "egemaps"].
        input_sizes: list of int. Their dimensions, e.g. [6373, 88].
        num_classes: int.

    Call: a list of (B, D_i) float tensors -> (B, num_classes) probabilities.
    """

    def __init__(self, inputs_names, input_sizes, num_classes, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.inputs_names = list(inputs_names)
        self.input_sizes = [int(s) for s in input_sizes]
        self.num_classes = int(num_classes)
        size = sum(self.input_sizes)
        self.mean = self.add_weight(name="mean", shape=(size,), initializer="zeros", trainable=False)
        self.std = self.add_weight(name="std", shape=(size,), initializer="ones", trainable=False)
        self.kernel = self.add_weight(name="kernel", shape=(size, self.num_classes), initializer="zeros",
                                      trainable=False)
        self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros", trainable=False)

    @classmethod
    def from_sklearn(cls, pipeline, inputs_names, input_sizes, num_classes, **kwargs):
        """The layer of a fitted `StandardScaler` + `LogisticRegression` pipeline.

        A binary regression (one coefficient row) becomes the two-column
        softmax [0, z] with the same probabilities. Classes the training
        part lacked get a bias of -1e9 (probability 0), as scikit-learn
        gives them no column.
        """
        scaler, regression = pipeline[0], pipeline[-1]
        coef = np.asarray(regression.coef_, np.float64)
        intercept = np.asarray(regression.intercept_, np.float64)
        if coef.shape[0] == 1:  # binary: p(class 1) = sigmoid(z) = softmax([0, z])[1]
            coef = np.concatenate([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        kernel = np.zeros((coef.shape[1], num_classes))
        bias = np.full(num_classes, -1e9)
        kernel[:, regression.classes_] = coef.T
        bias[regression.classes_] = intercept
        if sum(input_sizes) != coef.shape[1]:
            raise ValueError(f"input sizes {list(input_sizes)} do not add up to the regression's {coef.shape[1]}")
        layer = cls(inputs_names, input_sizes, num_classes, **kwargs)
        layer.mean.assign(np.asarray(scaler.mean_, np.float32))
        layer.std.assign(np.asarray(scaler.scale_, np.float32))
        layer.kernel.assign(kernel.astype(np.float32))
        layer.bias.assign(bias.astype(np.float32))
        return layer

    def call(self, inputs):
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        x = ops.concatenate([ops.cast(t, "float32") for t in inputs], axis=-1)
        logits = ops.matmul((x - self.mean) / self.std, self.kernel) + self.bias
        return ops.softmax(logits, axis=-1)

    def compute_output_shape(self, input_shape):
        first = input_shape[0] if isinstance(input_shape, list) else input_shape
        return (first[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "inputs_names": self.inputs_names, "input_sizes": self.input_sizes,
                "num_classes": self.num_classes}
