import numpy as np
import pytest

import oracles

from msir_keras.batches import pad_batch
from msir_keras.data import FeatureSet
from msir_keras.features import branch_extractors

RNG = np.random.default_rng(4)


def _set(lengths, labels=None):
    return FeatureSet(
        {
            "logmel": [RNG.normal(size=(n, 40, 2)).astype("float32") for n in lengths],
            "lld": [RNG.normal(2, 3, size=(n, 195)).astype("float32") for n in lengths],
        },
        labels,
    )


def test_normalization_is_fitted_on_the_given_part_only(emodb, emodb_store):
    table = emodb.utterances
    data = FeatureSet.from_store(emodb_store, table["path"].tolist(), branch_extractors())
    train = np.arange(0, len(table), 2)
    statistics = data.subset(train).fit_normalization()
    frames = np.concatenate([data.features["lld"][i] for i in train])
    np.testing.assert_allclose(statistics["lld"][0], frames.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(statistics["lld"][1], np.where(frames.std(0) > 1e-6, frames.std(0), 1), rtol=1e-3)
    logmel = np.concatenate([data.features["logmel"][i] for i in train])
    assert statistics["logmel"][0].shape == (40, 2)
    np.testing.assert_allclose(statistics["logmel"][0], logmel.mean(0), rtol=1e-4, atol=1e-4)
    everything = data.fit_normalization()
    assert not np.allclose(everything["lld"][0], statistics["lld"][0])


def test_batches_are_padded_right_with_zeros_as_the_numpy_oracle(emodb):
    """Utterances of EmoDB's lengths (10 ms frames) padded by Keras's pad_sequences: to the longest, to JAX's
    multiple of 32 frames, never cut; log-Mel planes and float64 input alike."""
    import soundfile

    from msir_keras.data import JAX_PAD_TO

    paths = emodb.utterances["path"].tolist()[:12]
    frames = [int(soundfile.info(p).duration * 100) for p in paths]
    logmel = [RNG.normal(size=(n, 40, 2)).astype("float32") for n in frames]
    lld = [RNG.normal(size=(n, 195)) for n in frames]  # float64: cast
    for arrays in (logmel, lld):
        batch = pad_batch(arrays)
        assert batch.dtype == np.float32 and batch.shape[:2] == (12, max(frames))
        np.testing.assert_array_equal(batch, oracles.pad_batch(arrays))
        rounded = -(-max(frames) // JAX_PAD_TO) * JAX_PAD_TO
        np.testing.assert_array_equal(pad_batch(arrays, rounded), oracles.pad_batch(arrays, rounded))
        with pytest.raises(ValueError, match="never cuts"):
            pad_batch(arrays, max(frames) - 1)
    padded = FeatureSet({"lld": lld}, np.zeros(12, int)).batches(4, shuffle=False, pad_to=JAX_PAD_TO)
    for index in range(len(padded)):
        rows = padded.batches[index]
        batch = padded[index][0]["lld"]
        assert batch.shape[1] % JAX_PAD_TO == 0
        np.testing.assert_array_equal(batch, oracles.pad_batch([lld[i] for i in rows], batch.shape[1]))
    functionals = [RNG.normal(size=88) for _ in range(3)]
    np.testing.assert_array_equal(pad_batch(functionals), np.stack(functionals).astype("float32"))


def _batches(dataset):
    return [labels.numpy().tolist() for _, labels in dataset]


def test_buckets_cut_padding_and_the_batch_order_follows_seed_and_epoch():
    lengths = RNG.integers(50, 800, size=300)
    data = _set(lengths, labels=np.arange(300))
    assert data.padded_fraction(32) < 0.5 * data.padded_fraction(32, bucketing=False)
    # Two trials with the same seed see the same batches, epoch by epoch; a new epoch regroups.
    first, again = data.pipeline(32, seed=3), data.pipeline(32, seed=3)
    epochs = [_batches(first), _batches(first)]
    assert epochs == [_batches(again), _batches(again)]
    assert epochs[0] != epochs[1]
    assert _batches(data.pipeline(32, seed=4)) != epochs[0]
    assert sorted(sum(epochs[0], [])) == list(range(300))


def test_the_pipeline_yields_each_utterance_once_per_epoch_with_its_label():
    lengths = RNG.integers(5, 60, size=37)
    data = _set(lengths, labels=np.arange(37) % 4)
    dataset = data.pipeline(batch_size=8, seed=1)
    for _ in range(2):
        seen = []
        for inputs, labels in dataset:
            for name in ("logmel", "lld"):
                assert inputs[name].shape[0] == labels.shape[0]
            lld = inputs["lld"].numpy()
            for row, label in zip(lld, labels.numpy()):
                n = int(np.max(np.nonzero(np.any(row != 0, axis=-1))[0])) + 1
                match = [i for i in range(37) if lengths[i] == n and np.allclose(data.features["lld"][i], row[:n])]
                assert len(match) == 1 and data.labels[match[0]] == label
                seen.append(match[0])
        assert sorted(seen) == list(range(37))
    with pytest.raises(ValueError, match="labels"):
        _set([3, 4]).pipeline()


def test_batches_of_equal_length_first_do_not_fix_the_time_axis():
    """Keras's own PyDataset adapter takes its shapes from the first two batches: equal lengths there
    would fix the time axis and fail on the first longer batch. The pipeline leaves it open."""
    import keras

    data = FeatureSet({"lld": [np.ones((n, 3), np.float32) for n in (10, 10, 10, 10, 12, 12)]}, np.zeros(6, int))
    inputs = keras.Input((None, 3), name="lld")
    model = keras.Model({"lld": inputs}, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling1D()(inputs)))
    model.compile("adam", "sparse_categorical_crossentropy")
    assert [len(r) for r in data.batches(2, shuffle=False).batches] == [2, 2, 2]
    history = model.fit(data.pipeline(2, shuffle=False), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.predict(data.pipeline(2, shuffle=False, with_labels=False), verbose=0).shape == (6, 2)


def test_predict_returns_rows_in_the_sets_order():
    class Echo:
        """Stands in for a model: 'predicts' each utterance's length."""

        def predict(self, dataset, verbose=0):
            outs = []
            for (inputs,) in dataset:
                x = inputs["lld"].numpy()
                outs.extend([[np.max(np.nonzero(np.any(r != 0, -1))[0]) + 1] for r in x])
            return np.array(outs, dtype="float32")

    lengths = RNG.integers(5, 60, size=21)
    np.testing.assert_array_equal(_set(lengths).predict(Echo(), batch_size=4)[:, 0], lengths)


def test_data_parallel_batches_split_evenly_over_the_devices():
    """Training batches keep a multiple of the devices; evaluation batches are filled with rows that weigh 0."""
    from msir_keras.batches import BucketedBatches

    rng = np.random.default_rng(0)
    data = FeatureSet({"lld": [rng.normal(size=(n, 3)).astype(np.float32) for n in rng.integers(3, 30, 23)]},
                      rng.integers(0, 4, 23))
    training = BucketedBatches(data, 8, shuffle=True, replicas=3)
    assert all(len(training[i][1]) % 3 == 0 for i in range(len(training)))
    evaluation = BucketedBatches(data, 8, shuffle=False, replicas=3)
    weights = np.concatenate([evaluation[i][2] for i in range(len(evaluation))])
    assert all(len(evaluation[i][1]) % 3 == 0 for i in range(len(evaluation)))
    assert weights.sum() == data.size and set(weights) == {0.0, 1.0}
    # tf.distribute splits uneven batches itself after an even first one: nothing filled, the first cut.
    for size in (5, 17):
        part = data.subset(range(size))
        cut = BucketedBatches(part, 8, shuffle=False, replicas=3, fill=False)
        sizes = [len(cut[i][1]) for i in range(len(cut))]
        assert sizes[0] % 3 == 0 and sum(sizes) == size and all(len(cut[i]) == 2 for i in range(len(cut)))


def test_a_pipeline_lets_its_features_go_once_its_datasets_are_gone():
    """tf.data keeps generators registered after their dataset is gone: the features must not stay with them
    (a process training fold after fold, or reproduce's rows, would hold every fold's features)."""
    import gc
    import weakref

    import keras

    inputs = keras.Input((None, 3), name="lld")
    model = keras.Model({"lld": inputs}, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling1D()(inputs)))
    model.compile("adam", "sparse_categorical_crossentropy")
    data = FeatureSet({"lld": [np.ones((n, 3), np.float32) for n in range(3, 23)]}, np.arange(20) % 2)
    alive = weakref.ref(data)
    model.fit(data.pipeline(4).repeat(2), epochs=1, steps_per_epoch=10, shuffle=False, verbose=0)  # a chain
    assert data.predict(model, 4).shape == (20, 2)
    del data
    gc.collect()
    assert alive() is None
