"""One test routine per kind of registered Keras object, as keras-hub's `run_layer_test`.

Every layer, model, loss and metric that msir_keras registers goes through the
routine of its kind (tests/test_layers.py holds the cases, and fails for a
registered class without one): its config round trip, eager and symbolic
calls, its weight counts, one `fit` step, and a save and load in a `.keras`
file in which it must give the same values. A model is a layer here: its
case passes the built model (`MSIR.from_preset("tiny", ...)`) as `layer`.
"""

import importlib
import pkgutil

import keras
import numpy as np
from keras.ops import convert_to_numpy as to_numpy  # any backend's tensors (torch's carry gradients)


def _symbolic(value):
    """A KerasTensor (batch left open) for an array; other values as they are."""
    if isinstance(value, np.ndarray):
        return keras.Input(batch_shape=(None, *value.shape[1:]), dtype=str(value.dtype))
    return value


def _leaves(structure, kind):
    """The leaves of one kind (numpy arrays or KerasTensors), in order: a model's inputs."""
    return [x for x in keras.tree.flatten(structure) if isinstance(x, kind)]


def _same_shape(symbolic, expected):
    """A symbolic shape matches an eager one where it is known (None: any size)."""
    return len(symbolic) == len(expected) and all(s is None or s == e for s, e in zip(symbolic, expected))


def registered_classes(package="msir_keras"):
    """{name: class} of everything registered under `package`, after importing each of its modules."""
    root = importlib.import_module(package)
    for module in pkgutil.walk_packages(root.__path__, f"{package}."):
        if not module.name.endswith(".__main__"):  # `python -m` entry points run when imported
            importlib.import_module(module.name)
    prefix = f"{package}>"
    return {key[len(prefix):]: value for key, value in keras.saving.get_custom_objects().items()
            if key.startswith(prefix)}


def run_layer_test(layer_cls=None, init_kwargs=None, args=(), kwargs=None, expected_output_shape=None,
                   expected_trainable_weights=0, expected_non_trainable_weights=0, prepare=None,
                   train=True, tmp_path=None, layer=None, untrained=()):
    """Checks a layer (or a model) the way a user's model uses it; returns its eager output as numpy.

    Args:
        layer_cls: the registered layer class. init_kwargs: its arguments.
        layer: a built instance instead of `layer_cls` and `init_kwargs`
            (a model from a preset, an ensemble of two).
        args: tuple of positional call arguments (numpy arrays, or lists or dicts of them).
        kwargs: dict of keyword call arguments (arrays become model inputs too).
        expected_output_shape: tuple, the eager output's shape.
        expected_trainable_weights, expected_non_trainable_weights: int, weight variables.
        prepare: callable(layer) after it is built (e.g. set statistics), or None.
        train: bool. One `fit` step on a model of the layer must change every
            trainable weight (layers with integer or boolean outputs: False).
        untrained: weight paths (their endings) that get no gradient by design,
            e.g. a convolution's bias before batch normalization.
        tmp_path: a folder for the `.keras` round trip.
    """
    kwargs = kwargs or {}
    if layer is None:
        layer = layer_cls(**init_kwargs)
    layer_cls = type(layer)

    # Config round trip: the rebuilt layer describes itself the same way.
    config = layer.get_config()
    assert layer_cls.from_config(config).get_config() == config

    # Eager call, shapes and weight counts.
    output = layer(*args, **kwargs)
    if prepare is not None:
        prepare(layer)
        output = layer(*args, **kwargs)
    output = to_numpy(output)
    if expected_output_shape is not None:
        assert output.shape == tuple(expected_output_shape), (output.shape, expected_output_shape)
    assert len(layer.trainable_weights) == expected_trainable_weights, layer.trainable_weights
    assert len(layer.non_trainable_weights) == expected_non_trainable_weights, layer.non_trainable_weights

    # The same weights in a layer rebuilt from its config give the same output.
    again = layer_cls.from_config(config)
    again(*args, **kwargs)
    again.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_numpy(again(*args, **kwargs)), output, rtol=1e-6, atol=1e-6)

    # Symbolic call inside a functional model, batch size open.
    symbolic_args = keras.tree.map_structure(_symbolic, args)
    symbolic_kwargs = keras.tree.map_structure(_symbolic, kwargs)
    symbolic_output = layer(*symbolic_args, **symbolic_kwargs)
    assert _same_shape(tuple(symbolic_output.shape), output.shape), (symbolic_output.shape, output.shape)
    inputs = _leaves((symbolic_args, symbolic_kwargs), keras.KerasTensor)
    data = _leaves((args, kwargs), np.ndarray)
    model = keras.Model(inputs, symbolic_output)
    np.testing.assert_allclose(to_numpy(model(data)), output, rtol=1e-6, atol=1e-6)

    # One training step moves every trainable weight.
    if train:
        # A whole model steps eagerly under TensorFlow, where tracing its training graph costs 10 s (the
        # engine's tests train in graph mode); JAX's compiled step is faster than its op-by-op one.
        eager = isinstance(layer, keras.Model) and keras.backend.backend() == "tensorflow"
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", run_eagerly=eager)
        before = [np.array(w) for w in layer.trainable_weights]
        target = np.random.default_rng(0).normal(size=output.shape).astype("float32")
        model.fit(data, target, batch_size=len(output), epochs=1, verbose=0)
        exempt = [w.path for w in layer.trainable_weights if w.path.endswith(tuple(untrained))]
        assert len(exempt) == len(untrained), (untrained, exempt)
        for old, new in zip(before, layer.trainable_weights):
            # Exactly equal: no gradient reached it (a small step is still a step).
            assert new.path in exempt or not np.array_equal(old, to_numpy(new)), f"{new.path} did not train"
        output = to_numpy(model(data))

    # Saved and loaded in a .keras file: the same class, the same values.
    if tmp_path is not None:
        path = str(tmp_path / f"{layer_cls.__name__}.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, compile=False)
        assert any(type(inner) is layer_cls for inner in loaded.layers)
        np.testing.assert_allclose(to_numpy(loaded(data)), output, rtol=1e-6, atol=1e-6)
    return output


def _two_class_model(width=3, classes=2):
    inputs = keras.Input((width,))
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(inputs))


def run_loss_test(loss, y_true, y_pred, expected, tmp_path=None):
    """A loss: its value against a reference, config round trip, one `fit` step, a saved compiled model.

    Args:
        loss: the registered loss instance.
        y_true: (B,) sparse labels. y_pred: (B, C) probabilities.
        expected: float, the reference value of `loss(y_true, y_pred)`.
    """
    np.testing.assert_allclose(float(loss(y_true, y_pred)), expected, rtol=1e-5)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is type(loss) and again.get_config() == loss.get_config()
    np.testing.assert_allclose(float(again(y_true, y_pred)), expected, rtol=1e-5)
    return _fit_and_reload(y_pred.shape[-1], loss, None, y_true, tmp_path)


def run_metric_test(metric, y_true, y_pred, expected, tmp_path=None):
    """A metric: streamed over two batches against a reference, reset, config round trip, `fit`, saved model."""
    half = len(y_true) // 2
    metric.update_state(y_true[:half], y_pred[:half])
    metric.update_state(y_true[half:], y_pred[half:])
    np.testing.assert_allclose(float(metric.result()), expected, atol=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0
    again = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert type(again) is type(metric) and again.get_config() == metric.get_config()
    return _fit_and_reload(y_pred.shape[-1], "sparse_categorical_crossentropy", metric, y_true, tmp_path)


def _fit_and_reload(classes, loss, metric, labels, tmp_path):
    """One fit step with the object compiled in, then the model saved and loaded with it (compiled)."""
    model = _two_class_model(classes=classes)
    model.compile(optimizer="adam", loss=loss, metrics=[metric] if metric is not None else None)
    x = np.random.default_rng(1).normal(size=(len(labels), 3)).astype("float32")
    history = model.fit(x, labels, batch_size=len(labels), epochs=1, verbose=0).history
    assert all(np.isfinite(v[0]) for v in history.values()), history
    if tmp_path is None:
        return history
    path = str(tmp_path / "compiled.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    again = loaded.evaluate(x, labels, verbose=0, return_dict=True)
    expected = model.evaluate(x, labels, verbose=0, return_dict=True)
    for name, value in expected.items():
        np.testing.assert_allclose(again[name], value, rtol=1e-5)
    return history
