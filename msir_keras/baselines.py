"""The paper's baselines: an SVM on utterance-level openSMILE functionals.

scikit-learn `StandardScaler` + `SVC` (linear kernel, balanced class
weights) on ComParE_2016 (6373) or eGeMAPSv02 (88) functionals; C is chosen
by UAR on the validation part (training speakers only), then the SVM is
refitted on training and validation together.
"""

from __future__ import annotations

import numpy as np

from msir_keras.metrics import uar

C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
BASELINES = {"svm-compare": "compare", "svm-egemaps": "egemaps"}


def _svm(c, seed):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(
        StandardScaler(), SVC(C=c, kernel="linear", class_weight="balanced", random_state=seed)
    )


FIXED_C = 1.0  # the C of a fold with no validation part (one training speaker, nothing to hold out)


def fit_svm(x_train, y_train, x_valid, y_valid, c_grid=C_GRID, seed=0):
    """Chooses C on the validation part, refits on train + validation.

    An empty validation part is a fixed budget: C = `FIXED_C`, nothing chosen.

    Returns:
        (fitted pipeline, chosen C, {C: validation UAR}).
    """
    if not len(y_valid):
        return _svm(FIXED_C, seed).fit(x_train, y_train), FIXED_C, {}
    scores = {}
    num_classes = int(max(y_train.max(), y_valid.max())) + 1
    for c in c_grid:
        model = _svm(c, seed).fit(x_train, y_train)
        scores[c] = uar(y_valid, model.predict(x_valid), num_classes)
    best = max(c_grid, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    model = _svm(best, seed).fit(np.concatenate([x_train, x_valid]), np.concatenate([y_train, y_valid]))
    return model, best, scores
