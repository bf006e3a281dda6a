"""Hand-written numpy versions of what the package now takes from scikit-learn and Keras: test oracles only.

The package computes its figures with scikit-learn (`recall_score`,
`f1_score`, `confusion_matrix`, `multilabel_confusion_matrix`,
`compute_class_weight`) and Keras (`pad_sequences`, `CosineDecay`). These
are the formulas written out from their definitions, kept here, not in the
package, so the tests compare the library calls against an independent
computation on real-looking data (a wrong argument, say a `labels=` that
counts an absent class as recall 0, shows up as a difference).
"""

import math

import numpy as np


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


def uar(y_true, y_pred, num_classes):
    """The mean of per-class recalls over the classes present in `y_true`."""
    return float(np.nanmean(recalls(confusion_matrix(y_true, y_pred, num_classes))))


def f1_scores(matrix):
    """Per-class F1 (0 where precision and recall are both 0)."""
    true_positive = np.diag(matrix).astype(float)
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * true_positive / denominator, 0.0)


def macro_f1(y_true, y_pred, num_classes):
    """The mean of per-class F1 over the classes that occur in the truth or the predictions."""
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    present = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
    return float(np.mean(f1_scores(matrix)[present]))


def one_vs_rest(matrix, positive):
    """(sensitivity, specificity) of class `positive` against the others; NaN where undefined."""
    true_positive = matrix[positive, positive]
    actual_positive = matrix[positive].sum()
    true_negative = matrix.sum() - actual_positive - matrix[:, positive].sum() + true_positive
    actual_negative = matrix.sum() - actual_positive
    sensitivity = true_positive / actual_positive if actual_positive else float("nan")
    specificity = true_negative / actual_negative if actual_negative else float("nan")
    return float(sensitivity), float(specificity)


def pad_batch(arrays, length=None):
    """(T_i, ...) arrays -> (B, T, ...) float32, right-padded with zeros to `length` or the longest."""
    length = length or max(len(a) for a in arrays)
    batch = np.zeros((len(arrays), length, *arrays[0].shape[1:]), dtype=np.float32)
    for row, array in enumerate(arrays):
        batch[row, : len(array)] = array
    return batch


def balanced_class_weights(labels, num_classes):
    """{class id: N / (C x count)}: every class weighs the same in the loss."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=num_classes)
    return {c: len(labels) / (num_classes * counts[c]) for c in range(num_classes)}


def cosine_rate(base, epoch, epochs):
    """The cosine schedule at `epoch` (0-based) of `epochs`: `base` at 0, falling to 0."""
    return 0.5 * base * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))
