"""Raw features to MSIR's backbone inputs: z-scored with training statistics, padding kept at zero."""

from __future__ import annotations

import copy

import keras
from keras import ops

from msir_keras.layers import FrameLengths, MaskFrames, Standardize
from msir_keras.presets import VECTOR_INPUTS


@keras.saving.register_keras_serializable(package="msir_keras")
class MSIRPreprocessor(keras.layers.Layer):
    """The feature configuration and the normalisation of an MSIR task model.

    Raw features in, by input name: sequences (B, T, ...) right-padded with
    zeros, vectors (B, D). Out: the same names, z-scored per dimension with
    statistics fitted on the training part (`set_normalization`), with the
    padded frames zero again so the backbone reads each utterance's length
    from them. Runs in float32 under any precision policy: raw features
    (ComParE LLDs reach about 1e6) overflow float16.

    Unlike keras-hub's preprocessors, this one is a layer of the task
    model's graph: the extractors (openSMILE, wav2vec 2.0) cannot run in
    a graph, but the z-scores can, so a saved or exported model takes the
    features a `Detector` extracts and needs no side file.

    Args:
        input_shapes: {input name: the shape of one frame, or (D,) for a vector input}.
        feature_config: dict or None. The extractor configs the model was
            trained on, by input name (`FeatureExtractor.get_config`): a
            `Detector` extracts with them and refuses features made with others.
    """

    def __init__(self, input_shapes, feature_config=None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.input_shapes = {name: tuple(shape) for name, shape in input_shapes.items()}
        self.feature_config = copy.deepcopy(feature_config) if feature_config else None
        self.standardizers = [Standardize(shape, name=f"{name}_standardize", dtype="float32")
                              for name, shape in self.input_shapes.items()]
        self.lengths = FrameLengths(name="lengths", dtype="float32")
        self.mask = MaskFrames(0.0, name="mask", dtype="float32")

    def build(self, input_shape=None):
        for layer, shape in zip(self.standardizers, self.input_shapes.values()):
            layer.build((None, *shape))
        self.built = True

    def call(self, inputs):
        outputs = {}
        for (name, layer) in zip(self.input_shapes, self.standardizers):
            features = ops.cast(inputs[name], "float32")
            x = layer(features)
            outputs[name] = x if name in VECTOR_INPUTS else self.mask(x, self.lengths(features))
        return outputs

    def compute_output_spec(self, inputs):
        return {name: keras.KerasTensor(inputs[name].shape, dtype="float32") for name in self.input_shapes}

    def set_normalization(self, statistics):
        """Sets the z-score statistics: {input name: (mean, std)} fitted on training data."""
        for name, layer in zip(self.input_shapes, self.standardizers):
            mean, std = statistics[name]
            layer.set_statistics(mean, std)

    def get_normalization(self):
        """{input name: (mean, std)} as numpy arrays, as set by `set_normalization`."""
        return {name: (ops.convert_to_numpy(layer.mean), ops.convert_to_numpy(layer.std))
                for name, layer in zip(self.input_shapes, self.standardizers)}

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)  # always float32
        config.update({"input_shapes": {name: list(shape) for name, shape in self.input_shapes.items()},
                       "feature_config": self.feature_config})
        return config
