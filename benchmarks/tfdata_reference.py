"""The tf.data input pipeline msir-keras trained on under TensorFlow until the neutral one replaced it.

Kept here as the reference `benchmarks/train.py` measures the package's
pipeline (`FeatureSet.pipeline`: Keras PyDataset batches, on every backend)
against: ragged tensors from `from_tensor_slices`, length buckets cut in the
graph, `padded_batch`, prefetch. `bucketing=False` pads every batch to the
set's longest utterance.
"""

import numpy as np
import tensorflow as tf


def _dense_element(features, *label):
    dense = {name: value.to_tensor() if isinstance(value, tf.RaggedTensor) else value
             for name, value in features.items()}
    return (dense, *label)


def _multiple_of(batch, first, replicas):
    size = tf.shape(batch[0][first])[0]
    keep = size - size % replicas
    return tf.nest.map_structure(lambda tensor: tensor[:keep], batch)


def _length_buckets(dataset, first, size, batch_size, bucket_batches, seed, replicas):
    """Shuffled elements -> windows sorted by length, cut into batches, batches shuffled; in the graph."""
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


def tfdata_dataset(data, batch_size=64, shuffle=True, seed=0, bucketing=True, with_labels=True, bucket_batches=8,
                   replicas=1):
    """`data` (a FeatureSet) as a tf.data.Dataset of ({name: padded batch}, labels), built in the graph.

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
            length, in the order `data.prediction_order()` gives (deterministic,
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
    if with_labels and data.labels is None:
        raise ValueError("this FeatureSet has no labels; pass with_labels=False")
    order = np.arange(data.size) if shuffle else data.prediction_order(bucketing)
    inputs = {}
    for name, arrays in data.features.items():
        flat = np.concatenate([arrays[i] for i in order]).astype(np.float32, copy=False)
        inputs[name] = tf.RaggedTensor.from_row_lengths(flat, [len(arrays[i]) for i in order])
    elements = (inputs, data.labels[order]) if with_labels else (inputs,)
    # Each element's slice of a ragged tensor is itself a (non-ragged) RaggedTensor: make it dense.
    dataset = tf.data.Dataset.from_tensor_slices(elements).map(_dense_element)
    if shuffle:
        dataset = dataset.shuffle(data.size, seed=seed, reshuffle_each_iteration=True)
    first = data.sequence_name
    longest = {name: max(len(a) for a in arrays) for name, arrays in data.features.items()}
    if shuffle and bucketing:
        dataset = _length_buckets(dataset, first, data.size, batch_size, bucket_batches, seed, replicas)
    else:
        shapes = {
            name: [None if bucketing else longest[name], *arrays[0].shape[1:]]
            for name, arrays in data.features.items()
        }
        padded = (shapes, []) if with_labels else (shapes,)
        head = data.size - data.size % replicas
        if replicas > 1 and data.size < batch_size and 0 < head < data.size:
            # Keras splits a step over the replicas as its first batch splits: that one must split evenly.
            dataset = dataset.take(head).padded_batch(batch_size, padded_shapes=padded).concatenate(
                dataset.skip(head).padded_batch(batch_size, padded_shapes=padded))
        else:
            dataset = dataset.padded_batch(batch_size, padded_shapes=padded)
    return dataset.prefetch(tf.data.AUTOTUNE)
