"""The MSIR model: three recurrent branches fused by concatenation (paper eqs. 1-7), and its ensembles and late fusion."""

from __future__ import annotations

import copy

import keras
from keras import layers, ops

# Imported for their registration: a saved model names its compiled FocalLoss
# and UnweightedAverageRecall, which must be known in a fresh process that only
# loads the model.
from msir_keras import losses as _losses  # noqa: F401
from msir_keras import metrics as _metrics  # noqa: F401
from msir_keras.augment import FeatureMasks
from msir_keras.branches import cr_branch, functionals_branch, lld_branch, wav2vec_branch
from msir_keras.config import ALL_BRANCHES, BRANCHES
from msir_keras.features.base import ConfigError
from msir_keras.layers import FrameLengths, MaskFrames, Standardize

BRANCH_INPUT = {"cr": "logmel", "lld": "lld", "w2v": "w2v", "func": "egemaps"}
# Inputs holding one vector per utterance, (B, D), not a sequence of frames (B, T, ...).
VECTOR_INPUTS = ("egemaps",)

PRESETS = {
    # The paper's sizes (ACRNN fills the CR branch's gaps).
    "paper": dict(
        conv_filters=(128, 256, 256, 256, 256, 256),
        cr_dense_units=768,
        cr_lstm_units=128,
        lld_lstm_units=128,
        w2v_lstm_units=128,
        functionals_units=64,
        dense_units=(64,),
        dropout=0.3,
    ),
    # Trains on a 2-core CPU in minutes: same structure, narrower layers.
    "small": dict(
        conv_filters=(16, 32, 32),
        cr_dense_units=64,
        cr_lstm_units=32,
        lld_lstm_units=32,
        w2v_lstm_units=32,
        functionals_units=32,
        dense_units=(32,),
        dropout=0.3,
    ),
    # For tests of plumbing (shapes, saving, the CLI, resume, bad input): the
    # same structure with a few thousand weights; it learns little.
    "tiny": dict(
        conv_filters=(4, 8),
        cr_dense_units=8,
        cr_lstm_units=4,
        lld_lstm_units=4,
        w2v_lstm_units=4,
        functionals_units=4,
        dense_units=(8,),
        dropout=0.3,
    ),
}


@keras.saving.register_keras_serializable(package="msir_keras")
class MSIR(keras.Model):
    """Multi-source low-level information based recurrent branches (Wu et al. 2024).

    Inputs are named `logmel` (B, T, 40, K), `lld` (B, T, 65 | 130 | 195) and
    `w2v` (B, T, 768): raw features, right-padded with zeros per batch; with
    the functionals branch, also `egemaps` (B, 88), one vector per utterance. The
    model z-scores them with statistics fitted on training data
    (`set_normalization`), derives each utterance's length from its padding,
    runs the enabled branches and fuses them: concatenation, fully connected
    layers, softmax. Every ablation row of the paper's Table 1 is a choice
    of `branches` and feature shapes.

    Args:
        num_classes: int, defaults to 4. 2 for detection (negative, positive).
        branches: tuple of "cr", "lld", "w2v", "func"; defaults to the
            paper's three. "func" is the functionals branch (`functionals_branch`):
            early fusion with eGeMAPS functionals, not in the paper.
        logmel_shape: (int, int), defaults to (40, 2): Mel filters and planes.
        lld_dim: int, defaults to 195 (3D-LLD).
        w2v_dim: int, defaults to 768 (wav2vec 2.0 base).
        conv_filters: tuple of int. CR branch convolutions (paper: 128, then 256s).
        conv_kernel: (int, int), defaults to (5, 3), time x frequency.
        pool_size: int, defaults to 2. The one max-pooling, after conv 1.
        cr_dense_units: int, defaults to 768. Time-distributed dense layer.
        cr_lstm_units, lld_lstm_units, w2v_lstm_units: int, defaults to 128.
        functionals_dim: int, defaults to 88 (eGeMAPSv02 functionals).
        functionals_units: int, defaults to 64. The functionals branch's
            dense layer (it drops out its input at `dropout` first).
        dense_units: tuple of int, defaults to (64,). Fully connected layers
            after the fusion.
        dropout: float, defaults to 0.3. Before each fully connected layer.
        leaky_relu_slope: float, defaults to 0.01.
        batch_norm_momentum: float, defaults to 0.99.
        weight_decay: float, defaults to 1e-3. L2 on the convolution kernels.
        synchronized_batch_norm: bool, defaults to False. Batch statistics
            over all replicas of a distribution strategy (CR branch).
        time_masks, feature_masks: int, default to 0 (off). SpecAugment-style
            masks on every branch's standardised features, in training only
            (`msir_keras.augment.FeatureMasks`): this many spans of frames
            and of feature dimensions are zeroed per utterance.
        time_mask_width, feature_mask_width: float, default to 0.05 and
            0.1. A span's largest width, as a share of the utterance's
            frames or of the feature dimensions.
        class_names: list of str or None. Names of the outputs, in order.
        feature_config: dict or None. The extractor configs the model was
            trained on, by input name: a `Detector` extracts with them, and
            refuses features made with others.

    Example:
    >>> model = MSIR.from_preset("small", branches=("cr", "lld"))
    >>> model.feature_inputs
    ['logmel', 'lld']
    """

    def __init__(
        self,
        num_classes=4,
        branches=BRANCHES,
        logmel_shape=(40, 2),
        lld_dim=195,
        w2v_dim=768,
        conv_filters=(128, 256, 256, 256, 256, 256),
        conv_kernel=(5, 3),
        pool_size=2,
        cr_dense_units=768,
        cr_lstm_units=128,
        lld_lstm_units=128,
        w2v_lstm_units=128,
        functionals_dim=88,
        functionals_units=64,
        dense_units=(64,),
        dropout=0.3,
        leaky_relu_slope=0.01,
        batch_norm_momentum=0.99,
        weight_decay=1e-3,
        synchronized_batch_norm=False,
        time_masks=0,
        time_mask_width=0.05,
        feature_masks=0,
        feature_mask_width=0.1,
        class_names=None,
        feature_config=None,
        **kwargs,
    ):
        branches = tuple(branches)
        unknown = [b for b in branches if b not in ALL_BRANCHES]
        if not branches or unknown:
            raise ConfigError(f"branches must be a non-empty subset of {ALL_BRANCHES}, got {branches}")
        branches = tuple(b for b in ALL_BRANCHES if b in branches)
        shapes = {"logmel": tuple(logmel_shape), "lld": (lld_dim,), "w2v": (w2v_dim,), "egemaps": (functionals_dim,)}

        # === Layers ===
        builders = {
            "cr": lambda: cr_branch(
                shapes["logmel"], tuple(conv_filters), tuple(conv_kernel), pool_size,
                cr_dense_units, cr_lstm_units, leaky_relu_slope, batch_norm_momentum,
                weight_decay, synchronized_batch_norm,
            ),
            "lld": lambda: lld_branch(lld_dim, lld_lstm_units),
            "w2v": lambda: wav2vec_branch(w2v_dim, w2v_lstm_units),
            "func": lambda: functionals_branch(functionals_dim, functionals_units, dropout),
        }
        branch_models = {b: builders[b]() for b in branches}
        # Lengths and z-scores in float32 under any precision policy: raw features (ComParE
        # LLDs reach about 1e6) overflow float16; only the z-scored features enter the branches.
        standardizers = {
            BRANCH_INPUT[b]: Standardize(shapes[BRANCH_INPUT[b]], name=f"{BRANCH_INPUT[b]}_standardize",
                                         dtype="float32")
            for b in branches
        }

        # === Functional Model ===
        inputs, pooled = {}, []
        for branch in branches:
            name = BRANCH_INPUT[branch]
            if name in VECTOR_INPUTS:
                inputs[name] = features = keras.Input(shape=shapes[name], name=name)
                pooled.append(branch_models[branch](standardizers[name](features)))
                continue
            features = keras.Input(shape=(None, *shapes[name]), name=name)
            lengths = FrameLengths(name=f"{name}_lengths", dtype="float32")(features)
            x = standardizers[name](features)
            x = MaskFrames(0.0, name=f"{name}_mask")(x, lengths)
            if time_masks or feature_masks:
                x = FeatureMasks(time_masks, time_mask_width, feature_masks, feature_mask_width,
                                 name=f"{name}_feature_masks")(x, lengths)
            inputs[name] = features
            pooled.append(branch_models[branch]([x, lengths]))
        x = layers.Concatenate(name="fusion")(pooled) if len(pooled) > 1 else pooled[0]
        for index, units in enumerate(dense_units):
            x = layers.Dropout(dropout, name=f"dropout{index + 1}")(x)
            x = layers.Dense(units, activation="relu", name=f"dense{index + 1}")(x)
        outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="softmax")(x)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.num_classes = num_classes
        self.branches = branches
        self.logmel_shape = shapes["logmel"]
        self.lld_dim = lld_dim
        self.w2v_dim = w2v_dim
        self.conv_filters = tuple(conv_filters)
        self.conv_kernel = tuple(conv_kernel)
        self.pool_size = pool_size
        self.cr_dense_units = cr_dense_units
        self.cr_lstm_units = cr_lstm_units
        self.lld_lstm_units = lld_lstm_units
        self.w2v_lstm_units = w2v_lstm_units
        self.functionals_dim = functionals_dim
        self.functionals_units = functionals_units
        self.dense_units = tuple(dense_units)
        self.dropout = dropout
        self.leaky_relu_slope = leaky_relu_slope
        self.batch_norm_momentum = batch_norm_momentum
        self.weight_decay = weight_decay
        self.synchronized_batch_norm = synchronized_batch_norm
        self.time_masks = time_masks
        self.time_mask_width = time_mask_width
        self.feature_masks = feature_masks
        self.feature_mask_width = feature_mask_width
        self.class_names = list(class_names) if class_names else None
        self.feature_config = copy.deepcopy(feature_config) if feature_config else None

    @property
    def feature_inputs(self):
        """The names of the inputs this model takes, in branch order."""
        return [BRANCH_INPUT[b] for b in self.branches]

    def feature_shapes(self):
        """{input name: the shape of one frame}; a vector input (B, D) has shape () (`new_inputs` gives D)."""
        shapes = {"logmel": self.logmel_shape, "lld": (self.lld_dim,), "w2v": (self.w2v_dim,), "egemaps": ()}
        return {name: shapes[name] for name in self.feature_inputs}

    def new_inputs(self):
        """Fresh `keras.Input`s shaped as this model's, by name: for a functional model that calls it."""
        return {name: keras.Input(shape=(self.functionals_dim,) if name in VECTOR_INPUTS else (None, *shape),
                                  name=name)
                for name, shape in self.feature_shapes().items()}

    def set_normalization(self, statistics):
        """Sets the z-score statistics: {input name: (mean, std)} fitted on training data."""
        for name in self.feature_inputs:
            mean, std = statistics[name]
            self.get_layer(f"{name}_standardize").set_statistics(mean, std)

    def get_normalization(self):
        """{input name: (mean, std)} as set by `set_normalization`."""
        layers = {name: self.get_layer(f"{name}_standardize") for name in self.feature_inputs}
        return {name: (ops.convert_to_numpy(layer.mean), ops.convert_to_numpy(layer.std))
                for name, layer in layers.items()}

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "branches": list(self.branches),
            "logmel_shape": list(self.logmel_shape),
            "lld_dim": self.lld_dim,
            "w2v_dim": self.w2v_dim,
            "conv_filters": list(self.conv_filters),
            "conv_kernel": list(self.conv_kernel),
            "pool_size": self.pool_size,
            "cr_dense_units": self.cr_dense_units,
            "cr_lstm_units": self.cr_lstm_units,
            "lld_lstm_units": self.lld_lstm_units,
            "w2v_lstm_units": self.w2v_lstm_units,
            "functionals_dim": self.functionals_dim,
            "functionals_units": self.functionals_units,
            "dense_units": list(self.dense_units),
            "dropout": self.dropout,
            "leaky_relu_slope": self.leaky_relu_slope,
            "batch_norm_momentum": self.batch_norm_momentum,
            "weight_decay": self.weight_decay,
            "synchronized_batch_norm": self.synchronized_batch_norm,
            "time_masks": self.time_masks,
            "time_mask_width": self.time_mask_width,
            "feature_masks": self.feature_masks,
            "feature_mask_width": self.feature_mask_width,
            "class_names": self.class_names,
            "feature_config": self.feature_config,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def from_preset(cls, preset="paper", **overrides):
        """Builds a model from a preset ("paper", "small" or "tiny") with `overrides` on top."""
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[preset], **overrides})


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


def load_model(path, compile=True):
    """Loads a `.keras` file saved from an MSIR model, in any process.

    Importing this module registers every class such a file names (the model,
    its layers, `FocalLoss`, `UnweightedAverageRecall`), so `keras.saving.load_model` works too once
    `msir_keras.model` is imported; this function also names the file when
    it cannot be read.

    Args:
        path: str. A `model.keras` file.
        compile: bool, defaults to True. False skips the optimizer and loss:
            enough for prediction, and faster.
    """
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        return keras.saving.load_model(path, compile=compile)
    except (TypeError, ValueError, OSError) as error:
        raise ConfigError(
            f"{path}: cannot load this model ({type(error).__name__}: {str(error).splitlines()[0]}); "
            "was it saved by this version of msir-keras?"
        ) from error
