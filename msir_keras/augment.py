"""Training-only augmentation: speed-perturbed copies of training audio, and feature masks.

Speed perturbation (`speed_perturb`, `SpeedPerturbed`) is the Kaldi and
SpeechBrain recipe: a training utterance is also played at, say, 0.9 and
1.1 times its speed (tempo and pitch together, by resampling), and the
copies are extracted like any file. `SpeedPerturbed` wraps an extractor, so
each copy is its own feature-store entry, keyed by the extractor's identity
and the factor: computed once, reused by every fold and run. The runner
asks for copies of a fold's training utterances only; validation and test
utterances are never perturbed.

`FeatureMasks` zeroes random spans of frames (time masks) and of feature
dimensions (Mel bands, LLDs, wav2vec 2.0 dimensions) of standardised
features, so a masked value is the training mean. It acts only when Keras
calls it with `training=True` (`fit`); `predict`, `evaluate`, an exported
SavedModel and `msir predict` see the features unchanged, and the layer has
no weights, so a model trained with masks saves and loads like one without.

MSIR takes the masks as four arguments (`time_masks`, `time_mask_width`,
`feature_masks`, `feature_mask_width`), settable with `--set` and drawable
by a keras-tuner search space.

Example:
>>> import numpy as np
>>> x = np.ones((1, 50, 8), "float32")
>>> masks = FeatureMasks(time_masks=2, time_width=0.2, feature_masks=1, feature_width=0.25, seed=0)
>>> bool(np.all(np.asarray(masks(x, np.array([50]))) == 1))   # inference: unchanged
True
>>> float(np.asarray(masks(x, np.array([50]), training=True)).mean()) < 1
True
"""

from __future__ import annotations

from fractions import Fraction

import keras
import numpy as np
from keras import ops

from msir_keras.features.base import Extractor
from msir_keras.layers import PACKAGE, sequence_mask

SPEED_RANGE = (0.5, 2.0)


def speed_perturb(signal, factor):
    """`signal` played `factor` times as fast, at the same sample rate.

    Tempo and pitch both scale by `factor` and the length by 1 / `factor`
    (0.9: 11 % longer and lower), by polyphase resampling with an
    anti-aliasing filter (the factor as a fraction of denominator <= 100).

    Args:
        signal: (N,) float32 array. factor: float in (0.5, 2).

    Returns:
        (round(N / factor),) float32 array.
    """
    from scipy.signal import resample_poly

    low, high = SPEED_RANGE
    if not low < factor < high:
        raise ValueError(f"a speed factor must be in ({low}, {high}), got {factor}")
    ratio = Fraction(factor).limit_denominator(100)
    if ratio == 1:
        return np.asarray(signal, dtype=np.float32)
    return resample_poly(signal, ratio.denominator, ratio.numerator).astype(np.float32)


class SpeedPerturbed(Extractor):
    """`base`'s features of the signal played `factor` times as fast (see `speed_perturb`).

    Its identity is the base's plus the factor, so its store entries are
    apart from the unperturbed ones and from other factors'.

    Example:
    >>> from msir_keras.features import LogMel
    >>> SpeedPerturbed(LogMel(), 0.9).key().startswith("logmel-speed0.9-")
    True
    """

    parallel = False  # rebuilt from its name in a worker process otherwise; runs here

    def __init__(self, base, factor):
        speed_perturb(np.zeros(16, np.float32), factor)  # checks the factor
        self.base = base
        self.factor = float(factor)
        self.config = base.config
        self.name = f"{base.name}-speed{self.factor:g}"

    def identity(self):
        return {**self.base.identity(), "speed": self.factor}

    @property
    def store_dtype(self):
        return self.base.store_dtype

    def bytes_per_second(self):
        rate = self.base.bytes_per_second()  # of the original's duration: played faster, fewer frames
        return None if rate is None else rate / self.factor

    def __call__(self, signal):
        return self.base(speed_perturb(signal, self.factor))

    def extract_many(self, signals):
        return self.base.extract_many([speed_perturb(s, self.factor) for s in signals])

    def __repr__(self):
        return f"SpeedPerturbed({self.base!r}, {self.factor:g})"


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeatureMasks(keras.layers.Layer):
    """Random time and feature masks on (B, T, D, ...) right-padded features, in training only.

    Each of `time_masks` spans is up to `time_width` of the utterance's
    valid length (a width drawn uniformly, then a start within the valid
    frames); each of `feature_masks` spans is up to `feature_width` of the
    D dimensions on axis 2. Masked values become 0; padded frames stay 0.

    Args:
        time_masks: int, defaults to 2. time_width: float in [0, 1), defaults to 0.05.
        feature_masks: int, defaults to 2. feature_width: float in [0, 1), defaults to 0.1.
        seed: int or None. The masks' random stream.

    Call arguments:
        inputs: (B, T, D, ...) float tensor. lengths: (B,) valid frame counts.
        training: bool. Masks only when True.
    """

    def __init__(self, time_masks=2, time_width=0.05, feature_masks=2, feature_width=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        for name, width in (("time_width", time_width), ("feature_width", feature_width)):
            if not 0 <= width < 1:
                raise ValueError(f"{name} must be in [0, 1), got {width}")
        self.time_masks = int(time_masks)
        self.time_width = float(time_width)
        self.feature_masks = int(feature_masks)
        self.feature_width = float(feature_width)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _kept(self, count, width, sizes, positions):
        """(B, P) bool: False inside any of `count` random spans of up to `width` x size."""
        batch = ops.shape(sizes)[0]
        sizes = ops.cast(sizes, "float32")[:, None]
        spans = ops.floor(keras.random.uniform((batch, count), seed=self.seed_generator) * width * sizes)
        starts = ops.floor(keras.random.uniform((batch, count), seed=self.seed_generator) * (sizes - spans + 1))
        where = ops.cast(positions, "float32")[None, None, :]
        inside = ops.logical_and(where >= starts[..., None], where < (starts + spans)[..., None])
        return ops.logical_not(ops.any(inside, axis=1))

    def call(self, inputs, lengths, training=None):
        if not training or (self.time_masks == 0 and self.feature_masks == 0):
            return inputs
        batch, frames, dims = ops.shape(inputs)[0], ops.shape(inputs)[1], ops.shape(inputs)[2]
        keep = sequence_mask(lengths, frames)[:, :, None]
        if self.time_masks:
            kept = self._kept(self.time_masks, self.time_width, lengths, ops.arange(frames))
            keep = ops.logical_and(keep, kept[:, :, None])
        if self.feature_masks:
            kept = self._kept(self.feature_masks, self.feature_width, ops.full((batch,), dims), ops.arange(dims))
            keep = ops.logical_and(keep, kept[:, None, :])
        keep = ops.reshape(keep, ops.shape(keep) + (1,) * (len(inputs.shape) - 3))
        return ops.where(keep, inputs, ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "time_masks": self.time_masks,
            "time_width": self.time_width,
            "feature_masks": self.feature_masks,
            "feature_width": self.feature_width,
            "seed": self.seed,
        }
