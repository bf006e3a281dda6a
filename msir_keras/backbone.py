"""MSIR's backbone: the recurrent branches and their concatenation (paper eqs. 1-5 and 6's input)."""

from __future__ import annotations

import keras
from keras import layers

from msir_keras.augment import FeatureMasks
from msir_keras.branches import cr_branch, functionals_branch, lld_branch, wav2vec_branch
from msir_keras.features.base import ConfigError
from msir_keras.layers import FrameLengths
from msir_keras.presets import ALL_BRANCHES, BRANCH_INPUT, BRANCHES, PAPER, VECTOR_INPUTS
from msir_keras.weighted_sum import WeightedLayerSum


def checked_branches(branches):
    """`branches` as a tuple in MSIR's order (`ALL_BRANCHES`); ConfigError if empty or unknown."""
    branches = tuple(branches)
    unknown = [b for b in branches if b not in ALL_BRANCHES]
    if not branches or unknown:
        raise ConfigError(f"branches must be a non-empty subset of {ALL_BRANCHES}, got {branches}")
    return tuple(b for b in ALL_BRANCHES if b in branches)


def input_shapes(branches, logmel_shape, lld_dim, w2v_dim, functionals_dim, w2v_layers=None):
    """{input name: the shape of one frame, or (D,) for a vector input} of `branches`, in branch order.

    With `w2v_layers`, a `w2v` frame holds every hidden state of the upstream: (w2v_layers, w2v_dim).
    """
    w2v = (w2v_layers, w2v_dim) if w2v_layers else (w2v_dim,)
    shapes = {"logmel": tuple(logmel_shape), "lld": (lld_dim,), "w2v": w2v, "egemaps": (functionals_dim,)}
    return {BRANCH_INPUT[b]: shapes[BRANCH_INPUT[b]] for b in branches}


def new_inputs(shapes):
    """Fresh `keras.Input`s by name: (B, T, *frame) for a sequence, (B, D) for a vector input."""
    return {name: keras.Input(shape=shape if name in VECTOR_INPUTS else (None, *shape), name=name)
            for name, shape in shapes.items()}


@keras.saving.register_keras_serializable(package="msir_keras")
class MSIRBackbone(keras.Model):
    """The branches of MSIR (Wu et al. 2024) and their concatenation, without a head.

    Inputs, by name, z-scored and exactly zero on the padded frames (what
    `MSIRPreprocessor` makes of raw features): `logmel` (B, T, 40, K),
    `lld` (B, T, 65 | 130 | 195), `w2v` (B, T, 768) and, with the
    functionals branch, `egemaps` (B, 88). Each utterance's length is
    read from its padding. The output is the concatenation of the enabled
    branches' utterance vectors, (B, `output_dim`): the input of the
    paper's fully connected layers (eq. 6). Every ablation row of Table 1
    is a choice of `branches`.

    The sizes default to the paper's (`msir_keras.presets.PAPER`, where
    every preset is declared); `MSIR.from_preset` builds a backbone and its
    head from a preset.

    Args:
        branches: tuple of "cr", "lld", "w2v", "func"; defaults to the
            paper's three. "func" (`functionals_branch`) is early fusion
            with eGeMAPS functionals, not in the paper.
        logmel_shape: (int, int). Mel filters and planes (static, deltas).
        lld_dim, w2v_dim, functionals_dim: int. Feature dimensions.
        w2v_layers: int or None. With an int L, the `w2v` input is
            (B, T, L, w2v_dim), every hidden state of the upstream, and a
            `WeightedLayerSum` learns their mix (SUPERB); None: (B, T, w2v_dim).
        conv_filters: tuple of int. CR branch convolutions (eq. 1).
        conv_kernel: (int, int), time x frequency. pool_size: int, the one
            max-pooling, after conv 1.
        cr_dense_units: int. The CR branch's time-distributed dense layer.
        cr_lstm_units, lld_lstm_units, w2v_lstm_units: int. Bi-LSTM units (eqs. 2-5).
        functionals_units: int. The functionals branch's dense layer.
        dropout: float. The functionals branch's input dropout.
        leaky_relu_slope, batch_norm_momentum: float. CR branch blocks.
        weight_decay: float. L2 on the convolution kernels.
        synchronized_batch_norm: bool. Batch statistics over all replicas.
        time_masks, feature_masks: int, 0 is off. SpecAugment-style masks
            on every sequence input, in training only (`FeatureMasks`).
        time_mask_width, feature_mask_width: float in [0, 1). A mask's
            largest width, as a share of the frames or of the dimensions.
        dtype: str or `keras.DTypePolicy` or None. Every layer's policy, e.g.
            "mixed_float16", saved with the model; None follows the global
            policy where the model is built, and where it is loaded again.

    Example:
    >>> backbone = MSIRBackbone(branches=("lld", "w2v"), lld_dim=65, w2v_dim=16, lld_lstm_units=8,
    ...                         w2v_lstm_units=8)
    >>> backbone.output_dim
    16
    """

    def __init__(
        self,
        branches=BRANCHES,
        logmel_shape=PAPER["logmel_shape"],
        lld_dim=PAPER["lld_dim"],
        w2v_dim=PAPER["w2v_dim"],
        functionals_dim=PAPER["functionals_dim"],
        w2v_layers=PAPER["w2v_layers"],
        conv_filters=PAPER["conv_filters"],
        conv_kernel=PAPER["conv_kernel"],
        pool_size=PAPER["pool_size"],
        cr_dense_units=PAPER["cr_dense_units"],
        cr_lstm_units=PAPER["cr_lstm_units"],
        lld_lstm_units=PAPER["lld_lstm_units"],
        w2v_lstm_units=PAPER["w2v_lstm_units"],
        functionals_units=PAPER["functionals_units"],
        dropout=PAPER["dropout"],
        leaky_relu_slope=PAPER["leaky_relu_slope"],
        batch_norm_momentum=PAPER["batch_norm_momentum"],
        weight_decay=PAPER["weight_decay"],
        synchronized_batch_norm=PAPER["synchronized_batch_norm"],
        time_masks=PAPER["time_masks"],
        time_mask_width=PAPER["time_mask_width"],
        feature_masks=PAPER["feature_masks"],
        feature_mask_width=PAPER["feature_mask_width"],
        dtype=None,
        **kwargs,
    ):
        branches = checked_branches(branches)
        shapes = input_shapes(branches, logmel_shape, lld_dim, w2v_dim, functionals_dim, w2v_layers)

        # === Layers ===
        builders = {
            "cr": lambda: cr_branch(
                tuple(logmel_shape), tuple(conv_filters), tuple(conv_kernel), pool_size, cr_dense_units,
                cr_lstm_units, leaky_relu_slope, batch_norm_momentum, weight_decay, synchronized_batch_norm,
                dtype=dtype,
            ),
            "lld": lambda: lld_branch(lld_dim, lld_lstm_units, dtype=dtype),
            "w2v": lambda: wav2vec_branch(w2v_dim, w2v_lstm_units, dtype=dtype),
            "func": lambda: functionals_branch(functionals_dim, functionals_units, dropout, dtype=dtype),
        }
        branch_models = {b: builders[b]() for b in branches}

        # === Functional Model ===
        inputs = new_inputs(shapes)
        pooled = []
        for branch in branches:
            name = BRANCH_INPUT[branch]
            if name in VECTOR_INPUTS:
                pooled.append(branch_models[branch](inputs[name]))
                continue
            # The preprocessor zeroes the padded frames, so the lengths read from them are the raw features'.
            lengths = FrameLengths(name=f"{name}_lengths", dtype="float32")(inputs[name])
            x = inputs[name]
            if name == "w2v" and w2v_layers:  # SUPERB's learned weighted sum of the hidden states
                x = WeightedLayerSum(w2v_layers, name="w2v_layer_sum", dtype=dtype)(x)
            if time_masks or feature_masks:
                x = FeatureMasks(time_masks, time_mask_width, feature_masks, feature_mask_width,
                                 name=f"{name}_feature_masks", dtype=dtype)(x, lengths)
            pooled.append(branch_models[branch]([x, lengths]))
        outputs = layers.Concatenate(name="fusion", dtype=dtype)(pooled) if len(pooled) > 1 else pooled[0]
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        if dtype is not None:  # a functional model does not take its policy from its constructor
            self.dtype_policy = keras.dtype_policies.get(dtype)
        # Saved only when given: a model built under a global mixed policy reloads under the loader's.
        self._explicit_dtype = dtype is not None

        # === Config ===
        self.branches = branches
        self.logmel_shape = tuple(logmel_shape)
        self.lld_dim = lld_dim
        self.w2v_dim = w2v_dim
        self.functionals_dim = functionals_dim
        self.w2v_layers = w2v_layers
        self.conv_filters = tuple(conv_filters)
        self.conv_kernel = tuple(conv_kernel)
        self.pool_size = pool_size
        self.cr_dense_units = cr_dense_units
        self.cr_lstm_units = cr_lstm_units
        self.lld_lstm_units = lld_lstm_units
        self.w2v_lstm_units = w2v_lstm_units
        self.functionals_units = functionals_units
        self.dropout = dropout
        self.leaky_relu_slope = leaky_relu_slope
        self.batch_norm_momentum = batch_norm_momentum
        self.weight_decay = weight_decay
        self.synchronized_batch_norm = synchronized_batch_norm
        self.time_masks = time_masks
        self.time_mask_width = time_mask_width
        self.feature_masks = feature_masks
        self.feature_mask_width = feature_mask_width

    @property
    def output_dim(self):
        """The length of the fused vector: the sum of the branches' output sizes."""
        return int(self.outputs[0].shape[-1] if isinstance(self.outputs, list) else self.outputs.shape[-1])

    def layer_weights(self):
        """The learned weights of the upstream's hidden states, (L,) numpy; None without `w2v_layers`."""
        if not self.w2v_layers or "w2v" not in self.branches:
            return None
        return self.get_layer("w2v_layer_sum").layer_weights()

    @property
    def feature_inputs(self):
        """The names of the inputs this backbone takes, in branch order."""
        return [BRANCH_INPUT[b] for b in self.branches]

    def input_shapes(self):
        """{input name: the shape of one frame, or (D,) for a vector input}."""
        return input_shapes(self.branches, self.logmel_shape, self.lld_dim, self.w2v_dim, self.functionals_dim,
                            self.w2v_layers)

    def get_config(self):
        config = super().get_config()
        if not self._explicit_dtype:
            config.pop("dtype", None)
        config.update({
            "branches": list(self.branches),
            "logmel_shape": list(self.logmel_shape),
            "lld_dim": self.lld_dim,
            "w2v_dim": self.w2v_dim,
            "functionals_dim": self.functionals_dim,
            "w2v_layers": self.w2v_layers,
            "conv_filters": list(self.conv_filters),
            "conv_kernel": list(self.conv_kernel),
            "pool_size": self.pool_size,
            "cr_dense_units": self.cr_dense_units,
            "cr_lstm_units": self.cr_lstm_units,
            "lld_lstm_units": self.lld_lstm_units,
            "w2v_lstm_units": self.w2v_lstm_units,
            "functionals_units": self.functionals_units,
            "dropout": self.dropout,
            "leaky_relu_slope": self.leaky_relu_slope,
            "batch_norm_momentum": self.batch_norm_momentum,
            "weight_decay": self.weight_decay,
            "synchronized_batch_norm": self.synchronized_batch_norm,
            "time_masks": self.time_masks,
            "time_mask_width": self.time_mask_width,
            "feature_masks": self.feature_masks,
            "feature_mask_width": self.feature_mask_width,
        })
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
