"""A saved model's folder: what it carries besides its weights, finding them in a run, loading one.

A model folder is either a run's fold folder (`model.keras`, and its
SavedModel in `serving/`) or an export (`saved_model.pb` + `msir.json`).
Both carry the feature settings the model was trained with and its class
names (`model_metadata`), so whoever loads one extracts exactly those
features (`msir_keras.detector.Detector`) and refuses features made with
other settings (`LoadedModel.check_inputs`).
"""

from __future__ import annotations

import json
import os

import numpy as np

from msir_keras.features import extractor_from_config
from msir_keras.features.base import ConfigError

METADATA = "msir.json"  # beside a SavedModel: its feature settings, class names and input shapes
SERVING = "serving"  # a fold folder's SavedModel, written beside model.keras for fast loading


def model_metadata(model):
    """What a served model needs besides its weights: feature settings and class names."""
    return {
        "feature_config": model.feature_config,
        "class_names": model.class_names,
        "input_shapes": {name: list(shape) for name, shape in model.feature_shapes().items()},
    }


def to_numpy(tensor):
    """A model's output as a numpy array, from any Keras backend (a PyTorch tensor may carry gradients)."""
    from keras import ops

    return np.asarray(ops.convert_to_numpy(tensor))


def tensorflow_backend():
    """Whether Keras runs on TensorFlow: SavedModels (writing and loading them) need it."""
    import keras

    return keras.backend.backend() == "tensorflow"


def model_folders(path):
    """{(target, fold): folder} of every model under a run or export folder.

    A single model folder is returned as {("model", "model"): path}.
    """
    if _is_model_folder(path):
        return {("model", "model"): path}
    found = {}
    for target in sorted(os.listdir(path)) if os.path.isdir(path) else []:
        base = os.path.join(path, target)
        for fold in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            if _is_model_folder(os.path.join(base, fold)):
                found[(target, fold)] = os.path.join(base, fold)
    if not found:
        raise FileNotFoundError(
            f"{path}: no model here; pass a run folder written by `msir run`/`msir train`, "
            "an export written by `msir export`, or one of their fold folders"
        )
    return found


def _is_model_folder(folder):
    return os.path.exists(os.path.join(folder, "model.keras")) or os.path.exists(
        os.path.join(folder, "saved_model.pb")
    )


class LoadedModel:
    """One model from a folder: `.keras` or SavedModel, with its metadata.

    A run's fold folder holds both `model.keras` and `serving/` (its
    SavedModel): prediction loads the SavedModel, whose graph is already
    traced (seconds faster in a new process); `keras=True` loads the Keras
    model (for export, or to train on). `call` is the model as a function of
    padded feature tensors.
    """

    def __init__(self, folder, keras=False):
        self.folder = folder
        keras_file = os.path.join(folder, "model.keras")
        serving = os.path.join(folder, SERVING)
        self.traced = False
        if not keras and os.path.exists(os.path.join(serving, "saved_model.pb")) and \
                (tensorflow_backend() or not os.path.exists(keras_file)):
            folder = serving  # under JAX or PyTorch, a run's model.keras is read instead
        if folder != serving and os.path.exists(keras_file):
            from msir_keras.model import load_model

            # Prediction needs no optimizer or loss: compile=False loads faster.
            self.model = load_model(keras_file, compile=False)
            self.metadata = model_metadata(self.model)
            self.call = lambda inputs: self.model(inputs, training=False)
        else:
            if not tensorflow_backend():
                raise ConfigError(f"{folder}: a SavedModel export loads under KERAS_BACKEND=tensorflow only; "
                                  "give the run folder (its model.keras files load on any backend)")
            import tensorflow as tf

            metadata = os.path.join(folder, METADATA)
            if not os.path.exists(metadata):
                raise FileNotFoundError(
                    f"{metadata}: missing; a SavedModel needs the msir.json that `msir export` writes "
                    "beside it (export the run again)"
                )
            with open(metadata) as handle:
                self.metadata = json.load(handle)
            self.model = tf.saved_model.load(folder)
            self.call = lambda inputs: self.model.serve(inputs)
            self.traced = True  # its serving function is a graph already: no tracing needed

    @property
    def class_names(self):
        return self.metadata["class_names"]

    @property
    def feature_config(self):
        return self.metadata["feature_config"]

    @property
    def input_shapes(self):
        return {name: tuple(shape) for name, shape in self.metadata["input_shapes"].items()}

    def select(self, inputs):
        """The entries of `inputs` (a dict by input name) this model takes; others are left out."""
        return {name: value for name, value in inputs.items() if name in self.metadata["input_shapes"]}

    def check_inputs(self, inputs):
        """Raises ConfigError when `inputs` do not fit the features the model was trained on."""
        expected = self.metadata["input_shapes"]
        if set(inputs) != set(expected):
            raise ConfigError(
                f"{self.folder}: the model takes inputs {sorted(expected)}, got {sorted(inputs)}"
            )
        for name, shape in expected.items():
            got = list(np.shape(inputs[name])[2:])
            if got != list(shape):
                settings = (self.feature_config or {}).get(name, {})
                raise ConfigError(
                    f"{self.folder}: the model was trained on {name} frames shaped {shape} "
                    f"({settings}), got {got}: extract the features with the model's settings "
                    "(Detector does this from audio)"
                )

    def __call__(self, inputs):
        self.check_inputs(inputs)
        return to_numpy(self.call({k: np.asarray(v, np.float32) for k, v in inputs.items()}))


def model_features(models, path, wav2vec2=None):
    """The features that loaded models take, and the extractors that make them from audio.

    Args:
        models: dict of LoadedModel. The models to feed together (a run's folds).
        path: str. Where they came from, for messages.
        wav2vec2: str or None. Another location of the wav2vec 2.0 checkpoint
            the models were trained with (the same weights are checked).

    Returns:
        (feature_config, input_shapes, extractors), each a dict by input name.

    Raises:
        ConfigError: a model does not say how its features were made, two
            models took one input made differently, or the checkpoint found
            is not the one trained with.
    """
    # Every input any model takes (fused folds may each have chosen other functionals);
    # an input two models share must have been made alike.
    feature_config, input_shapes = {}, {}
    for model in models.values():
        for name, shape in model.input_shapes.items():  # the inputs it takes (its config may hold more)
            entry = (model.feature_config or {}).get(name)
            if entry is None:
                raise ConfigError(f"{model.folder}: the model does not say how its {name} features were made")
            if feature_config.setdefault(name, entry) != entry or \
                    input_shapes.setdefault(name, shape) != shape:
                raise ConfigError(f"{path}: its models were trained on different {name} features")
    extractors = {}
    for name, entry in feature_config.items():
        config = dict(entry["config"])
        if wav2vec2 is not None and entry["extractor"] == "wav2vec2":
            config["source"] = wav2vec2
        extractor = extractor_from_config(entry["extractor"], config)
        if "identity" in entry and extractor.identity() != entry["identity"]:
            raise ConfigError(
                f"{path}: the model's {name} features were made by {entry['identity']}, "
                f"but {config} makes {extractor.identity()}; give the checkpoint it was "
                "trained with (--wav2vec2 FOLDER)"
            )
        extractors[name] = extractor
    return feature_config, input_shapes, extractors
