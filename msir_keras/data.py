"""Features in memory and their input pipeline: z-score statistics, per-batch padding, length buckets.

Features are loaded from the store into memory once (`FeatureSet`). The
input pipeline is a Keras PyDataset (`msir_keras.batches`) on every backend:
batches are right-padded with zeros to their own longest utterance; the
model derives each utterance's length (and so its masks) from that padding.
Utterances of similar length share a batch (windows of shuffled utterances
sorted by length), so batches carry little padding, while the order is
shuffled every epoch. It replaced a tf.data pipeline, which trained slower
on TensorFlow-CPU (benchmarks/train.py; that pipeline is kept there as the
reference).
"""

from __future__ import annotations

import numpy as np

from msir_keras.features.store import FeatureStore

# Under JAX, batches are padded to a multiple of this many frames: JAX compiles a program per shape.
JAX_PAD_TO = 32


class FeatureSet:
    """The features of a list of utterances, in memory, by model input name.

    Args:
        features: dict {input name: list of (T_i, ...) float32 arrays}.
        labels: (N,) int array or None.

    Example:
    >>> data = FeatureSet.from_store(store, paths, extractors, labels)  # doctest: +SKIP
    >>> model.fit(data.subset(train).pipeline(64), epochs=10)  # doctest: +SKIP
    """

    def __init__(self, features, labels=None):
        self.features = {name: list(arrays) for name, arrays in features.items()}
        sizes = {len(arrays) for arrays in self.features.values()}
        if len(sizes) != 1:
            raise ValueError(f"inputs hold different numbers of utterances: {sizes}")
        self.size = sizes.pop()
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and len(self.labels) != self.size:
            raise ValueError(f"{len(self.labels)} labels for {self.size} utterances")

    @classmethod
    def from_store(cls, store, paths, extractors, labels=None):
        """Loads the features of `paths` made by `extractors` ({input name: Extractor})."""
        if not isinstance(store, FeatureStore):
            store = FeatureStore(store)
        features = {name: store.load_many(paths, e) for name, e in extractors.items()}
        return cls(features, labels)

    def __len__(self):
        return self.size

    @property
    def names(self):
        return list(self.features)

    def subset(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        return FeatureSet(
            {name: [arrays[i] for i in rows] for name, arrays in self.features.items()},
            None if self.labels is None else self.labels[rows],
        )

    def select(self, names):
        """The same utterances with only the inputs `names` (e.g. a model's), in that order."""
        missing = [name for name in names if name not in self.features]
        if missing:
            raise ValueError(f"this FeatureSet has no input(s) {missing}; it has {self.names}")
        return FeatureSet({name: self.features[name] for name in names}, self.labels)

    def with_labels(self, labels):
        return FeatureSet(self.features, labels)

    def concatenate(self, *others):
        """This set followed by `others` (same inputs; all labelled or none)."""
        sets = [self, *others]
        if any(set(s.names) != set(self.names) for s in sets):
            raise ValueError(f"cannot join feature sets of different inputs: {[s.names for s in sets]}")
        labelled = {s.labels is not None for s in sets}
        if len(labelled) > 1:
            raise ValueError("cannot join labelled and unlabelled feature sets")
        features = {name: [a for s in sets for a in s.features[name]] for name in self.names}
        labels = np.concatenate([s.labels for s in sets]) if labelled == {True} else None
        return FeatureSet(features, labels)

    def frame_shapes(self):
        """{input name: the shape of one frame}, e.g. {"logmel": (40, 2), "lld": (195,)}."""
        return {name: arrays[0].shape[1:] for name, arrays in self.features.items()}

    @property
    def sequence_name(self):
        """The input whose frame counts are the bucketing key: the first sequence (not a (D,) vector)."""
        return next((name for name, arrays in self.features.items() if arrays and arrays[0].ndim > 1),
                    self.names[0])

    def lengths(self):
        """Frames per utterance of `sequence_name` (the bucketing key)."""
        return np.array([len(a) for a in self.features[self.sequence_name]])

    def fit_normalization(self):
        """Per-dimension mean and standard deviation over every frame of every utterance.

        Call it on the training part only. Returns {input name: (mean, std)};
        a constant dimension gets std 1. An input of one vector per
        utterance (functionals, (D,)) counts each as one frame.
        """
        statistics = {}
        for name, arrays in self.features.items():
            arrays = [a[None] if a.ndim == 1 else a for a in arrays]
            count = sum(len(a) for a in arrays)
            total = sum(a.sum(axis=0, dtype=np.float64) for a in arrays)
            mean = total / count
            square = sum(((a - mean) ** 2).sum(axis=0, dtype=np.float64) for a in arrays)
            std = np.sqrt(square / count)
            std = np.where(std > 1e-6, std, 1.0)
            statistics[name] = (mean.astype(np.float32), std.astype(np.float32))
        return statistics

    def batches(self, batch_size=64, shuffle=True, seed=0, with_labels=True, bucket_batches=8, pad_to=1,
                **kwargs):
        """Length-bucketed, padded batches as a `keras.utils.PyDataset` of numpy arrays (any Keras backend).

        See `msir_keras.batches.BucketedBatches`; `pad_to` rounds each batch's
        frames up to a multiple (fewer shapes for JAX to compile).
        """
        from msir_keras.batches import BucketedBatches

        return BucketedBatches(self, batch_size, shuffle=shuffle, seed=seed, bucket_batches=bucket_batches,
                               with_labels=with_labels, pad_to=pad_to, **kwargs)

    def pipeline(self, batch_size=64, shuffle=True, seed=0, with_labels=True, replicas=1):
        """The input pipeline for `model.fit`, `evaluate` and `predict` on Keras's backend.

        The same `batches` on every backend. Under TensorFlow they enter as a
        tf.data.Dataset whose time axis is left open
        (`batches.tensorflow_dataset`), which `tf.distribute` strategies split
        by themselves; under JAX, batches are padded to a multiple of 32
        frames (`JAX_PAD_TO`).

        Args:
            batch_size: int, defaults to 64 (the paper's). The global batch.
            shuffle: bool, defaults to True. False: sorted by length, for evaluation and prediction.
            seed: int, defaults to 0. Each epoch's order is a function of it and the epoch alone.
            with_labels: bool, defaults to True.
            replicas: int, defaults to 1. Devices a batch is split over (see `BucketedBatches`:
                under TensorFlow evaluation batches are cut, elsewhere filled).
        """
        import keras

        from msir_keras.batches import tensorflow_dataset

        backend = keras.backend.backend()
        batches = self.batches(batch_size, shuffle=shuffle, seed=seed, with_labels=with_labels,
                               pad_to=JAX_PAD_TO if backend == "jax" else 1, replicas=replicas,
                               fill=backend != "tensorflow")
        return tensorflow_dataset(batches) if backend == "tensorflow" else batches

    def dataset(self, batch_size=64, shuffle=True, seed=0, with_labels=True, replicas=1):
        """`pipeline` under its former name (a tf.data.Dataset under TensorFlow): kept for old code."""
        import warnings

        warnings.warn("FeatureSet.dataset is FeatureSet.pipeline now (the same batches on every backend)",
                      DeprecationWarning, stacklevel=2)
        return self.pipeline(batch_size, shuffle=shuffle, seed=seed, with_labels=with_labels, replicas=replicas)

    def padded_fraction(self, batch_size=64, bucketing=True, seed=0):
        """The share of padding in the frames of one training epoch's batches (first sequence input).

        `bucketing=False`: every utterance padded to the set's longest, for comparison.
        """
        lengths = self.lengths()
        if not bucketing:
            return 1.0 - lengths.sum() / (len(lengths) * lengths.max())
        rows = self.batches(batch_size, shuffle=True, seed=seed, with_labels=False).batches
        return 1.0 - lengths.sum() / sum(len(r) * lengths[r].max() for r in rows)

    def prediction_order(self, bucketing=True):
        """The order `pipeline(shuffle=False)` yields: by length (stable), or as given."""
        if not bucketing:
            return np.arange(self.size)
        return np.argsort(self.lengths(), kind="stable")

    def predict(self, model, batch_size=64):
        """Class probabilities (N, C) of every utterance, in the set's order."""
        dataset = self.pipeline(batch_size, shuffle=False, with_labels=False)
        probabilities = model.predict(dataset, verbose=0)
        out = np.empty_like(probabilities)
        out[self.prediction_order()] = probabilities
        return out


def __getattr__(name):
    # `pad_batch` was defined here before it moved to `msir_keras.batches`: old imports still find it.
    if name == "pad_batch":
        from msir_keras.batches import pad_batch

        return pad_batch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
