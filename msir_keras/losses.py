"""Focal loss (paper eq. 7; Lin et al. 2017) for detection and classification."""

from __future__ import annotations

import keras
from keras import ops

from msir_keras.presets import THETA, ZETA


@keras.saving.register_keras_serializable(package="msir_keras")
class FocalLoss(keras.losses.Loss):
    """Focal loss `-zeta * (1 - p)^theta * log(p)` of the true class's probability p.

    Binary (`y_pred` holds one probability per example, of the positive
    class): the positive class is weighted by `zeta` and the negative one by
    `1 - zeta`, as Keras's `BinaryFocalCrossentropy(apply_class_balancing=True)`.
    Categorical (`y_pred` holds C probabilities, e.g. a softmax): class c is
    weighted by `zeta[c]`, or by `zeta` for every class when it is a number,
    as Keras's `CategoricalFocalCrossentropy(alpha=zeta)`. A detector with a
    2-way softmax takes `zeta=[1 - z, z]` to weight its positive class by z.
    With theta = 0 and zeta = 0.5 this is cross-entropy times 0.5.

    Labels are integer class ids (sparse) or one-hot rows.

    Args:
        zeta: float or list of float, defaults to 0.25. The weighting factor
            (alpha); `alpha=` is accepted too.
        theta: float, defaults to 2.0. The focusing factor (gamma); `gamma=`
            is accepted too.
        from_logits: bool, defaults to False.
        label_smoothing: float, defaults to 0.

    Example:
    >>> loss = FocalLoss(zeta=[0.25, 0.75], theta=2.0)
    >>> float(loss([1, 0], [[0.2, 0.8], [0.9, 0.1]])) > 0
    True
    """

    def __init__(
        self,
        zeta=None,
        theta=None,
        from_logits=False,
        label_smoothing=0.0,
        alpha=None,
        gamma=None,
        reduction="sum_over_batch_size",
        name="focal_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if zeta is not None and alpha is not None:
            raise ValueError("give zeta or its alias alpha, not both")
        if theta is not None and gamma is not None:
            raise ValueError("give theta or its alias gamma, not both")
        zeta = alpha if zeta is None else zeta
        theta = gamma if theta is None else theta
        self.zeta = ZETA if zeta is None else (list(zeta) if isinstance(zeta, (list, tuple)) else float(zeta))
        self.theta = THETA if theta is None else float(theta)
        if self.theta < 0:
            raise ValueError(f"theta (gamma) must be >= 0, got {self.theta}")
        self.from_logits = from_logits
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        epsilon = keras.config.epsilon()
        if y_pred.shape[-1] == 1 or len(y_pred.shape) == 1:
            return self._binary(y_true, y_pred, epsilon)
        classes = y_pred.shape[-1]
        y_true = ops.convert_to_tensor(y_true)
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == classes:
            target = ops.cast(y_true, y_pred.dtype)
        else:
            target = ops.one_hot(ops.reshape(ops.cast(y_true, "int32"), (-1,)), classes, dtype=y_pred.dtype)
        if self.label_smoothing:
            target = target * (1 - self.label_smoothing) + self.label_smoothing / classes
        if self.from_logits:
            probabilities = ops.softmax(y_pred, axis=-1)
            log_p = ops.log_softmax(y_pred, axis=-1)
        else:
            probabilities = ops.clip(y_pred, epsilon, 1 - epsilon)
            log_p = ops.log(probabilities)
        zeta = ops.convert_to_tensor(self.zeta, dtype=y_pred.dtype)
        if isinstance(self.zeta, list) and len(self.zeta) != classes:
            raise ValueError(f"zeta has {len(self.zeta)} weights for {classes} classes")
        weights = zeta * ops.power(1 - probabilities, self.theta)
        return -ops.sum(target * weights * log_p, axis=-1)

    def _binary(self, y_true, y_pred, epsilon):
        if isinstance(self.zeta, list):
            raise ValueError("a binary focal loss takes one zeta, the positive class's weight")
        y_true = ops.reshape(ops.cast(y_true, y_pred.dtype), ops.shape(y_pred))
        if self.label_smoothing:
            y_true = y_true * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        if self.from_logits:
            p = ops.sigmoid(y_pred)
            log_p, log_q = ops.log_sigmoid(y_pred), ops.log_sigmoid(-y_pred)
        else:
            p = ops.clip(y_pred, epsilon, 1 - epsilon)
            log_p, log_q = ops.log(p), ops.log(1 - p)
        positive = self.zeta * ops.power(1 - p, self.theta) * log_p
        negative = (1 - self.zeta) * ops.power(p, self.theta) * log_q
        loss = -(y_true * positive + (1 - y_true) * negative)
        return ops.mean(loss, axis=-1) if len(loss.shape) > 1 else loss

    def get_config(self):
        return {
            **super().get_config(),
            "zeta": self.zeta,
            "theta": self.theta,
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
        }
