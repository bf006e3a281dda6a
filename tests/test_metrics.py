import keras
import numpy as np
import pytest
from sklearn import metrics as sk

from msir_keras import metrics

RNG = np.random.default_rng(1)


@pytest.mark.parametrize("seed", range(5))
def test_classification_figures_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.uniform(size=200) < 0.6, y_true, rng.integers(0, 4, 200))
    report = metrics.classification_report(y_true, y_pred, ["angry", "happy", "neutral", "sad"])
    assert report["uar"] == pytest.approx(sk.balanced_accuracy_score(y_true, y_pred))
    assert report["wa"] == pytest.approx(sk.accuracy_score(y_true, y_pred))
    assert report["macro_f1"] == pytest.approx(sk.f1_score(y_true, y_pred, average="macro"))
    assert report["confusion"] == sk.confusion_matrix(y_true, y_pred).tolist()
    for index, name in enumerate(["angry", "happy", "neutral", "sad"]):
        positive, predicted = y_true == index, y_pred == index
        assert report["per_class"][name]["sensitivity"] == pytest.approx(sk.recall_score(positive, predicted))
        assert report["per_class"][name]["specificity"] == pytest.approx(sk.recall_score(~positive, ~predicted))


def test_detection_figures_match_scikit_learn():
    y_true = RNG.integers(0, 2, 300)
    y_pred = np.where(RNG.uniform(size=300) < 0.7, y_true, 1 - y_true)
    report = metrics.detection_report(y_true, y_pred)
    assert report["sensitivity"] == pytest.approx(sk.recall_score(y_true, y_pred, pos_label=1))
    assert report["specificity"] == pytest.approx(sk.recall_score(y_true, y_pred, pos_label=0))
    assert report["uar"] == pytest.approx(sk.balanced_accuracy_score(y_true, y_pred))
    assert report["f1"] == pytest.approx(sk.f1_score(y_true, y_pred))


def test_uar_ignores_classes_absent_from_the_truth_as_scikit_learn_does():
    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1])
    with pytest.warns(UserWarning):
        expected = sk.balanced_accuracy_score(y_true, y_pred)
    assert metrics.uar(y_true, y_pred, 3) == pytest.approx(expected)


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
