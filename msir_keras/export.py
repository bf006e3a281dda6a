"""SavedModel export, and `Detector`: emotion probabilities from audio files.

A model folder is either a run's fold folder (`model.keras`) or an export
(`saved_model.pb` + `msir.json`). Both carry the feature settings the model
was trained with, so a Detector extracts exactly those, and refuses features
made with other settings.
"""

from __future__ import annotations

import json
import os

import numpy as np

from msir_keras.audio import read_audio
from msir_keras.features import extractor_from_config
from msir_keras.features.base import ConfigError

METADATA = "msir.json"


def model_metadata(model):
    """What a served model needs besides its weights: feature settings and class names."""
    return {
        "feature_config": model.feature_config,
        "class_names": model.class_names,
        "input_shapes": {name: list(shape) for name, shape in model.feature_shapes().items()},
    }


def export_model(model, folder):
    """Writes a TensorFlow SavedModel of `model` (endpoint `serve`) and its msir.json.

    The serving signature takes the padded feature tensors by input name
    (`logmel` (B, T, 40, K), `lld` (B, T, D), `w2v` (B, T, 768), float32,
    right-padded with zeros) and returns class probabilities (B, C).
    """
    model.export(folder, format="tf_saved_model", verbose=False)
    with open(os.path.join(folder, METADATA), "w") as handle:
        json.dump(model_metadata(model), handle, indent=2)
    return folder


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
    """One model from a folder: `.keras` or SavedModel, with its metadata."""

    def __init__(self, folder):
        self.folder = folder
        keras_file = os.path.join(folder, "model.keras")
        if os.path.exists(keras_file):
            import keras

            import msir_keras.model  # noqa: F401  (registers the classes)

            self.model = keras.saving.load_model(keras_file)
            self.metadata = model_metadata(self.model)
            # A compiled predict: eager calls run the LSTMs step by step, 100x slower.
            self._call = lambda inputs: np.asarray(self.model.predict_on_batch(inputs))
        else:
            import tensorflow as tf

            with open(os.path.join(folder, METADATA)) as handle:
                self.metadata = json.load(handle)
            self.model = tf.saved_model.load(folder)
            self._call = lambda inputs: self.model.serve(inputs).numpy()

    @property
    def class_names(self):
        return self.metadata["class_names"]

    @property
    def feature_config(self):
        return self.metadata["feature_config"]

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
        return self._call({k: np.asarray(v, np.float32) for k, v in inputs.items()})


class Detector:
    """Per-emotion probabilities and decisions for audio files, from a run or an export.

    A classification run gives the 4 class probabilities (decision: the most
    probable class). A detection run gives each emotion's detector's positive
    probability (decision: above `threshold`). With several folds the fold
    models' probabilities are averaged, unless `fold` picks one.

    Args:
        path: str. A run folder, an export folder, or one fold's folder.
        fold: str or None. The fold to use (its folder name); None averages all.
        threshold: float, defaults to 0.5. Detection decisions.
        wav2vec2: str or None. Another location of the wav2vec 2.0 checkpoint
            the model was trained with (the same weights are checked).

    Example:
    >>> detector = Detector("runs/emodb")  # doctest: +SKIP
    >>> detector.predict(["speech.wav"])  # doctest: +SKIP
    """

    def __init__(self, path, fold=None, threshold=0.5, wav2vec2=None):
        folders = model_folders(path)
        if fold is not None:
            folders = {key: f for key, f in folders.items() if key[1] == fold}
            if not folders:
                raise ValueError(f"{path}: no fold named {fold!r}")
        self.models = {key: LoadedModel(folder) for key, folder in folders.items()}
        self.threshold = threshold
        first = next(iter(self.models.values()))
        self.feature_config = first.feature_config
        for model in self.models.values():
            if model.feature_config != self.feature_config:
                raise ConfigError(f"{path}: its models were trained on different features")
        self.extractors = {}
        for name, entry in self.feature_config.items():
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
            self.extractors[name] = extractor
        self.targets = sorted({key[0] for key in self.models})

    def features(self, signals):
        """{input name: padded batch} of float32 mono 16 kHz signals."""
        from msir_keras.data import pad_batch

        return {
            name: pad_batch(extractor.extract_many(signals))
            for name, extractor in self.extractors.items()
        }

    def probabilities(self, inputs):
        """{target: (B, C) probabilities averaged over folds} of padded features."""
        out = {}
        for target in self.targets:
            runs = [m(inputs) for (t, _), m in self.models.items() if t == target]
            out[target] = np.mean(runs, axis=0)
        return out

    def predict(self, paths):
        """A DataFrame: one row per file, per emotion its probability and decision."""
        import pandas as pd

        signals = [read_audio(path) for path in paths]
        probabilities = self.probabilities(self.features(signals))
        rows = [{"path": str(path)} for path in paths]
        for target, values in probabilities.items():
            names = next(m for (t, _), m in self.models.items() if t == target).class_names
            if len(names) == 2 and names[0].startswith("not-"):
                emotion = names[1]
                for row, p in zip(rows, values[:, 1]):
                    row[f"p_{emotion}"] = float(p)
                    row[emotion] = bool(p >= self.threshold)
            else:
                for row, p in zip(rows, values):
                    row["predicted"] = names[int(np.argmax(p))]
                    for name, value in zip(names, p):
                        row[f"p_{name}"] = float(value)
                        row[name] = names[int(np.argmax(p))] == name
        return pd.DataFrame(rows)


def export_run(path, out):
    """Exports every model of a run (or one model folder) as SavedModels under `out`.

    Returns:
        The list of written folders.
    """
    written = []
    for (target, fold), folder in model_folders(path).items():
        loaded = LoadedModel(folder)
        if not hasattr(loaded.model, "export"):
            raise ValueError(f"{folder} is already a SavedModel export")
        destination = out if (target, fold) == ("model", "model") else os.path.join(out, target, fold)
        written.append(export_model(loaded.model, destination))
    return written
