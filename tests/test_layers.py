import keras
import numpy as np
import pytest

from msir_keras.layers import AttentionPooling, BiLSTM, FrameLengths, MaskFrames, PooledLengths, Standardize, sequence_mask

RNG = np.random.default_rng(2)


def run_layer_test(layer, inputs, call_kwargs=None):
    """Config round trip, then the same output from the rebuilt layer with the same weights."""
    call_kwargs = call_kwargs or {}
    output = layer(inputs, **call_kwargs)
    again = type(layer).from_config(layer.get_config())
    again(inputs, **call_kwargs)
    again.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(again(inputs, **call_kwargs)), np.asarray(output), rtol=1e-6)
    return np.asarray(output)


def test_frame_lengths_from_right_padding():
    x = np.zeros((3, 6, 4, 2), "float32")
    x[0, :6] = 1.0
    x[1, :2] = 1.0
    x[1, 3, 0, 1] = -2.0  # a frame with one non-zero value still counts
    assert run_layer_test(FrameLengths(), x).tolist() == [6, 4, 1]  # all-zero: 1, never empty


def test_mask_frames_and_pooled_lengths():
    x = RNG.normal(size=(2, 5, 3)).astype("float32")
    lengths = np.array([5, 2], "int32")
    out = np.asarray(MaskFrames(0.0)(x, lengths))
    np.testing.assert_array_equal(out[1, 2:], 0)
    np.testing.assert_array_equal(out[1, :2], x[1, :2])
    lowest = np.asarray(MaskFrames("min")(x, lengths))
    assert (lowest[1, 2:] < -1e30).all()
    assert np.asarray(PooledLengths(2)(np.array([1, 2, 5, 6]))).tolist() == [1, 1, 3, 3]


def test_attention_pooling_matches_the_equation_and_ignores_padding():
    h = RNG.normal(size=(2, 7, 5)).astype("float32")
    mask = np.arange(7)[None, :] < np.array([[7], [4]])
    layer = AttentionPooling()
    out = run_layer_test(layer, h, {"padding_mask": mask})
    w = layer.get_weights()[0][:, 0]
    for row, n in enumerate([7, 4]):
        scores = np.tanh(h[row, :n]) @ w
        weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        np.testing.assert_allclose(out[row], weights @ h[row, :n], rtol=1e-5, atol=1e-6)
    changed = h.copy()
    changed[1, 4:] = 100.0
    np.testing.assert_allclose(np.asarray(layer(changed, padding_mask=mask))[1], out[1], rtol=1e-6)


def test_standardize_holds_its_statistics_as_weights():
    layer = Standardize((3,))
    x = RNG.normal(size=(2, 4, 3)).astype("float32")
    layer.build(x.shape)
    mean, std = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 0.5])
    layer.set_statistics(mean, std)
    np.testing.assert_allclose(run_layer_test(layer, x), (x - mean) / std, rtol=1e-6)
    assert not layer.trainable_weights


def test_layers_train_one_step():
    inputs = keras.Input((None, 5))
    lengths = FrameLengths()(inputs)
    from msir_keras.layers import MaskFromLengths

    mask = MaskFromLengths()([lengths, inputs])
    outputs = keras.layers.Dense(2, activation="softmax")(AttentionPooling()(inputs, padding_mask=mask))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    model.fit(RNG.normal(size=(8, 6, 5)).astype("float32"), RNG.integers(0, 2, 8), verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
def test_bilstm_matches_keras_bidirectional(merge_mode):
    x = RNG.normal(size=(3, 7, 4)).astype("float32")
    lengths = np.array([7, 4, 1])
    mask = np.asarray(sequence_mask(lengths, 7))
    x[~mask] = 0.0
    layer = BiLSTM(5, merge_mode=merge_mode)
    output = run_layer_test(layer, x, {"mask": mask})
    assert output.shape == (3, 7, 10 if merge_mode == "concat" else 5)
    reference = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True), merge_mode=merge_mode)
    reference(x, mask=mask)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(output, np.asarray(reference(x, mask=mask)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(output[~mask], 0.0)
    # The backward direction reads the valid frames only: padding does not change them.
    shorter = np.asarray(layer(x[1:2, :4], mask=mask[1:2, :4]))
    np.testing.assert_allclose(shorter[0], output[1, :4], rtol=1e-5, atol=1e-6)
