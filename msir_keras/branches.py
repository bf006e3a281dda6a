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


def _bilstm_attention(sequence, lengths, units, merge_mode):
    """A Bi-LSTM over the valid frames, then attention pooling (eq. 2)."""
    mask = MaskFromLengths(name="padding_mask")([lengths, sequence])
    x = BiLSTM(units, merge_mode=merge_mode, name="bilstm")(sequence, mask=mask)
    return AttentionPooling(name="attention")(x, padding_mask=mask)


def cr_branch(
    feature_shape=(40, 2),
    conv_filters=(128, 256, 256, 256, 256, 256),
    conv_kernel=(5, 3),
    pool_size=2,
    dense_units=768,
    lstm_units=128,
    leaky_relu_slope=0.01,
    batch_norm_momentum=0.99,
    weight_decay=1e-3,
    synchronized_batch_norm=False,
    name="cr_branch",
):
    """The convolutional recurrent branch (paper eqs. 1-3; ACRNN).

    Conv2D (time x frequency) + batch norm + Leaky-ReLU blocks, one
    max-pooling of `pool_size` after the first, a time-distributed dense
    layer, a Bi-LSTM with concatenated directions and attention pooling.
    Padded frames are zeroed after every block, so the 'same' convolutions
    see the zeros they would see at the end of an unpadded utterance.
    `synchronized_batch_norm` computes batch statistics over all replicas of
    a distribution strategy (the engine sets it under one).

    Returns:
        A keras.Model `[(B, T, W, K), (B,)] -> (B, 2 * lstm_units)`.
    """
    features, lengths = _inputs(name, feature_shape)
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    x, valid = features, lengths
    for index, filters in enumerate(conv_filters):
        x = layers.Conv2D(
            filters, conv_kernel, padding="same", kernel_regularizer=regularizer,
            name=f"conv{index + 1}",
        )(x)
        x = layers.BatchNormalization(momentum=batch_norm_momentum, synchronized=synchronized_batch_norm,
                                      name=f"bn{index + 1}")(x)
        x = layers.LeakyReLU(negative_slope=leaky_relu_slope, name=f"leaky_relu{index + 1}")(x)
        if index == 0:
            # Padding must never win the max: fill it with the lowest value first.
            x = MaskFrames("min", name="pool_padding")(x, valid)
            x = layers.MaxPooling2D(pool_size, strides=pool_size, padding="same", name="pool")(x)
            valid = PooledLengths(pool_size, name="pooled_lengths")(valid)
        x = MaskFrames(0.0, name=f"mask{index + 1}")(x, valid)
    frequency = -(-feature_shape[0] // pool_size)
    x = layers.Reshape((-1, frequency * conv_filters[-1]), name="flatten_frequency")(x)
    x = layers.Dense(dense_units, name="frame_dense")(x)
    x = _bilstm_attention(x, valid, lstm_units, merge_mode="concat")  # eq. 3: [forward; backward]
    return keras.Model([features, lengths], x, name=name)


def recurrent_branch(feature_dim, lstm_units=128, name="lld_branch"):
    """The LLD and wav2vec branches (paper eqs. 4-5): Bi-LSTM, directions summed, attention.

    Returns:
        A keras.Model `[(B, T, feature_dim), (B,)] -> (B, lstm_units)`.
    """
    features, lengths = _inputs(name, (feature_dim,))
    x = _bilstm_attention(features, lengths, lstm_units, merge_mode="sum")  # eqs. 4-5: F + B
    return keras.Model([features, lengths], x, name=name)


def lld_branch(feature_dim=195, lstm_units=128):
    """The low-level descriptor branch over openSMILE LLDs (eq. 4)."""
    return recurrent_branch(feature_dim, lstm_units, name="lld_branch")


def wav2vec_branch(feature_dim=768, lstm_units=128):
    """The wav2vec branch over frozen wav2vec 2.0 hidden states (eq. 5)."""
    return recurrent_branch(feature_dim, lstm_units, name="wav2vec_branch")


def functionals_branch(feature_dim=88, units=64, dropout=0.3, name="functionals_branch"):
    """A dense branch over utterance-level functionals (early fusion; not in the paper).

    Dropout, then a ReLU dense layer, over the z-scored functionals of the
    whole utterance (eGeMAPSv02: 88); its vector joins the recurrent
    branches' before the fully connected layers ("MSIR + F", feature-level
    fusion with the paper's baseline features).

    Returns:
        A keras.Model `(B, feature_dim) -> (B, units)`.
    """
    features = keras.Input(shape=(feature_dim,), name=f"{name}_features")
    x = layers.Dropout(dropout, name="dropout")(features)
    x = layers.Dense(units, activation="relu", name="dense")(x)
    return keras.Model(features, x, name=name)
