"""tf.data from the feature store: z-score statistics, per-batch padding, length buckets.

Features are loaded from the store into memory once (`FeatureSet`). Batches
are right-padded with zeros to their own longest utterance; the model
derives each utterance's length (and so its masks) from that padding.
Utterances of similar length share a batch (bucketing), so batches carry
little padding, while the order of batches is shuffled every epoch.
"""

from __future__ import annotations

import numpy as np

from msir_keras.features.store import FeatureStore


def pad_batch(arrays, length=None):
    """Stacks (T_i, ...) arrays into (B, T, ...) zeros, right-padded to `length` or the longest."""
    length = length or max(len(a) for a in arrays)
    batch = np.zeros((len(arrays), length, *arrays[0].shape[1:]), dtype=np.float32)
    for row, array in enumerate(arrays):
        batch[row, : len(array)] = array
    return batch


def length_batches(lengths, batch_size, rng=None, bucket_batches=8):
    """Row batches of similar lengths.

    Without `rng`: rows sorted by length, cut into batches (deterministic,
    for prediction). With `rng`: rows shuffled, then sorted by length within
    windows of `bucket_batches` batches, cut, and the batches shuffled: a new
    grouping every epoch, little padding in each batch.
    """
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    order = rng.permutation(len(lengths))
    window = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


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

    def with_labels(self, labels):
        return FeatureSet(self.features, labels)

    def lengths(self):
        """Frames per utterance of the first input (the bucketing key)."""
        return np.array([len(a) for a in next(iter(self.features.values()))])

    def fit_normalization(self):
        """Per-dimension mean and standard deviation over every frame of every utterance.

        Call it on the training part only. Returns {input name: (mean, std)};
        a constant dimension gets std 1.
        """
        statistics = {}
        for name, arrays in self.features.items():
            count = sum(len(a) for a in arrays)
            total = sum(a.sum(axis=0, dtype=np.float64) for a in arrays)
            mean = total / count
            square = sum(((a - mean) ** 2).sum(axis=0, dtype=np.float64) for a in arrays)
            std = np.sqrt(square / count)
            std = np.where(std > 1e-6, std, 1.0)
            statistics[name] = (mean.astype(np.float32), std.astype(np.float32))
        return statistics

    def batch(self, rows, pad_to=None):
        """The padded inputs of `rows`: {name: (B, T, ...)}."""
        return {
            name: pad_batch([arrays[i] for i in rows], None if pad_to is None else pad_to[name])
            for name, arrays in self.features.items()
        }

    def _longest(self):
        return {name: max(len(a) for a in arrays) for name, arrays in self.features.items()}

    def dataset(self, batch_size=64, shuffle=True, seed=0, bucketing=True, with_labels=True):
        """A tf.data.Dataset of ({name: padded batch}, labels).

        Args:
            batch_size: int, defaults to 64 (the paper's).
            shuffle: bool, defaults to True: a new grouping and batch order
                every epoch (seeded). False: batches sorted by length, the
                order `prediction_order()` gives.
            seed: int, defaults to 0.
            bucketing: bool, defaults to True. False pads every batch to
                the longest utterance of the whole set (for comparison).
            with_labels: bool, defaults to True.
        """
        import tensorflow as tf

        if with_labels and self.labels is None:
            raise ValueError("this FeatureSet has no labels; pass with_labels=False")
        rng = np.random.default_rng(seed) if shuffle else None
        lengths = self.lengths()
        pad_to = None if bucketing else self._longest()

        def batches():
            if bucketing:
                groups = length_batches(lengths, batch_size, rng)
            else:
                order = rng.permutation(self.size) if rng is not None else np.arange(self.size)
                groups = [order[i : i + batch_size] for i in range(0, self.size, batch_size)]
            for rows in groups:
                inputs = self.batch(rows, pad_to)
                yield (inputs, self.labels[rows]) if with_labels else (inputs,)

        spec = {
            name: tf.TensorSpec((None, None, *arrays[0].shape[1:]), tf.float32)
            for name, arrays in self.features.items()
        }
        signature = (spec, tf.TensorSpec((None,), tf.int64)) if with_labels else (spec,)
        dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
        # Every epoch yields ceil(N / batch_size) batches; saying so lets Keras count steps.
        count = -(-self.size // batch_size)
        return dataset.apply(tf.data.experimental.assert_cardinality(count)).prefetch(2)

    def prediction_order(self, bucketing=True):
        if not bucketing:
            return np.arange(self.size)
        return np.concatenate(length_batches(self.lengths(), 1))

    def predict(self, model, batch_size=64):
        """Class probabilities (N, C) of every utterance, in the set's order."""
        dataset = self.dataset(batch_size, shuffle=False, with_labels=False)
        probabilities = model.predict(dataset, verbose=0)
        out = np.empty_like(probabilities)
        out[self.prediction_order()] = probabilities
        return out

    def predict_fn(self, batch_size=64):
        """A callable(model) -> (labels, predicted class ids), for `ValidationUAR`."""

        def predict(model):
            return self.labels, self.predict(model, batch_size).argmax(axis=-1)

        return predict
