import keras
import numpy as np
from keras.ops import convert_to_numpy as to_numpy  # any backend's tensors (torch's carry gradients)
import pytest

from keras_objects import registered_classes, run_layer_test, run_loss_test, run_metric_test

from msir_keras.augment import FeatureMasks
from msir_keras.layers import (
    AttentionPooling,
    BiLSTM,
    FrameLengths,
    FunctionalsClassifier,
    MaskFrames,
    MaskFromLengths,
    PooledLengths,
    Standardize,
    sequence_mask,
)
from msir_keras.losses import FocalLoss
from msir_keras.metrics import UnweightedAverageRecall
from msir_keras.backbone import MSIRBackbone
from msir_keras.model import LateFusion, MSIR, MSIREnsemble
from msir_keras.preprocessor import MSIRPreprocessor
from msir_keras.weighted_sum import WeightedLayerSum
from msir_keras.presets import PRESETS

RNG = np.random.default_rng(2)


def rebuilt_output(layer, inputs, call_kwargs=None):
    """The layer's output, checked equal to a rebuilt layer's with the same weights."""
    call_kwargs = call_kwargs or {}
    output = layer(inputs, **call_kwargs)
    again = type(layer).from_config(layer.get_config())
    again(inputs, **call_kwargs)
    again.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(again(inputs, **call_kwargs)), to_numpy(output), rtol=1e-6)
    return to_numpy(output)


def test_frame_lengths_from_right_padding():
    x = np.zeros((3, 6, 4, 2), "float32")
    x[0, :6] = 1.0
    x[1, :2] = 1.0
    x[1, 3, 0, 1] = -2.0  # a frame with one non-zero value still counts
    assert rebuilt_output(FrameLengths(), x).tolist() == [6, 4, 1]  # all-zero: 1, never empty


def test_mask_frames_and_pooled_lengths():
    x = RNG.normal(size=(2, 5, 3)).astype("float32")
    lengths = np.array([5, 2], "int32")
    out = to_numpy(MaskFrames(0.0)(x, lengths))
    np.testing.assert_array_equal(out[1, 2:], 0)
    np.testing.assert_array_equal(out[1, :2], x[1, :2])
    lowest = to_numpy(MaskFrames("min")(x, lengths))
    assert (lowest[1, 2:] < -1e30).all()
    assert to_numpy(PooledLengths(2)(np.array([1, 2, 5, 6]))).tolist() == [1, 1, 3, 3]


def test_attention_pooling_matches_the_equation_and_ignores_padding():
    h = RNG.normal(size=(2, 7, 5)).astype("float32")
    mask = np.arange(7)[None, :] < np.array([[7], [4]])
    layer = AttentionPooling()
    out = rebuilt_output(layer, h, {"padding_mask": mask})
    w = layer.get_weights()[0][:, 0]
    for row, n in enumerate([7, 4]):
        scores = np.tanh(h[row, :n]) @ w
        weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        np.testing.assert_allclose(out[row], weights @ h[row, :n], rtol=1e-5, atol=1e-6)
    changed = h.copy()
    changed[1, 4:] = 100.0
    np.testing.assert_allclose(to_numpy(layer(changed, padding_mask=mask))[1], out[1], rtol=1e-6)


def test_standardize_holds_its_statistics_as_weights():
    layer = Standardize((3,))
    x = RNG.normal(size=(2, 4, 3)).astype("float32")
    layer.build(x.shape)
    mean, std = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 0.5])
    layer.set_statistics(mean, std)
    np.testing.assert_allclose(rebuilt_output(layer, x), (x - mean) / std, rtol=1e-6)
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
    mask = to_numpy(sequence_mask(lengths, 7))
    x[~mask] = 0.0
    layer = BiLSTM(5, merge_mode=merge_mode)
    output = rebuilt_output(layer, x, {"mask": mask})
    assert output.shape == (3, 7, 10 if merge_mode == "concat" else 5)
    reference = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True), merge_mode=merge_mode)
    reference(x, mask=mask)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(output, to_numpy(reference(x, mask=mask)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(output[~mask], 0.0)
    # The backward direction reads the valid frames only: padding does not change them.
    shorter = to_numpy(layer(x[1:2, :4], mask=mask[1:2, :4]))
    np.testing.assert_allclose(shorter[0], output[1, :4], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- every registered object

def _padded(batch=3, frames=6, shape=(5,), lengths=(6, 4, 1)):
    x = RNG.normal(size=(batch, frames, *shape)).astype("float32")
    for row, n in enumerate(lengths):
        x[row, n:] = 0.0
    return x, np.array(lengths, "int32")


X, LENGTHS = _padded()
MASK = to_numpy(sequence_mask(LENGTHS, 6))

LAYER_CASES = {
    "FrameLengths": dict(layer_cls=FrameLengths, init_kwargs={}, args=(X,), expected_output_shape=(3,),
                         train=False),
    "MaskFromLengths": dict(layer_cls=MaskFromLengths, init_kwargs={}, args=([LENGTHS, X],),
                            expected_output_shape=(3, 6), train=False),
    "MaskFrames": dict(layer_cls=MaskFrames, init_kwargs={"fill_value": 0.0}, args=(X, LENGTHS),
                       expected_output_shape=(3, 6, 5), train=False),
    "PooledLengths": dict(layer_cls=PooledLengths, init_kwargs={"stride": 2}, args=(LENGTHS,),
                          expected_output_shape=(3,), train=False),
    "Standardize": dict(layer_cls=Standardize, init_kwargs={"feature_shape": (5,)}, args=(X,),
                        expected_output_shape=(3, 6, 5), expected_non_trainable_weights=2, train=False,
                        prepare=lambda layer: layer.set_statistics(np.full(5, 0.5), np.full(5, 2.0))),
    "AttentionPooling": dict(layer_cls=AttentionPooling, init_kwargs={}, args=(X,),
                             kwargs={"padding_mask": MASK}, expected_output_shape=(3, 5),
                             expected_trainable_weights=1),
    "BiLSTM": dict(layer_cls=BiLSTM, init_kwargs={"units": 4, "merge_mode": "sum"}, args=(X,),
                   kwargs={"mask": MASK}, expected_output_shape=(3, 6, 4), expected_trainable_weights=6),
    "FeatureMasks": dict(layer_cls=FeatureMasks, init_kwargs={"time_masks": 1, "feature_masks": 1, "seed": 3},
                         args=(X, LENGTHS), expected_output_shape=(3, 6, 5), train=False),
}


HIDDEN_STATES = RNG.normal(size=(3, 6, 3, 5)).astype("float32")  # (B, T, L, H): three hidden states
LAYER_CASES["WeightedLayerSum"] = dict(layer_cls=WeightedLayerSum, init_kwargs={"num_layers": 3},
                                       args=(HIDDEN_STATES,), expected_output_shape=(3, 6, 5),
                                       expected_trainable_weights=1)


def _classifier_weights(layer):
    """Fitted-looking FunctionalsClassifier weights: means, positive scales, coefficients, biases."""
    rng = np.random.default_rng(5)
    mean, scale, kernel, bias = (rng.normal(size=w.shape).astype("float32") for w in layer.weights)
    layer.set_weights([mean, np.abs(scale) + 0.5, kernel, bias])


EGEMAPS = RNG.normal(size=(3, 7)).astype("float32")
LAYER_CASES["FunctionalsClassifier"] = dict(
    layer_cls=FunctionalsClassifier, init_kwargs={"inputs_names": ["a", "b"], "input_sizes": [3, 4], "num_classes": 4},
    args=([EGEMAPS[:, :3], EGEMAPS[:, 3:]],), expected_output_shape=(3, 4), expected_non_trainable_weights=4,
    train=False, prepare=_classifier_weights)

# Models: tiny presets on small features, each input as a batch of three utterances (lengths 6, 4, 1).
FEATURES = {"logmel": _padded(shape=(8, 2))[0], "lld": X, "w2v": _padded(shape=(6,))[0], "egemaps": EGEMAPS}


def _tiny(name="msir", branches=("lld",), **options):
    """MSIR.from_preset("tiny") on FEATURES' shapes, its z-scores set (non-trivial statistics)."""
    model = MSIR.from_preset("tiny", branches=branches, logmel_shape=(8, 2), lld_dim=5, w2v_dim=6, functionals_dim=7,
                             class_names=list("ahns"), name=name, **options)
    frame = {name: x.shape[2:] if x.ndim > 2 else x.shape[1:] for name, x in FEATURES.items()}
    model.set_normalization({name: (np.full(frame[name], 0.5, "float32"), np.full(frame[name], 2.0, "float32"))
                             for name in model.feature_inputs})
    return model


# The tiny preset's backbone on FEATURES' shapes: cr (8 = 2 x 4 units) and lld (4) branches.
BACKBONE = {**{k: v for k, v in PRESETS["tiny"].items() if k != "dense_units"}, "logmel_shape": (8, 2), "lld_dim": 5}
BACKBONE_WEIGHTS = 24


def _fusion():
    classifier = FunctionalsClassifier(["egemaps"], [7], 4)
    _classifier_weights(classifier)
    return LateFusion(_tiny(), classifier, 0.3, functionals_config={})


MODEL_CASES = {  # callables: a model is built when its case runs
    "MSIR": lambda: dict(layer=_tiny(branches=("cr", "lld", "w2v", "func"), time_masks=1, feature_masks=1),
                         args=(FEATURES,), expected_output_shape=(3, 4), expected_trainable_weights=37,
                         expected_non_trainable_weights=12,
                         untrained=("conv1/bias", "conv2/bias")),  # batch norm takes out a bias before it
    "MSIREnsemble": lambda: dict(layer=MSIREnsemble([_tiny("m1"), _tiny("m2")]), args=({"lld": X},),
                                 expected_output_shape=(3, 4), expected_trainable_weights=22,
                                 expected_non_trainable_weights=4),
    "MSIRBackbone": lambda: dict(layer=MSIRBackbone(**{**BACKBONE, "branches": ("cr", "lld")}),
                                 args=({"logmel": FEATURES["logmel"], "lld": X},), expected_output_shape=(3, 12),
                                 expected_trainable_weights=BACKBONE_WEIGHTS, expected_non_trainable_weights=4,
                                 untrained=("conv1/bias", "conv2/bias")),
    "LateFusion": lambda: dict(layer=_fusion(), args=({"lld": X, "egemaps": EGEMAPS},), expected_output_shape=(3, 4),
                               expected_trainable_weights=11, expected_non_trainable_weights=6),
}


def _probabilities(n=8, classes=4, seed=4):
    logits = np.random.default_rng(seed).normal(size=(n, classes)) * 2
    return (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")


def _focal_loss_case(tmp_path):
    labels, probabilities = np.array([0, 1, 2, 3, 0, 1, 2, 3]), _probabilities()
    p = probabilities[np.arange(8), labels]
    reference = float(np.mean(-0.25 * (1 - p) ** 2 * np.log(p)))  # paper eq. 7
    run_loss_test(FocalLoss(zeta=0.25, theta=2.0), labels, probabilities, reference, tmp_path)


def _unweighted_average_recall_case(tmp_path):
    from sklearn.metrics import balanced_accuracy_score

    labels, probabilities = np.array([0, 1, 2, 3, 0, 1, 2, 2]), _probabilities()
    expected = balanced_accuracy_score(labels, probabilities.argmax(-1))
    run_metric_test(UnweightedAverageRecall(4), labels, probabilities, expected, tmp_path)


def _preprocessor_case(tmp_path):
    """z-scores with the set statistics, padded frames zero again, vectors z-scored whole; config round trip."""
    layer = MSIRPreprocessor({"lld": (5,), "egemaps": (7,)}, feature_config={"lld": {"extractor": "lld"}})
    assert MSIRPreprocessor.from_config(layer.get_config()).get_config() == layer.get_config()
    layer.build()
    layer.set_normalization({"lld": (np.full(5, 0.5), np.full(5, 2.0)), "egemaps": (np.full(7, -1.0), np.full(7, 4.0))})
    output = {name: to_numpy(x) for name, x in layer({"lld": X, "egemaps": EGEMAPS}).items()}
    valid = np.arange(6)[None, :, None] < LENGTHS[:, None, None]
    np.testing.assert_allclose(output["lld"], np.where(valid, (X - 0.5) / 2.0, 0.0), rtol=1e-6)
    np.testing.assert_allclose(output["egemaps"], (EGEMAPS + 1.0) / 4.0, rtol=1e-6)
    assert len(layer.non_trainable_weights) == 4 and not layer.trainable_weights
    symbolic = layer({"lld": keras.Input((None, 5)), "egemaps": keras.Input((7,))})
    assert tuple(symbolic["lld"].shape) == (None, None, 5) and symbolic["egemaps"].dtype == "float32"


OTHER_CASES = {"FocalLoss": _focal_loss_case, "UnweightedAverageRecall": _unweighted_average_recall_case,
               "MSIRPreprocessor": _preprocessor_case}
CASES = sorted({*LAYER_CASES, *MODEL_CASES, *OTHER_CASES})


@pytest.mark.parametrize("name", CASES)
def test_every_registered_object_passes_its_test(name, tmp_path):
    # Seeded: a tiny model's ReLUs can all be off for three utterances (no gradient) with some weights.
    keras.utils.set_random_seed(0)
    registered = keras.saving.get_registered_object(f"msir_keras>{name}")
    if name in OTHER_CASES:
        return OTHER_CASES[name](tmp_path)
    case = LAYER_CASES[name] if name in LAYER_CASES else MODEL_CASES[name]()
    assert case.get("layer_cls", type(case.get("layer"))) is registered, f"the case {name} tests another class"
    output = run_layer_test(**case, tmp_path=tmp_path)
    if name == "Standardize":
        np.testing.assert_allclose(output, (X - 0.5) / 2.0, rtol=1e-6)
    if name == "WeightedLayerSum":  # equal weights before training: the mean of the hidden states
        fresh = to_numpy(WeightedLayerSum(3)(HIDDEN_STATES))
        np.testing.assert_allclose(fresh, HIDDEN_STATES.mean(axis=2), rtol=1e-5, atol=1e-6)
    if name == "FeatureMasks":  # outside training it changes nothing
        np.testing.assert_array_equal(output, X)
    if name in MODEL_CASES and name != "MSIRBackbone":  # a task model's softmax; the backbone's fused vector
        np.testing.assert_allclose(output.sum(-1), 1.0, rtol=1e-5)


def test_no_registered_class_escapes_its_test():
    """Every class registered under msir_keras, in any of its modules, has a case above: a new one must add it."""
    registered = registered_classes()
    missing = sorted(set(registered) - set(CASES))
    assert not missing, f"registered under msir_keras without a case in tests/test_layers.py: {missing}"
    assert sorted(set(CASES) - set(registered)) == [], "a case for a class no longer registered"


def test_padding_fill_is_finite_in_float16_whatever_names_the_dtype():
    """-3.4e38 is -inf in float16: a masked frame's score would make the attention weights NaN."""
    from msir_keras.layers import _lowest

    names = {16: ["float16", np.float16], 32: ["float32", np.float32]}
    if keras.backend.backend() == "tensorflow":  # TensorFlow's own dtypes too
        import tensorflow as tf

        names[16].append(tf.float16)
        names[32].append(tf.float32)
    assert {_lowest(name) for name in names[16]} == {-65504.0}
    assert {_lowest(name) for name in names[32]} == {-3.4e38}
