"""The one metrics module: UAR, WA, F1, sensitivity, specificity, confusion matrices.

Training, evaluation, the baselines, the table runner and the notebooks all
call these functions, and `UnweightedAverageRecall` computes the same UAR
as a streaming Keras metric (`val_uar` in the training logs) for early
stopping, checkpoints, TensorBoard and keras-tuner.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def confusion_matrix(y_true, y_pred, num_classes):
    """Counts, rows the true class, columns the predicted one."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return matrix


def recalls(matrix):
    """Per-class recall; NaN for a class with no example."""
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(matrix) / support


def uar(y_true, y_pred, num_classes=None):
    """Unweighted average recall: the mean of per-class recalls over present classes.

    Equal to scikit-learn's `balanced_accuracy_score`.
    """
    num_classes = num_classes or int(max(np.max(y_true), np.max(y_pred))) + 1
    return float(np.nanmean(recalls(confusion_matrix(y_true, y_pred, num_classes))))


def wa(y_true, y_pred):
    """Weighted accuracy: the plain accuracy."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def f1_scores(matrix):
    """Per-class F1 from a confusion matrix (0 where precision and recall are both 0)."""
    true_positive = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    denominator = predicted + actual
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * true_positive / denominator, 0.0)


def macro_f1(y_true, y_pred, num_classes=None):
    """Unweighted mean of per-class F1 over the classes that occur (as scikit-learn's average='macro')."""
    num_classes = num_classes or int(max(np.max(y_true), np.max(y_pred))) + 1
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    present = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
    return float(np.mean(f1_scores(matrix)[present]))


def one_vs_rest(matrix, positive):
    """(sensitivity, specificity) of class `positive` against the others."""
    true_positive = matrix[positive, positive]
    actual_positive = matrix[positive].sum()
    true_negative = matrix.sum() - actual_positive - matrix[:, positive].sum() + true_positive
    actual_negative = matrix.sum() - actual_positive
    sensitivity = true_positive / actual_positive if actual_positive else float("nan")
    specificity = true_negative / actual_negative if actual_negative else float("nan")
    return float(sensitivity), float(specificity)


def classification_report(y_true, y_pred, class_names):
    """C-class figures: uar, wa, macro_f1, confusion, and per class recall, f1,
    sensitivity and specificity (one-vs-rest).

    Per-class figures are given for the classes that occur in `y_true`; a
    class with no example (a corpus without it) is listed in `absent`, and
    UAR and macro-F1 are means over the classes that occur.
    """
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    f1 = f1_scores(matrix)
    per_class, absent = {}, []
    for index, name in enumerate(class_names):
        if matrix[index].sum() == 0:
            absent.append(name)
            continue
        sensitivity, specificity = one_vs_rest(matrix, index)
        per_class[name] = {
            "sensitivity": sensitivity,
            "specificity": specificity,
            "f1": float(f1[index]),
            "support": int(matrix[index].sum()),
        }
    return {
        "uar": uar(y_true, y_pred, len(class_names)),
        "wa": wa(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, len(class_names)),
        "per_class": per_class,
        "absent": absent,
        "confusion": matrix.tolist(),
        "class_names": list(class_names),
    }


def detection_report(y_true, y_pred):
    """Binary detection figures: sensitivity (TPR), specificity (TNR), their mean
    (the binary UAR), F1 of the positive class, accuracy, the 2x2 confusion."""
    matrix = confusion_matrix(y_true, y_pred, 2)
    sensitivity, specificity = one_vs_rest(matrix, 1)
    return {
        "sensitivity": sensitivity,
        "specificity": specificity,
        "uar": float(np.nanmean([sensitivity, specificity])),
        "f1": float(f1_scores(matrix)[1]),
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
