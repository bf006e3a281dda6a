"""MSIR's sizes, inputs and loss defaults, declared once: plain data, light to import (no Keras).

`MSIRBackbone`, the task models, the branch builders, `FocalLoss`, the
experiment configuration and the CLI all read their defaults from here.
"""

from __future__ import annotations

BRANCHES = ("cr", "lld", "w2v")  # the paper's three, MSIR's default
# Every branch MSIR can take: the paper's three and "func", a dense branch over the utterance's
# eGeMAPS functionals (early, or feature-level, fusion with openSMILE functionals: "MSIR + F").
ALL_BRANCHES = (*BRANCHES, "func")

# The model input each branch reads, and the preset argument that sizes that input.
BRANCH_INPUT = {"cr": "logmel", "lld": "lld", "w2v": "w2v", "func": "egemaps"}
INPUT_SIZE = {"logmel": "logmel_shape", "lld": "lld_dim", "w2v": "w2v_dim", "egemaps": "functionals_dim"}
# Inputs holding one vector per utterance, (B, D), not a sequence of frames (B, T, ...).
VECTOR_INPUTS = ("egemaps",)

# The paper's sizes (section 3; ACRNN fills the CR branch's gaps) and the
# regularisation the paper names. Every other preset starts from these.
PAPER = dict(
    # Input sizes: 2D log-Mels (40 filters, static and delta planes), 3D-LLD,
    # wav2vec 2.0 base, eGeMAPSv02 functionals.
    logmel_shape=(40, 2),
    lld_dim=195,
    w2v_dim=768,
    functionals_dim=88,
    # The upstream's hidden states stacked per frame, for a learned weighted sum of them
    # (`WeightedLayerSum`; `--upstream-layer all`); None: one hidden state, the paper's.
    w2v_layers=None,
    # The convolutional recurrent branch (eqs. 1-3).
    conv_filters=(128, 256, 256, 256, 256, 256),
    conv_kernel=(5, 3),
    pool_size=2,
    cr_dense_units=768,
    cr_lstm_units=128,
    leaky_relu_slope=0.01,
    batch_norm_momentum=0.99,
    weight_decay=1e-3,
    synchronized_batch_norm=False,
    # The LLD and wav2vec branches (eqs. 4-5), and the functionals branch (not in the paper).
    lld_lstm_units=128,
    w2v_lstm_units=128,
    functionals_units=64,
    # The head after the concatenation (eq. 6).
    dense_units=(64,),
    dropout=0.3,
    # SpecAugment-style masks (`msir_keras.augment.FeatureMasks`): off in the paper.
    time_masks=0,
    time_mask_width=0.05,
    feature_masks=0,
    feature_mask_width=0.1,
)

PRESETS = {
    "paper": PAPER,
    # Trains on a 2-core CPU in minutes: same structure, narrower layers.
    "small": {**PAPER, "conv_filters": (16, 32, 32), "cr_dense_units": 64, "cr_lstm_units": 32,
              "lld_lstm_units": 32, "w2v_lstm_units": 32, "functionals_units": 32, "dense_units": (32,)},
    # For tests of plumbing (shapes, saving, the CLI, resume, bad input): the
    # same structure with a few thousand weights; it learns little.
    "tiny": {**PAPER, "conv_filters": (4, 8), "cr_dense_units": 8, "cr_lstm_units": 4, "lld_lstm_units": 4,
             "w2v_lstm_units": 4, "functionals_units": 4, "dense_units": (8,)},
}

# The arguments of the classification and detection heads; the rest of a preset sizes the backbone.
HEAD_ARGUMENTS = ("dense_units", "dropout")
# What `--set` and `model_options` may change: every preset argument.
MODEL_ARGUMENTS = frozenset(PAPER)

# The focal loss (eq. 7): the weighting factor for classification, where the
# paper gives no per-class value, and the focusing factor.
ZETA = 0.25
THETA = 2.0
