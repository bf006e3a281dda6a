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


def _not_exported(folder):
    """A file under `folder` that is not part of a SavedModel export (relative path), or None."""
    exports = [d for d, _, files in os.walk(folder) if "saved_model.pb" in files]
    for directory, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(directory, name)
            if not any(path.startswith(e + os.sep) for e in exports):
                return os.path.relpath(path, folder)
    return None


def export_run(path, out, overwrite=False):
    """Exports every model of a run (or one model folder) as SavedModels under `out`.

    The export is written beside `out` first and moved into place whole, so
    an interrupted export leaves `out` as it was, and an overwritten one
    keeps nothing of the export it replaces.

    Args:
        path: str. A run folder or one fold's folder.
        out: str. The export folder.
        overwrite: bool, defaults to False. Whether to replace a folder that already holds files.

    Returns:
        The list of written folders.

    Raises:
        ValueError: `out` already holds files and `overwrite` is False, `out`
            holds the run's own models, or `path` is an export.
    """
    import shutil

    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise ValueError(f"{out} already holds files; choose another --out, or pass --overwrite to replace "
                             "the export there")
        stranger = _not_exported(out)
        if stranger is not None:
            raise ValueError(f"{out} holds {stranger}, which no export wrote; --overwrite replaces an export "
                             "folder only: choose another --out")
    here, target = os.path.realpath(os.getcwd()), os.path.realpath(out)
    if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
        raise ValueError(f"{out} is the current folder or holds it; export into a folder of its own")
    sources = model_folders(path)
    target_root = os.path.realpath(out)
    if any(os.path.realpath(f) == target_root or os.path.realpath(f).startswith(target_root + os.sep)
           for f in sources.values()):
        raise ValueError(f"{out} holds the models being exported; choose another --out")
    staging = os.path.normpath(out) + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    written = []
    for (target, fold), folder in sources.items():
        loaded = LoadedModel(folder, keras=True)
        if not hasattr(loaded.model, "export"):
            raise ValueError(f"{folder} is already a SavedModel export; export a run folder instead")
        relative = "" if (target, fold) == ("model", "model") else os.path.join(target, fold)
        export_model(loaded.model, os.path.join(staging, relative))
        written.append(os.path.join(out, relative) if relative else out)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.replace(staging, out)
    return written
