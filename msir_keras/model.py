"""The MSIR model: three recurrent branches fused by concatenation (paper eqs. 1-7), and its ensembles and late fusion."""

from __future__ import annotations

import copy

import keras
import numpy as np
from keras import layers

# Imported for their registration: a saved model names its compiled FocalLoss
# and UnweightedAverageRecall, which must be known in a fresh process that only
# loads the model.
from msir_keras import losses as _losses  # noqa: F401
from msir_keras import metrics as _metrics  # noqa: F401
from msir_keras.backbone import MSIRBackbone, checked_branches, input_shapes, new_inputs
from msir_keras.features.base import ConfigError
from msir_keras.preprocessor import MSIRPreprocessor
from msir_keras.presets import BRANCHES, HEAD_ARGUMENTS, MODEL_ARGUMENTS, PAPER, PRESETS, VECTOR_INPUTS


@keras.saving.register_keras_serializable(package="msir_keras")
class MSIR(keras.Model):
    """Multi-source low-level information based recurrent branches (Wu et al. 2024): the task model.

    Raw features in, by name: `logmel` (B, T, 40, K), `lld` (B, T, 65 |
    130 | 195) and `w2v` (B, T, 768), right-padded with zeros per batch;
    with the functionals branch, also `egemaps` (B, 88). The
    `preprocessor` z-scores them with training statistics, the `backbone`
    runs the branches and concatenates them, and the head (dropout and
    ReLU dense layers, then a softmax: eq. 6) gives (B, num_classes)
    probabilities. For classification the classes are the emotions; for
    the paper's per-emotion detection, num_classes is 2 (rest, emotion).

    Build one with `from_preset` (every size is declared in
    `msir_keras.presets`), or from a backbone of your own.

    Args:
        backbone: MSIRBackbone.
        num_classes: int, defaults to 4.
        preprocessor: MSIRPreprocessor or None (one for the backbone's
            inputs, with identity statistics until `set_normalization`).
        dense_units: tuple of int. The head's fully connected layers.
        dropout: float. Before each of them.
        class_names: list of str or None. Names of the outputs, in order.
        dtype: str or `keras.DTypePolicy` or None. The head's policy (the
            softmax stays float32).

    Example:
    >>> model = MSIR.from_preset("small", branches=("cr", "lld"))
    >>> model.feature_inputs
    ['logmel', 'lld']
    """

    def __init__(self, backbone, num_classes=4, preprocessor=None, dense_units=PAPER["dense_units"],
                 dropout=PAPER["dropout"], class_names=None, dtype=None, **kwargs):
        if preprocessor is None:
            preprocessor = MSIRPreprocessor(backbone.input_shapes())
        if set(preprocessor.input_shapes) != set(backbone.feature_inputs):
            raise ConfigError(f"the preprocessor makes {sorted(preprocessor.input_shapes)}, the backbone takes "
                              f"{sorted(backbone.feature_inputs)}")

        # === Layers ===
        head = []
        for index, units in enumerate(dense_units):
            head.append(layers.Dropout(dropout, name=f"dropout{index + 1}", dtype=dtype))
            head.append(layers.Dense(units, activation="relu", name=f"dense{index + 1}", dtype=dtype))
        softmax = layers.Dense(num_classes, activation="softmax", dtype="float32", name="softmax")

        # === Functional Model ===
        inputs = new_inputs(preprocessor.input_shapes)
        x = backbone(preprocessor(inputs))
        for layer in head:
            x = layer(x)
        super().__init__(inputs=inputs, outputs=softmax(x), **kwargs)
        if dtype is not None:
            self.dtype_policy = keras.dtype_policies.get(dtype)
        self._explicit_dtype = dtype is not None  # as MSIRBackbone: saved only when given

        # === Config ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.num_classes = num_classes
        self.dense_units = tuple(dense_units)
        self.dropout = dropout
        self.class_names = list(class_names) if class_names else None

    # What the rest of the package reads of a model, from the part that holds it.
    branches = property(lambda self: self.backbone.branches)
    feature_inputs = property(lambda self: self.backbone.feature_inputs)
    feature_config = property(lambda self: self.preprocessor.feature_config)

    def feature_shapes(self):
        """{input name: the shape of one frame}; a vector input (B, D) has shape () (`new_inputs` gives D)."""
        return {name: () if name in VECTOR_INPUTS else shape for name, shape in self.backbone.input_shapes().items()}

    def new_inputs(self):
        """Fresh `keras.Input`s shaped as this model's, by name: for a functional model that calls it."""
        return new_inputs(self.backbone.input_shapes())

    def set_normalization(self, statistics):
        """Sets the z-score statistics: {input name: (mean, std)} fitted on training data."""
        self.preprocessor.set_normalization(statistics)

    def get_normalization(self):
        """{input name: (mean, std)} as set by `set_normalization`."""
        return self.preprocessor.get_normalization()

    def get_config(self):
        config = super().get_config()
        if not self._explicit_dtype:
            config.pop("dtype", None)
        config.update({
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
            "num_classes": self.num_classes,
            "dense_units": list(self.dense_units),
            "dropout": self.dropout,
            "class_names": self.class_names,
        })
        return config

    @classmethod
    def from_config(cls, config):
        if "backbone" not in config:  # written before the backbone split: one flat dict of arguments
            return cls.from_arguments(**config)
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        preprocessor = keras.saving.deserialize_keras_object(config.pop("preprocessor"))
        return cls(backbone, preprocessor=preprocessor, **config)

    @classmethod
    def from_arguments(cls, num_classes=4, class_names=None, feature_config=None, name=None, trainable=True,
                       dtype=None, **arguments):
        """A task model from flat arguments: every preset argument (`msir_keras.presets.PAPER`) and
        `branches`, split between the backbone and the head; missing ones are the paper's."""
        unknown = sorted(set(arguments) - MODEL_ARGUMENTS - {"branches"})
        if unknown:
            raise ConfigError(f"unknown MSIR argument(s) {unknown}; known: branches and {sorted(MODEL_ARGUMENTS)}")
        arguments = {**PAPER, **arguments}
        head = {key: arguments[key] for key in HEAD_ARGUMENTS}
        body = {key: value for key, value in arguments.items() if key != "dense_units"}
        body["branches"] = checked_branches(body.get("branches", BRANCHES))
        shapes = input_shapes(body["branches"], body["logmel_shape"], body["lld_dim"], body["w2v_dim"],
                              body["functionals_dim"], body["w2v_layers"])
        backbone = MSIRBackbone(**body, dtype=dtype, name=f"{name}_backbone" if name else None)
        preprocessor = MSIRPreprocessor(shapes, feature_config)
        kwargs = {"name": name} if name else {}
        return cls(backbone, num_classes, preprocessor, class_names=class_names, dtype=dtype,
                   trainable=trainable, **head, **kwargs)

    @classmethod
    def from_preset(cls, preset="paper", **overrides):
        """Builds a model from a preset ("paper", "small" or "tiny") with `overrides` on top.

        `overrides` are preset arguments (`msir_keras.presets.PAPER`),
        `branches`, `num_classes`, `class_names`, `feature_config`, `name`, `dtype`.
        """
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        return cls.from_arguments(**{**PRESETS[preset], **overrides})


@keras.saving.register_keras_serializable(package="msir_keras")
class MSIREnsemble(keras.Model):
    """Several MSIR models trained alike (seeds) as one: their class probabilities averaged.

    A functional model over the members' shared inputs, so it saves, loads,
    exports and predicts like one MSIR; it reads its classes, features and
    normalisation from its first member (`training.run_fold` fits every
    member on the same training part). Prediction costs one forward pass
    per member.

    Args:
        members: list of MSIR, at least two, with the same inputs and classes
            (`engine.build(..., name=...)` names them apart).

    Example (two untrained small models):
    >>> a = MSIR.from_preset("small", branches=("lld",), lld_dim=3, name="a")
    >>> b = MSIR.from_preset("small", branches=("lld",), lld_dim=3, name="b")
    >>> MSIREnsemble([a, b]).num_classes
    4
    """

    def __init__(self, members, **kwargs):
        members = list(members)
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least two models, got {len(members)}")
        first = members[0]
        for member in members[1:]:
            if member.feature_shapes() != first.feature_shapes() or member.class_names != first.class_names:
                raise ConfigError(f"ensemble member {member.name} takes other inputs or classes than {first.name}")
        if len({m.name for m in members}) < len(members):
            raise ConfigError(f"ensemble members need distinct names, got {[m.name for m in members]}")
        inputs = first.new_inputs()
        outputs = layers.Average(dtype="float32", name="average")([m(inputs) for m in members])
        kwargs.setdefault("name", "msir_ensemble")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.members = members

    # The first member's description stands for the ensemble's.
    num_classes = property(lambda self: self.members[0].num_classes)
    class_names = property(lambda self: self.members[0].class_names)
    feature_config = property(lambda self: self.members[0].feature_config)
    branches = property(lambda self: self.members[0].branches)
    feature_inputs = property(lambda self: self.members[0].feature_inputs)

    def feature_shapes(self):
        return self.members[0].feature_shapes()

    def new_inputs(self):
        return self.members[0].new_inputs()

    def get_normalization(self):
        return self.members[0].get_normalization()

    def get_config(self):
        return {"name": self.name, "members": [keras.saving.serialize_keras_object(m) for m in self.members]}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        members = [keras.saving.deserialize_keras_object(m) for m in config.pop("members")]
        return cls(members, **config)


@keras.saving.register_keras_serializable(package="msir_keras")
class LateFusion(keras.Model):
    """MSIR and a functionals classifier as one model: w * p_MSIR + (1 - w) * p_functionals.

    A functional model over MSIR's sequence inputs (`logmel`, `lld`,
    `w2v`: (B, T, ...), right-padded) and one (B, D) input per
    functional set (`compare`: 6373, `egemaps`: 88). It saves, loads,
    exports and predicts like an MSIR model; `feature_config` holds the
    extractors of every input, so a Detector computes them from audio.

    Args:
        msir: MSIR or MSIREnsemble (trained).
        classifier: FunctionalsClassifier (fitted).
        msir_weight: float in [0, 1]. The weight of MSIR's probabilities.
        functionals_config: {set name: {"extractor", "config", "identity"}}
            of the classifier's inputs, or None for the package's
            (`features.baseline_extractor`); saved with the model, so a
            Detector checks that it extracts them alike.
    """

    def __init__(self, msir, classifier, msir_weight, functionals_config=None, **kwargs):
        if not 0.0 <= float(msir_weight) <= 1.0:
            raise ConfigError(f"msir_weight must be in [0, 1], got {msir_weight}")
        if classifier.num_classes != msir.num_classes:
            raise ConfigError(f"the functionals classifier has {classifier.num_classes} classes, "
                              f"MSIR {msir.num_classes}")
        sequence = msir.new_inputs()
        # A functional set MSIR takes too (its functionals branch) is one input of both parts.
        vectors = {name: sequence[name] if name in sequence else keras.Input(shape=(size,), name=name)
                   for name, size in zip(classifier.inputs_names, classifier.input_sizes)}
        p_msir = msir(sequence)
        p_functionals = classifier([vectors[name] for name in classifier.inputs_names])
        weighted = [layers.Rescaling(float(msir_weight), name="msir_share", dtype="float32")(p_msir),
                    layers.Rescaling(1.0 - float(msir_weight), name="functionals_share",
                                     dtype="float32")(p_functionals)]
        outputs = layers.Add(name="late_fusion", dtype="float32")(weighted)
        kwargs.setdefault("name", "late_fusion")
        super().__init__(inputs={**sequence, **vectors}, outputs=outputs, **kwargs)
        self.msir = msir
        self.classifier = classifier
        self.msir_weight = float(msir_weight)
        if functionals_config is None:
            from msir_keras.features import baseline_extractor

            extractors = {name: baseline_extractor(name) for name in classifier.inputs_names}
            functionals_config = {name: {"extractor": e.name, "config": e.get_config(), "identity": e.identity()}
                                  for name, e in extractors.items()}
        self.functionals_config = copy.deepcopy(functionals_config)

    num_classes = property(lambda self: self.msir.num_classes)
    class_names = property(lambda self: self.msir.class_names)
    branches = property(lambda self: self.msir.branches)

    @property
    def feature_config(self):
        return {**(self.msir.feature_config or {}), **self.functionals_config}

    @property
    def feature_inputs(self):
        return list(dict.fromkeys([*self.msir.feature_inputs, *self.classifier.inputs_names]))

    def feature_shapes(self):
        """{input name: the shape of one frame}; a functional set's vector is (B, D): shape ()."""
        return {**self.msir.feature_shapes(), **{name: () for name in self.classifier.inputs_names}}

    def get_normalization(self):
        return self.msir.get_normalization()

    def get_config(self):
        return {"name": self.name, "msir": keras.saving.serialize_keras_object(self.msir),
                "classifier": keras.saving.serialize_keras_object(self.classifier),
                "msir_weight": self.msir_weight, "functionals_config": self.functionals_config}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        msir = keras.saving.deserialize_keras_object(config.pop("msir"))
        classifier = keras.saving.deserialize_keras_object(config.pop("classifier"))
        return cls(msir, classifier, **config)


def upstream_layer_weights(model):
    """The learned weights of the upstream's hidden states (`WeightedLayerSum`), (L,) numpy, or None.

    An ensemble gives its members' mean; a late-fused detector, its MSIR part's.
    """
    if isinstance(model, LateFusion):
        return upstream_layer_weights(model.msir)
    if isinstance(model, MSIREnsemble):
        weights = [upstream_layer_weights(member) for member in model.members]
        return None if weights[0] is None else np.mean(weights, axis=0)
    if isinstance(model, MSIR):
        return model.backbone.layer_weights()
    return None


def load_model(path, compile=True):
    """Loads a `.keras` file saved from an MSIR model, in any process.

    Importing this module registers every class such a file names (the model,
    its layers, `FocalLoss`, `UnweightedAverageRecall`), so `keras.saving.load_model` works too once
    `msir_keras.model` is imported; this function also loads files saved
    before MSIR was split into backbone, preprocessor and head
    (`msir_keras.legacy`), and names the file when it cannot be read.

    Args:
        path: str. A `model.keras` file.
        compile: bool, defaults to True. False skips the optimizer and loss:
            enough for prediction, and faster.
    """
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file")
    from msir_keras.legacy import is_legacy, load_legacy

    try:
        if is_legacy(path):
            return load_legacy(path, compile=compile, msir_class=MSIR)
        return keras.saving.load_model(path, compile=compile)
    except (TypeError, ValueError, OSError, KeyError) as error:
        raise ConfigError(
            f"{path}: cannot load this model ({type(error).__name__}: {str(error).splitlines()[0]}); "
            "was it saved by this version of msir-keras?"
        ) from error
