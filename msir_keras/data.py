"""Features in memory and their input pipelines: z-score statistics, per-batch padding, length buckets.

Under TensorFlow the pipeline is tf.data (below); under JAX and PyTorch it
is a Keras PyDataset making the same batches (`msir_keras.batches`).

Features are loaded from the store into memory once (`FeatureSet`), and
enter tf.data as ragged tensors. Batches are right-padded with zeros to
their own longest utterance; the model derives each utterance's length (and
so its masks) from that padding. Utterances of similar length share a batch
(windows of shuffled utterances sorted by length, in the graph), so batches
carry little padding, while the order is shuffled every epoch.
"""

from __future__ import annotations

import numpy as np

from msir_keras.features.store import FeatureStore

# Under JAX, batches are padded to a multiple of this many frames: JAX compiles a program per shape.
JAX_PAD_TO = 32


def pad_batch(arrays, length=None):
    """Stacks (T_i, ...) arrays into (B, T, ...) float32, right-padded with zeros to `length` or the longest.

    Keras's `pad_sequences` pads; it would also cut an utterance longer than
    `length`, which a batch never does, so such a `length` is an error. One
    (D,) vector per utterance (functionals) stacks into (B, D).
    """
    if arrays[0].ndim == 1:
        return np.stack(arrays).astype(np.float32, copy=False)
    import keras

    longest = max(len(a) for a in arrays)
    if length is not None and length < longest:
        raise ValueError(f"cannot pad utterances of up to {longest} frames to {length}: a batch never cuts one")
    return keras.utils.pad_sequences(arrays, maxlen=longest if length is None else length, dtype="float32",
                                     padding="post", truncating="post")


def _dense_element(features, *label):
    import tensorflow as tf

    dense = {name: value.to_tensor() if isinstance(value, tf.RaggedTensor) else value
             for name, value in features.items()}
    return (dense, *label)


def _multiple_of(batch, first, replicas):
    import tensorflow as tf

    size = tf.shape(batch[0][first])[0]
    keep = size - size % replicas
    return tf.nest.map_structure(lambda tensor: tensor[:keep], batch)


def _length_buckets(dataset, first, size, batch_size, bucket_batches, seed, replicas):
    """Shuffled elements -> windows sorted by length, cut into batches, batches shuffled; in the graph."""
    import tensorflow as tf

    window = batch_size * bucket_batches

    def cut(*window_elements):
        order = tf.argsort(window_elements[0][first].row_lengths(), stable=True)
        ordered = tf.nest.map_structure(lambda t: tf.gather(t, order), window_elements)
        return tf.data.Dataset.from_tensor_slices(ordered).batch(batch_size)

    def pad(*batch):
        return tf.nest.map_structure(lambda t: t.to_tensor() if isinstance(t, tf.RaggedTensor) else t, batch)

    count = (size // window) * bucket_batches + -(-(size % window) // batch_size)
    dataset = dataset.ragged_batch(window).flat_map(cut).map(pad, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.shuffle(count, seed=seed + 1, reshuffle_each_iteration=True)
    if replicas > 1:
        # Replicas take equal shares: a batch is cut to a multiple of their number.
        return dataset.map(lambda *batch: _multiple_of(batch, first, replicas)).filter(
            lambda features, *_: tf.shape(features[first])[0] > 0)
    return dataset.apply(tf.data.experimental.assert_cardinality(count))


class FeatureSet:
    """The features of a list of utterances, in memory, by model input name.

    Args:
        features: dict {input name: list of (T_i, ...) float32 arrays}.
        labels: (N,) int array or None.

    Example:
    >>> data = FeatureSet.from_store(store, paths, extractors, labels)  # doctest: +SKIP
    >>> model.fit(data.subset(train).dataset(64), epochs=10)  # doctest: +SKIP
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

    def _longest(self):
        return {name: max(len(a) for a in arrays) for name, arrays in self.features.items()}

    def dataset(self, batch_size=64, shuffle=True, seed=0, bucketing=True, with_labels=True, bucket_batches=8,
                replicas=1):
        """A tf.data.Dataset of ({name: padded batch}, labels), built in the graph.

        The utterances enter as ragged tensors (`from_tensor_slices` on flat
        arrays with row lengths). Training sets are shuffled (the order of
        epoch k is a function of `seed` and k alone), then bucketed by
        length in the graph: each window of `bucket_batches` batches is
        sorted by length and cut into batches, and the batches are shuffled,
        so every epoch has the same number of batches (Keras counts on it)
        with little padding. Batches are padded to their longest utterance;
        every dataset is prefetched. Keras distributes such a dataset by
        itself under a `tf.distribute` strategy.

        Args:
            batch_size: int, defaults to 64 (the paper's). The global batch.
            shuffle: bool, defaults to True. False: utterances sorted by
                length, in the order `prediction_order()` gives (deterministic,
                for prediction).
            seed: int, defaults to 0. The shuffle's seed.
            bucketing: bool, defaults to True. False pads every batch to
                the longest utterance of the whole set (for comparison).
            with_labels: bool, defaults to True.
            bucket_batches: int, defaults to 8. Batches per window sorted by length.
            replicas: int, defaults to 1. Under a strategy with several
                replicas, training batches hold a multiple of their number
                (the rest of a bucket loses up to replicas - 1 utterances
                that epoch; shuffling picks others each epoch), and an
                evaluation set smaller than one batch is cut into a
                multiple of the replica count and its rest (Keras fails on
                a first batch that does not split evenly).
        """
        import tensorflow as tf

        if with_labels and self.labels is None:
            raise ValueError("this FeatureSet has no labels; pass with_labels=False")
        order = np.arange(self.size) if shuffle else self.prediction_order(bucketing)
        inputs = {}
        for name, arrays in self.features.items():
            flat = np.concatenate([arrays[i] for i in order]).astype(np.float32, copy=False)
            inputs[name] = tf.RaggedTensor.from_row_lengths(flat, [len(arrays[i]) for i in order])
        elements = (inputs, self.labels[order]) if with_labels else (inputs,)
        # Each element's slice of a ragged tensor is itself a (non-ragged) RaggedTensor: make it dense.
        dataset = tf.data.Dataset.from_tensor_slices(elements).map(_dense_element)
        if shuffle:
            dataset = dataset.shuffle(self.size, seed=seed, reshuffle_each_iteration=True)
        first = self.sequence_name
        longest = self._longest()
        if shuffle and bucketing:
            dataset = _length_buckets(dataset, first, self.size, batch_size, bucket_batches, seed, replicas)
        else:
            shapes = {
                name: [None if bucketing else longest[name], *arrays[0].shape[1:]]
                for name, arrays in self.features.items()
            }
            padded = (shapes, []) if with_labels else (shapes,)
            head = self.size - self.size % replicas
            if replicas > 1 and self.size < batch_size and 0 < head < self.size:
                # Keras splits a step over the replicas as its first batch splits: that one must split evenly.
                dataset = dataset.take(head).padded_batch(batch_size, padded_shapes=padded).concatenate(
                    dataset.skip(head).padded_batch(batch_size, padded_shapes=padded))
            else:
                dataset = dataset.padded_batch(batch_size, padded_shapes=padded)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def batches(self, batch_size=64, shuffle=True, seed=0, with_labels=True, bucket_batches=8, pad_to=1,
                **kwargs):
        """The same batches as `dataset`, as a `keras.utils.PyDataset` of numpy arrays (any Keras backend).

        See `msir_keras.batches.BucketedBatches`; `pad_to` rounds each batch's
        frames up to a multiple (fewer shapes for JAX to compile).
        """
        from msir_keras.batches import BucketedBatches

        return BucketedBatches(self, batch_size, shuffle=shuffle, seed=seed, bucket_batches=bucket_batches,
                               with_labels=with_labels, pad_to=pad_to, **kwargs)

    def pipeline(self, batch_size=64, shuffle=True, seed=0, with_labels=True, replicas=1):
        """The input pipeline of Keras's backend: tf.data (`dataset`) under TensorFlow, else `batches`.

        Under JAX, batches are padded to a multiple of 32 frames (`JAX_PAD_TO`).
        """
        import keras

        backend = keras.backend.backend()
        if backend == "tensorflow":
            return self.dataset(batch_size, shuffle=shuffle, seed=seed, with_labels=with_labels, replicas=replicas)
        return self.batches(batch_size, shuffle=shuffle, seed=seed, with_labels=with_labels,
                            pad_to=JAX_PAD_TO if backend == "jax" else 1, replicas=replicas)

    def padded_fraction(self, batch_size=64, bucketing=True, seed=0):
        """The share of padding in the frames of one training epoch's batches (first input)."""
        first = self.sequence_name
        real = padded = 0
        for batch in self.dataset(batch_size, shuffle=True, seed=seed, bucketing=bucketing):
            frames = batch[0][first]
            padded += int(np.prod(frames.shape[:2]))
            real += int(np.count_nonzero(np.any(frames.numpy().reshape(*frames.shape[:2], -1) != 0, axis=-1)))
        return 1.0 - real / padded

    def prediction_order(self, bucketing=True):
        """The order `dataset(shuffle=False)` yields: by length (stable), or as given."""
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
