"""Length-bucketed, padded batches for Keras on any backend (TensorFlow, JAX, PyTorch).

`BucketedBatches` is a `keras.utils.PyDataset` over a `FeatureSet`: numpy
batches, no TensorFlow, the package's one input pipeline on every backend
(`FeatureSet.pipeline`). A training epoch shuffles the utterances
(each epoch's order is a function of the seed and its number alone), sorts each
window of `bucket_batches` batches by length, cuts it into batches and
shuffles the batches, so every epoch has the same number of batches with
little padding; prediction takes the utterances sorted by length.

Each batch is right-padded with zeros to its longest utterance, or, with
`pad_to` > 1, up to the next multiple of `pad_to` frames: JAX compiles one
program per input shape, and rounding lengths bounds how many it compiles
(the model derives each utterance's length from its padding, so the extra
zeros change no prediction).
"""

from __future__ import annotations

import weakref

import keras
import numpy as np


def pad_batch(arrays, length=None):
    """Stacks (T_i, ...) arrays into (B, T, ...) float32, right-padded with zeros to `length` or the longest.

    Keras's `pad_sequences` pads; it would also cut an utterance longer than
    `length`, which a batch never does, so such a `length` is an error. One
    (D,) vector per utterance (functionals) stacks into (B, D).
    """
    if arrays[0].ndim == 1:
        return np.stack(arrays).astype(np.float32, copy=False)
    longest = max(len(a) for a in arrays)
    if length is not None and length < longest:
        raise ValueError(f"cannot pad utterances of up to {longest} frames to {length}: a batch never cuts one")
    return keras.utils.pad_sequences(arrays, maxlen=longest if length is None else length, dtype="float32",
                                     padding="post", truncating="post")


def bucket_plan(lengths, batch_size, bucket_batches, rng):
    """Row positions of each batch of one shuffled, length-bucketed epoch.

    Args:
        lengths: (N,) frames per utterance. batch_size, bucket_batches: int.
        rng: numpy Generator (shuffles the utterances, then the batches).

    Returns:
        list of int arrays; their number depends on N alone.
    """
    order = rng.permutation(len(lengths))
    window = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


class BucketedBatches(keras.utils.PyDataset):
    """A FeatureSet's batches as a Keras PyDataset (module doc).

    Args:
        data: FeatureSet.
        batch_size: int.
        shuffle: bool, defaults to True. False: sorted by length, in
            `data.prediction_order()`, for prediction.
        seed: int, defaults to 0.
        bucket_batches: int, defaults to 8. Batches per window sorted by length.
        with_labels: bool, defaults to True.
        pad_to: int, defaults to 1. Batches are padded to a multiple of it.
        replicas: int, defaults to 1. Devices each batch is split over. A
            training batch keeps a multiple of `replicas` rows (the rest of
            a batch waits for another epoch's shuffle).
        fill: bool, defaults to True. How an evaluation batch splits over
            `replicas`. True, for `keras.distribution.DataParallel` (JAX),
            where every batch must split evenly: it is filled up with
            copies of its last row that weigh 0 (it then yields sample
            weights too: `val_uar` counts only real rows, while Keras's
            `val_loss` and `val_accuracy` divide by every row, so they read
            low; prediction batches are never filled). False, for
            `tf.distribute`, which splits uneven batches itself but only
            after an even first one: a first batch that does not split
            evenly is cut into its largest even part and the rest, and
            every figure is exact.
        **kwargs: PyDataset's `workers`, `use_multiprocessing`, `max_queue_size`.

    Yields:
        ({input name: (B, T, ...) float32}, (B,) int64 labels), or (inputs,).
    """

    def __init__(self, data, batch_size, shuffle=True, seed=0, bucket_batches=8, with_labels=True, pad_to=1,
                 replicas=1, fill=True, **kwargs):
        super().__init__(**kwargs)
        if with_labels and data.labels is None:
            raise ValueError("this FeatureSet has no labels; pass with_labels=False")
        if data.size == 0:
            raise ValueError("this FeatureSet holds no utterance: there is nothing to batch")
        self.data, self.batch_size, self.shuffle, self.seed = data, batch_size, shuffle, seed
        self.bucket_batches, self.with_labels, self.pad_to = bucket_batches, with_labels, pad_to
        self.replicas, self.fill = replicas, fill
        self.epoch = 0
        self.batches = self._plan()

    def _plan(self):
        if not self.shuffle:
            order = self.data.prediction_order()
            batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            even = len(batches[0]) - len(batches[0]) % self.replicas if batches else 0
            if not self.fill and 0 < even < len(batches[0]):
                batches[:1] = [batches[0][:even], batches[0][even:]]
            return batches
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = bucket_plan(self.data.lengths(), self.batch_size, self.bucket_batches, rng)
        if self.replicas > 1:
            batches = [rows[: len(rows) - len(rows) % self.replicas] for rows in batches]
            batches = [rows for rows in batches if len(rows)]
        return batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, index):
        rows = self.batches[index]
        filled = len(rows)
        if self.fill and self.replicas > 1 and len(rows) % self.replicas and self.with_labels:
            rows = np.concatenate([rows, np.repeat(rows[-1:], self.replicas - len(rows) % self.replicas)])
        inputs = {}
        for name, arrays in self.data.features.items():
            chosen = [arrays[i] for i in rows]
            length = None
            if chosen[0].ndim > 1 and self.pad_to > 1:
                length = -(-max(len(a) for a in chosen) // self.pad_to) * self.pad_to
            inputs[name] = pad_batch(chosen, length)
        if not self.with_labels:
            return (inputs,)
        if self.fill and self.replicas > 1 and not self.shuffle:  # evaluation: the filled rows weigh nothing
            return inputs, self.data.labels[rows], (np.arange(len(rows)) < filled).astype("float32")
        return inputs, self.data.labels[rows]

    def on_epoch_end(self):
        """The next order: shuffled again (training), the same (prediction).

        Keras calls it once before the first epoch too, so fit's epoch k
        takes the plan of `epoch` k + 1; each plan is a function of the seed
        and its number alone, so training is reproducible all the same.
        """
        if self.shuffle:
            self.epoch += 1
            self.batches = self._plan()


def tensorflow_dataset(batches):
    """`batches` (a BucketedBatches) as the tf.data.Dataset Keras's TensorFlow trainer runs.

    Keras's own adapter reads a PyDataset's element shapes from its first
    two batches: two of equal length would fix the time axis, and the first
    longer batch would then fail. This signature leaves the batch and time
    axes open. Each pass starts a new epoch's plan, as Keras's
    `on_epoch_end` does for a PyDataset (once before the first epoch too).

    Args:
        batches: BucketedBatches.

    Returns:
        A tf.data.Dataset of the same batches, with its cardinality, prefetched.
    """
    import tensorflow as tf

    def spec(array, open_axes):
        return tf.TensorSpec((None,) * open_axes + array.shape[open_axes:], tf.as_dtype(array.dtype))

    first = batches[0]
    inputs = {name: spec(value, 2 if value.ndim > 2 else 1) for name, value in first[0].items()}
    signature = (inputs, *(spec(value, 1) for value in first[1:]))

    # tf.data keeps a generator registered after its dataset is gone (tensorflow/tensorflow#57690): the
    # generator holds the batches weakly, the dataset (and every dataset made from it) strongly.
    reference = weakref.ref(batches)

    def epoch():
        current = reference()
        if current is None:
            raise RuntimeError("the batches of this pipeline were freed; keep the dataset FeatureSet.pipeline() "
                               "returned while it is iterated")
        current.on_epoch_end()
        for index in range(len(current)):
            yield current[index]

    dataset = tf.data.Dataset.from_generator(epoch, output_signature=signature)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(batches))).prefetch(tf.data.AUTOTUNE)
    dataset.msir_batches = batches
    return dataset
