"""Loading `.keras` files saved before MSIR was split into a backbone, a preprocessor and a head.

Such a file's MSIR config is one flat dict of arguments, which
`MSIR.from_config` still reads; its weights sit where the old single
functional model kept them (`layers/standardize_1/vars/0`, ...). Keras
names a model's saved layers by class, with a counter in layer order, so
the old z-score layers, branch submodels and dense layers are found by
kind and order and copied into the new model's parts. Only the weights are
read: such a model loads compiled, with a fresh optimizer.
"""

from __future__ import annotations

import json
import re
import zipfile

import h5py
import keras

STATE = "model.weights.h5"


def is_legacy(path):
    """True when the `.keras` file at `path` holds an MSIR config from before the backbone split."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError):
        return False  # not a .keras file: keras's loader says why
    return _has_flat_msir(config)


def _has_flat_msir(node):
    if isinstance(node, dict):
        if node.get("class_name") == "MSIR" and "backbone" not in node.get("config", {}):
            return True
        return any(_has_flat_msir(value) for value in node.values())
    if isinstance(node, list):
        return any(_has_flat_msir(value) for value in node)
    return False


def load_legacy(path, compile=True, *, msir_class):
    """The model in an old `.keras` file, rebuilt in today's classes with its weights.

    `msir_class` is today's MSIR task class (`msir_keras.model.load_model`
    passes it), whose instances take an old flat MSIR's weights.
    """
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
        model = keras.saving.deserialize_keras_object(config)
        with archive.open(STATE) as stream, h5py.File(stream, "r") as weights:
            _load(model, weights, msir_class)
    if compile and config.get("compile_config"):
        model.compile_from_config(config["compile_config"])
    return model


def _snake_case(name):
    # As keras names a saved container's layers: "BiLSTM" -> "bi_lstm", "MSIR" -> "msir".
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _saved_names(layers):
    """{saved name: layer} for a model's layers, named as keras's saving names them."""
    names, counts = {}, {}
    for layer in layers:
        base = _snake_case(type(layer).__name__)
        counts[base] = counts.get(base, 0) + 1
        names[base if counts[base] == 1 else f"{base}_{counts[base] - 1}"] = layer
    return names


def _load(obj, group, msir_class):
    """Copies the weights saved in h5 `group` into `obj` and everything below it."""
    if isinstance(obj, msir_class):
        _load_flat_msir(obj, group)
        return
    if "vars" in group and len(group["vars"]):
        obj.load_own_variables({key: value[()] for key, value in group["vars"].items()})
    for key, child in group.items():
        if key == "vars":
            continue
        if key == "layers":
            by_name = _saved_names(obj.layers)
            for name, layer_group in child.items():
                if name not in by_name:
                    raise ValueError(f"the file holds weights of a layer {name!r} that {obj.name} has no match for")
                _load(by_name[name], layer_group, msir_class)
        elif isinstance(getattr(obj, key, None), keras.layers.Layer):
            _load(getattr(obj, key), child, msir_class)


def _ordered(group, kind):
    """The saved layers named `kind`, `kind_1`, ... in their saved order."""
    pattern = re.compile(rf"^{kind}(?:_(\d+))?$")
    found = [(int(m.group(1) or 0), key) for key in group for m in [pattern.match(key)] if m]
    return [group[key] for _, key in sorted(found)]


def _load_flat_msir(model, group):
    """An old MSIR's z-score layers, branch submodels and dense layers, in order, into the new parts."""
    saved = group["layers"]
    parts = [
        (model.preprocessor.standardizers, _ordered(saved, "standardize")),
        ([model.backbone.get_layer(name) for name in _branch_names(model.backbone)], _ordered(saved, "functional")),
        ([layer for layer in model.layers if isinstance(layer, keras.layers.Dense)], _ordered(saved, "dense")),
    ]
    for layers, groups in parts:
        if len(layers) != len(groups):
            raise ValueError(f"the file holds {len(groups)} layers where the model has {len(layers)}")
        for layer, layer_group in zip(layers, groups):
            _load(layer, layer_group, type(model))


def _branch_names(backbone):
    names = {"cr": "cr_branch", "lld": "lld_branch", "w2v": "wav2vec_branch", "func": "functionals_branch"}
    return [names[branch] for branch in backbone.branches]
