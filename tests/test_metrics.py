import keras
import numpy as np
import pytest
from sklearn import metrics as sk

import oracles

from msir_keras import metrics

RNG = np.random.default_rng(1)


SEVEN = ["angry", "boredom", "disgust", "fear", "happy", "neutral", "sad"]


def _emodb_folds(emodb_root, seed=0):
    """(speaker, y_true, y_pred) per EmoDB speaker over the seven emotions: the real class counts (speaker 08
    says nothing in disgust), and predictions as a classifier makes them, right about 70 % of the time and
    otherwise confusing neighbours (angry with happy, boredom with neutral...)."""
    from msir_keras.corpora import load_emodb

    table = load_emodb(emodb_root).utterances
    rng = np.random.default_rng(seed)
    neighbours = np.roll(np.eye(7), 1, axis=1) + np.roll(np.eye(7), -1, axis=1)
    confusion = 0.7 * np.eye(7) + 0.25 * neighbours / 2 + 0.05 / 7
    for speaker, rows in table.groupby("speaker"):
        y_true = rows["label"].map(SEVEN.index).to_numpy()
        y_pred = np.array([rng.choice(7, p=confusion[c] / confusion[c].sum()) for c in y_true])
        yield speaker, y_true, y_pred


def test_classification_figures_match_the_numpy_oracle_on_emodb_folds(emodb_root):
    for speaker, y_true, y_pred in _emodb_folds(emodb_root):
        report = metrics.classification_report(y_true, y_pred, SEVEN)
        matrix = oracles.confusion_matrix(y_true, y_pred, 7)
        assert report["confusion"] == matrix.tolist(), speaker
        assert report["uar"] == pytest.approx(oracles.uar(y_true, y_pred, 7)), speaker
        assert report["wa"] == pytest.approx(np.mean(y_true == y_pred)), speaker
        assert report["macro_f1"] == pytest.approx(oracles.macro_f1(y_true, y_pred, 7)), speaker
        absent = [name for index, name in enumerate(SEVEN) if index not in y_true]
        assert report["absent"] == absent and (speaker != "08" or absent == ["disgust"])
        f1 = oracles.f1_scores(matrix)
        for index, name in enumerate(SEVEN):
            if name in absent:
                continue
            figures = report["per_class"][name]
            sensitivity, specificity = oracles.one_vs_rest(matrix, index)
            assert figures["sensitivity"] == pytest.approx(sensitivity), (speaker, name)
            assert figures["specificity"] == pytest.approx(specificity), (speaker, name)
            assert figures["f1"] == pytest.approx(f1[index]), (speaker, name)
            assert figures["support"] == int(np.sum(y_true == index))


def test_detection_figures_match_the_numpy_oracle_on_emodb_folds(emodb_root):
    for speaker, y_true, y_pred in _emodb_folds(emodb_root, seed=1):
        for emotion in (SEVEN.index("sad"), SEVEN.index("disgust")):
            truth, predicted = (y_true == emotion).astype(int), (y_pred == emotion).astype(int)
            report = metrics.detection_report(truth, predicted)
            matrix = oracles.confusion_matrix(truth, predicted, 2)
            sensitivity, specificity = oracles.one_vs_rest(matrix, 1)
            assert report["confusion"] == matrix.tolist()
            # Speaker 08 has no disgust: sensitivity is undefined (NaN) and the UAR is the specificity.
            np.testing.assert_allclose([report["sensitivity"], report["specificity"]], [sensitivity, specificity])
            assert report["uar"] == pytest.approx(np.nanmean([sensitivity, specificity]))
            assert report["f1"] == pytest.approx(oracles.f1_scores(matrix)[1])
            assert report["wa"] == pytest.approx(np.mean(truth == predicted))


def test_uar_ignores_classes_absent_from_the_truth():
    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1])
    assert metrics.uar(y_true, y_pred, 3) == pytest.approx(oracles.uar(y_true, y_pred, 3)) == 0.75
    with pytest.warns(UserWarning):  # scikit-learn's other name for it agrees
        assert metrics.uar(y_true, y_pred) == pytest.approx(sk.balanced_accuracy_score(y_true, y_pred))


def test_class_ids_outside_the_classes_are_an_error_not_a_dropped_count():
    with pytest.raises(ValueError, match=r"y_pred must be class ids in \[0, 3\], got 0 .. 4"):
        metrics.classification_report(np.array([0, 1]), np.array([0, 4]), list("abcd"))
    with pytest.raises(ValueError, match="y_true"):
        metrics.uar(np.array([-1, 1]), np.array([0, 1]), 2)


def test_mean_reports_averages_numbers_and_sums_confusions():
    a = metrics.detection_report(np.array([0, 1, 1]), np.array([0, 1, 0]))
    b = metrics.detection_report(np.array([0, 1]), np.array([1, 1]))
    mean = metrics.mean_reports([a, b])
    assert mean["sensitivity"] == pytest.approx((0.5 + 1.0) / 2)
    assert mean["confusion"] == (np.array(a["confusion"]) + b["confusion"]).tolist()


def test_streaming_uar_equals_scikit_learn_over_batches():
    y_true = RNG.integers(0, 3, size=90)  # class 3 never occurs: left out of the mean
    y_pred = RNG.integers(0, 4, size=90)
    metric = metrics.UnweightedAverageRecall(4)
    for start in range(0, 90, 32):
        metric.update_state(y_true[start : start + 32], np.eye(4)[y_pred[start : start + 32]])
    assert float(metric.result()) == pytest.approx(sk.balanced_accuracy_score(y_true, y_pred), abs=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_val_uar_reaches_the_training_logs_from_validation_data():
    x = RNG.normal(size=(64, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=[metrics.UnweightedAverageRecall(2)])
    history = model.fit(x[:48], y[:48], validation_data=(x[48:], y[48:]), epochs=2, verbose=0)
    expected = sk.balanced_accuracy_score(y[48:], model.predict(x[48:], verbose=0).argmax(-1))
    assert history.history["val_uar"][-1] == pytest.approx(expected)
