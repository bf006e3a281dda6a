"""The three recurrent branches of MSIR, and the functionals branch, each a functional Keras submodel.

Every recurrent branch takes `[features, lengths]`: features z-scored and
zero on the padded frames, lengths (B,) the valid frame counts. Each returns
one utterance-level vector. The functionals branch takes one z-scored
vector per utterance.
"""

from __future__ import annotations

import keras
from keras import layers

from msir_keras.layers import AttentionPooling, BiLSTM, MaskFrames, MaskFromLengths, PooledLengths


def _inputs(name, feature_shape):
    features = keras.Input(shape=(None, *feature_shape), name=f"{name}_features")
    lengths = keras.Input(shape=(), dtype="int32", name=f"{name}_lengths")
    return features, lengths


def _bilstm_attention(sequence, lengths, units, merge_mode, dtype=None):
    """A Bi-LSTM over the valid frames, then attention pooling (eq. 2)."""
    mask = MaskFromLengths(name="padding_mask", dtype=dtype)([lengths, sequence])
    x = BiLSTM(units, merge_mode=merge_mode, name="bilstm", dtype=dtype)(sequence, mask=mask)
    return AttentionPooling(name="attention", dtype=dtype)(x, padding_mask=mask)


def cr_branch(
    feature_shape,
    conv_filters,
    conv_kernel,
    pool_size,
    dense_units,
    lstm_units,
    leaky_relu_slope,
    batch_norm_momentum,
    weight_decay,
    synchronized_batch_norm=False,
    dtype=None,
    name="cr_branch",
):
    """The convolutional recurrent branch (paper eqs. 1-3; ACRNN).

    Conv2D (time x frequency) + batch norm + Leaky-ReLU blocks, one
    max-pooling of `pool_size` after the first, a time-distributed dense
    layer, a Bi-LSTM with concatenated directions and attention pooling.
    Padded frames are zeroed after every block, so the 'same' convolutions
    see the zeros they would see at the end of an unpadded utterance.
    `synchronized_batch_norm` computes batch statistics over all replicas of
    a distribution strategy (the engine sets it under one). The sizes are
    `msir_keras.presets.PAPER`'s, or another preset's; `dtype` is every
    layer's dtype policy (None: the global one).

    Returns:
        A keras.Model `[(B, T, W, K), (B,)] -> (B, 2 * lstm_units)`.
    """
    features, lengths = _inputs(name, feature_shape)
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    x, valid = features, lengths
    for index, filters in enumerate(conv_filters):
        x = layers.Conv2D(
            filters, conv_kernel, padding="same", kernel_regularizer=regularizer,
            name=f"conv{index + 1}", dtype=dtype,
        )(x)
        x = layers.BatchNormalization(momentum=batch_norm_momentum, synchronized=synchronized_batch_norm,
                                      name=f"bn{index + 1}", dtype=dtype)(x)
        x = layers.LeakyReLU(negative_slope=leaky_relu_slope, name=f"leaky_relu{index + 1}", dtype=dtype)(x)
        if index == 0:
            # Padding must never win the max: fill it with the lowest value first.
            x = MaskFrames("min", name="pool_padding", dtype=dtype)(x, valid)
            x = layers.MaxPooling2D(pool_size, strides=pool_size, padding="same", name="pool", dtype=dtype)(x)
            valid = PooledLengths(pool_size, name="pooled_lengths")(valid)
        x = MaskFrames(0.0, name=f"mask{index + 1}", dtype=dtype)(x, valid)
    frequency = -(-feature_shape[0] // pool_size)
    x = layers.Reshape((-1, frequency * conv_filters[-1]), name="flatten_frequency", dtype=dtype)(x)
    x = layers.Dense(dense_units, name="frame_dense", dtype=dtype)(x)
    x = _bilstm_attention(x, valid, lstm_units, merge_mode="concat", dtype=dtype)  # eq. 3: [forward; backward]
    return keras.Model([features, lengths], x, name=name)


def recurrent_branch(feature_dim, lstm_units, dtype=None, name="lld_branch"):
    """The LLD and wav2vec branches (paper eqs. 4-5): Bi-LSTM, directions summed, attention.

    Returns:
        A keras.Model `[(B, T, feature_dim), (B,)] -> (B, lstm_units)`.
    """
    features, lengths = _inputs(name, (feature_dim,))
    x = _bilstm_attention(features, lengths, lstm_units, merge_mode="sum", dtype=dtype)  # eqs. 4-5: F + B
    return keras.Model([features, lengths], x, name=name)


def lld_branch(feature_dim, lstm_units, dtype=None):
    """The low-level descriptor branch over openSMILE LLDs (eq. 4)."""
    return recurrent_branch(feature_dim, lstm_units, dtype, name="lld_branch")


def wav2vec_branch(feature_dim, lstm_units, dtype=None):
    """The wav2vec branch over frozen wav2vec 2.0 hidden states (eq. 5)."""
    return recurrent_branch(feature_dim, lstm_units, dtype, name="wav2vec_branch")


def functionals_branch(feature_dim, units, dropout, dtype=None, name="functionals_branch"):
    """A dense branch over utterance-level functionals (early fusion; not in the paper).

    Dropout, then a ReLU dense layer, over the z-scored functionals of the
    whole utterance (eGeMAPSv02: 88); its vector joins the recurrent
    branches' before the fully connected layers ("MSIR + F", feature-level
    fusion with the paper's baseline features).

    Returns:
        A keras.Model `(B, feature_dim) -> (B, units)`.
    """
    features = keras.Input(shape=(feature_dim,), name=f"{name}_features")
    x = layers.Dropout(dropout, name="dropout", dtype=dtype)(features)
    x = layers.Dense(units, activation="relu", name="dense", dtype=dtype)(x)
    return keras.Model(features, x, name=name)
