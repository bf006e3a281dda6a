"""TensorFlow SavedModel export of a run's models (`msir export`).

An export folder holds, per model, `saved_model.pb` (endpoint `serve`) and
the `msir.json` that `msir_keras.serving` reads back: the feature settings
and class names that `msir_keras.detector.Detector` needs to predict from
audio with it.
"""

from __future__ import annotations

import json
import os

from msir_keras.features.base import ConfigError
from msir_keras.serving import METADATA, LoadedModel, model_folders, model_metadata, tensorflow_backend


def export_model(model, folder):
    """Writes a TensorFlow SavedModel of `model` (endpoint `serve`) and its msir.json.

    Raises ConfigError under another Keras backend: a SavedModel is TensorFlow's.

    The serving signature takes the padded feature tensors by input name
    (`logmel` (B, T, 40, K), `lld` (B, T, D), `w2v` (B, T, 768), float32,
    right-padded with zeros) and returns class probabilities (B, C).
    """
    if not tensorflow_backend():
        import keras

        raise ConfigError(f"a SavedModel is TensorFlow's; Keras runs on {keras.backend.backend()} here "
                          "(KERAS_BACKEND): export under KERAS_BACKEND=tensorflow, or serve model.keras as it is")
    model.export(folder, format="tf_saved_model", verbose=False)
    with open(os.path.join(folder, METADATA), "w") as handle:
        json.dump(model_metadata(model), handle, indent=2)
    return folder


def export_run(path, out, overwrite=False):
    """Exports every model of a run (or one model folder) as SavedModels under `out`.

    Args:
        path: str. A run folder or one fold's folder.
        out: str. The export folder.
        overwrite: bool, defaults to False. Whether to write into a folder that already holds files.

    Returns:
        The list of written folders.

    Raises:
        ValueError: `out` already holds files and `overwrite` is False, or `path` is an export.
    """
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise ValueError(f"{out} already holds files; choose another --out, or pass --overwrite to replace "
                         "the models there")
    written = []
    for (target, fold), folder in model_folders(path).items():
        loaded = LoadedModel(folder, keras=True)
        if not hasattr(loaded.model, "export"):
            raise ValueError(f"{folder} is already a SavedModel export; export a run folder instead")
        destination = out if (target, fold) == ("model", "model") else os.path.join(out, target, fold)
        written.append(export_model(loaded.model, destination))
    return written
