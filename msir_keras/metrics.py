"""The one metrics module: UAR, WA, F1, sensitivity, specificity, confusion matrices.

The figures are scikit-learn's (tests/oracles.py keeps hand-written numpy
versions, only to check them against). Training, evaluation, the
baselines, the table runner and the notebooks all call these functions,
and `UnweightedAverageRecall` computes the same UAR as a streaming Keras
metric (`val_uar` in the training logs) for early stopping, checkpoints,
TensorBoard and keras-tuner.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def _sklearn():
    """scikit-learn's metrics, imported on first use (a second and more): loading a model needs none."""
    from sklearn import metrics

    return metrics


def _check_ids(y, num_classes, what):
    y = np.asarray(y)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{what} must be class ids in [0, {num_classes - 1}], got {y.min()} .. {y.max()}")


def confusion_matrix(y_true, y_pred, num_classes):
    """Counts, rows the true class, columns the predicted one: scikit-learn's, every class listed."""
    # scikit-learn drops an id outside `labels` without a word: a count must not go missing.
    _check_ids(y_true, num_classes, "y_true")
    _check_ids(y_pred, num_classes, "y_pred")
    return _sklearn().confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))


def uar(y_true, y_pred, num_classes=None):
    """Unweighted average recall: the mean of per-class recalls over the classes in `y_true`.

    scikit-learn's `recall_score(average="macro")` over those classes (so
    equal to its `balanced_accuracy_score`): a class with no example, as a
    test speaker without it, is left out of the mean, not counted as 0.
    `num_classes`, where given, checks the ids.
    """
    if len(y_true) == 0:
        return float("nan")  # no utterance: no figure
    if num_classes is not None:
        _check_ids(y_true, num_classes, "y_true")
        _check_ids(y_pred, num_classes, "y_pred")
    return float(_sklearn().recall_score(y_true, y_pred, labels=np.unique(y_true), average="macro"))


def wa(y_true, y_pred):
    """Weighted accuracy: the plain accuracy."""
    if len(y_true) == 0:
        return float("nan")  # no utterance: no figure
    return float(_sklearn().accuracy_score(y_true, y_pred))


def macro_f1(y_true, y_pred, num_classes=None):
    """scikit-learn's macro F1: the mean of per-class F1 over the classes in the truth or the predictions."""
    if len(y_true) == 0:
        return float("nan")  # no utterance: no figure
    if num_classes is not None:
        _check_ids(y_true, num_classes, "y_true")
        _check_ids(y_pred, num_classes, "y_pred")
    return float(_sklearn().f1_score(y_true, y_pred, average="macro", zero_division=0))


def one_vs_rest(y_true, y_pred, num_classes):
    """(sensitivity, specificity), each (num_classes,), of every class against the others.

    From scikit-learn's `multilabel_confusion_matrix`; NaN for a class with
    no positive (sensitivity) or no negative (specificity) example.
    """
    matrices = _sklearn().multilabel_confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))
    (true_negative, false_positive), (false_negative, true_positive) = matrices.transpose(1, 2, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (true_positive / (true_positive + false_negative),
                true_negative / (true_negative + false_positive))


def _f1_per_class(y_true, y_pred, num_classes):
    return _sklearn().f1_score(y_true, y_pred, labels=np.arange(num_classes), average=None, zero_division=0)


def classification_report(y_true, y_pred, class_names):
    """C-class figures: uar, wa, macro_f1, confusion, and per class recall, f1,
    sensitivity and specificity (one-vs-rest).

    Per-class figures are given for the classes that occur in `y_true`; a
    class with no example (a corpus without it) is listed in `absent`, and
    UAR and macro-F1 are means over the classes that occur.
    """
    num_classes = len(class_names)
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    f1 = _f1_per_class(y_true, y_pred, num_classes)
    sensitivity, specificity = one_vs_rest(y_true, y_pred, num_classes)
    per_class, absent = {}, []
    for index, name in enumerate(class_names):
        if matrix[index].sum() == 0:
            absent.append(name)
            continue
        per_class[name] = {
            "sensitivity": float(sensitivity[index]),
            "specificity": float(specificity[index]),
            "f1": float(f1[index]),
            "support": int(matrix[index].sum()),
        }
    return {
        "uar": uar(y_true, y_pred),
        "wa": wa(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        "per_class": per_class,
        "absent": absent,
        "confusion": matrix.tolist(),
        "class_names": list(class_names),
    }


def detection_report(y_true, y_pred):
    """Binary detection figures: sensitivity (TPR), specificity (TNR), their mean
    (the binary UAR), F1 of the positive class, accuracy, the 2x2 confusion."""
    matrix = confusion_matrix(y_true, y_pred, 2)
    sensitivity, specificity = (float(v[1]) for v in one_vs_rest(y_true, y_pred, 2))
    return {
        "sensitivity": sensitivity,
        "specificity": specificity,
        "uar": float(np.nanmean([sensitivity, specificity])),
        "f1": float(_f1_per_class(y_true, y_pred, 2)[1]),
        "wa": wa(y_true, y_pred),
        "confusion": matrix.tolist(),
        "class_names": ["negative", "positive"],
    }


def mean_reports(reports):
    """The mean of numeric figures over folds (nested dicts); confusions are summed.

    A figure missing from some folds (a class absent from their test part)
    is the mean over the folds that have it.
    """
    out = {}
    keys = list(dict.fromkeys(key for r in reports for key in r))
    for key in keys:
        present = [r[key] for r in reports if key in r]
        value = present[0]
        if key == "confusion":
            out[key] = np.sum(present, axis=0).tolist()
        elif isinstance(value, dict):
            out[key] = mean_reports(present)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values = np.array([np.nan if v is None else v for v in present], dtype=float)
            out[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        elif key == "absent":
            out[key] = sorted(set.intersection(*(set(r.get(key, [])) for r in reports)))
        else:
            out[key] = value
    return out


@keras.saving.register_keras_serializable(package="msir_keras")
class UnweightedAverageRecall(keras.metrics.Metric):
    """UAR as a streaming Keras metric: a confusion matrix accumulated over batches.

    Compiled into a model (`metrics=[UnweightedAverageRecall(C)]`), it puts
    `uar` and, with `fit(validation_data=...)`, `val_uar` into the logs, for
    EarlyStopping, ModelCheckpoint, TensorBoard and keras-tuner, without a
    second prediction pass. The matrix is a metric variable summed across
    replicas, so the figure is right under a distribution strategy. Equal to
    `uar` (and scikit-learn's `balanced_accuracy_score`) over the same
    examples; classes with no example are left out of the mean.

    Args:
        num_classes: int. Labels are sparse class ids; predictions are
            (B, num_classes) probabilities or logits.
        name: str, defaults to "uar".
    """

    def __init__(self, num_classes, name="uar", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        self.confusion = self.add_variable(
            shape=(self.num_classes, self.num_classes), initializer="zeros", dtype="float32",
            aggregation="sum", name="confusion",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        truth = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), self.num_classes)
        predicted = ops.one_hot(ops.argmax(ops.reshape(y_pred, (-1, self.num_classes)), axis=-1),
                                self.num_classes)
        if sample_weight is not None:
            truth = truth * ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1))
        self.confusion.assign_add(ops.matmul(ops.transpose(truth), predicted))

    def result(self):
        support = ops.sum(self.confusion, axis=1)
        present = ops.cast(support > 0, "float32")
        recall = ops.diagonal(self.confusion) / ops.maximum(support, 1.0)
        return ops.sum(recall * present) / ops.maximum(ops.sum(present), 1.0)

    def reset_state(self):
        self.confusion.assign(ops.zeros(self.confusion.shape, dtype=self.confusion.dtype))  # any backend

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name, "dtype": self.dtype}
