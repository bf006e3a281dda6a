"""A learned, softmax-weighted sum of an upstream's hidden states (SUPERB; Yang et al. 2021)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="msir_keras")
class WeightedLayerSum(keras.layers.Layer):
    """sum_l softmax(w)_l * h_l over the L hidden states of a self-supervised upstream.

    SUPERB's downstream recipe: one weight per hidden state (the CNN's
    projection and each transformer block: 13 for a base model), trained
    with the rest of the model, starting equal. Users read the weights to
    see which layers carry emotion (`layer_weights`).

    Args:
        num_layers: int. L, the hidden states stacked on axis 2.

    Call: (B, T, L, H) float tensor -> (B, T, H).

    Example:
    >>> import numpy as np
    >>> layer = WeightedLayerSum(3)
    >>> layer(np.ones((1, 2, 3, 4), "float32")).shape
    (1, 2, 4)
    """

    def __init__(self, num_layers, **kwargs):
        super().__init__(**kwargs)
        self.num_layers = int(num_layers)

    def build(self, input_shape):
        if input_shape[-2] is not None and input_shape[-2] != self.num_layers:
            raise ValueError(f"expected {self.num_layers} hidden states on axis 2, got {input_shape[-2]}")
        self.layer_logits = self.add_weight(name="layer_logits", shape=(self.num_layers,), initializer="zeros")

    def call(self, inputs):
        weights = ops.cast(ops.softmax(self.layer_logits), inputs.dtype)
        return ops.einsum("btlh,l->bth", inputs, weights)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:2], input_shape[-1])

    def layer_weights(self):
        """The softmax weights, (L,) numpy, in hidden-state order (0: the CNN's projection)."""
        logits = ops.convert_to_numpy(self.layer_logits).astype(np.float64)
        weights = np.exp(logits - logits.max())
        return weights / weights.sum()

    def get_config(self):
        return {**super().get_config(), "num_layers": self.num_layers}
