"""Late (score-level) fusion: MSIR's class probabilities with a classifier on openSMILE functionals.

The fused detector of one fold (`train_fused`):

1. The fold's training speakers are dealt into `inner_folds` groups
   (`inner_groups`, genders balanced). For each group, an MSIR model is
   trained on the other groups and early-stopped on this one's val_uar,
   then predicts it: every training utterance gets an out-of-fold MSIR
   probability from a model that never saw its speaker (cross-fitting).
   The members together are the fused detector's MSIR part
   (`MSIREnsemble`: their probabilities averaged).
2. A multinomial logistic regression on z-scored utterance-level
   functionals (ComParE_2016, eGeMAPSv02 or both; scikit-learn) has its
   feature set and C chosen by leave-one-speaker-out UAR over the training
   speakers, and gives its out-of-fold probabilities the same way.

Where a fold trains on fewer speakers than `inner_folds` (a corpus of two
speakers), no choice can be made on unseen speakers, and a same-speaker
score would pick what fits that speaker (validation UAR 1.0, chance on the
test speaker). The groups are then the values of the corpus's `group` or
`text` column (a manifest's `group`, EmoDB's sentence ids), held out in
turn as scikit-learn's group splitters do; without one, the detector
trains on a fixed budget (`selection_groups`, `FIXED_BUDGET`).
3. The fusion weight w (`WEIGHTS`) is the one whose fused out-of-fold
   probabilities, w * MSIR + (1 - w) * functionals, have the best UAR over
   all training utterances (ties: the weight nearest 0.5).
4. The logistic regression is refitted on every training speaker and
   written into Keras layers (`FunctionalsClassifier`); `LateFusion` holds
   both parts and the weight, saves as one `.keras` file and exports as one
   SavedModel.

Test speakers enter none of these steps: they are only predicted, once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from msir_keras.features.base import ConfigError
from msir_keras.metrics import uar

# Functional sets the classifier may use, by the config's `functionals` name.
FUNCTIONAL_SETS = {"compare": ("compare",), "egemaps": ("egemaps",), "both": ("compare", "egemaps")}
C_GRID = (1e-3, 1e-2, 1e-1, 1.0)
WEIGHTS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
# Columns that group utterances for held-out selection where speakers are too few, in order of preference.
GROUP_COLUMNS = ("group", "text")
# The settings of a fold with nothing to hold out: one MSIR model trained for the config's epochs (no early
# stopping), ComParE functionals (the paper's baseline set) with scikit-learn's default C, equal weights.
FIXED_BUDGET = {"functionals": "compare", "C": 1.0, "msir_weight": 0.5}


def inner_groups(speakers, genders, k):
    """Deals training speakers into `k` groups, each gender dealt in turn (sorted ids).

    Args:
        speakers: sequence of speaker ids (the fold's training speakers).
        genders: {speaker: "F" | "M" | other}.
        k: int, at least 2.

    Returns:
        list of k sorted lists of speakers.

    Raises:
        ConfigError: fewer speakers than groups.
    """
    speakers = sorted(set(map(str, speakers)))
    if len(speakers) < k:
        raise ConfigError(f"{len(speakers)} training speaker(s) ({', '.join(speakers)}) cannot make {k} "
                          "speaker-independent selection groups")
    groups = [[] for _ in range(k)]
    turn = 0
    for gender in ("F", "M", None):
        for speaker in speakers:
            known = genders.get(speaker) if genders.get(speaker) in ("F", "M") else None
            if known == gender:
                groups[turn % k].append(speaker)
                turn += 1
    return [sorted(group) for group in groups]


def grouping_column(table, rows, minimum=2):
    """The first of `GROUP_COLUMNS` with a value on every row of `rows` and at least `minimum` values, or None."""
    for column in GROUP_COLUMNS:
        if column in table and table[column].iloc[rows].notna().all() \
                and table[column].iloc[rows].astype(str).nunique() >= minimum:
            return column
    return None


def selection_groups(table, rows, k):
    """How a fold's training rows are held out to choose the fused detector's settings.

    Args:
        table: the corpus's utterance table (speaker, gender, and maybe
            `group` or `text`). rows: the fold's training row positions.
        k: int. The number of groups (`inner_folds`).

    Returns:
        (by, keys, groups): `by` the column held out ("speaker", "group" or
        "text"), `keys` (N,) str, that column's value per table row, and
        `groups` sorted lists of its values. Two or more training speakers
        are dealt by `inner_groups` into k groups (as many as there are
        speakers, if fewer); one speaker holds out the values of
        `grouping_column` instead, dealt in turn into k groups.
        (None, None, None) where neither gives two groups: a fixed budget.
    """
    speakers = table["speaker"].astype(str).to_numpy()
    count = len(set(speakers[rows]))
    if count >= 2:
        genders = table.groupby(table["speaker"].astype(str))["gender"].first().to_dict()
        return "speaker", speakers, inner_groups(speakers[rows], genders, min(k, count))
    column = grouping_column(table, rows, k)
    if column is None:
        return None, None, None
    keys = table[column].astype(str).to_numpy()
    values = sorted(set(keys[rows]))
    return column, keys, [sorted(values[i::k]) for i in range(k)]


def logistic_regression(c):
    """scikit-learn's z-scoring and multinomial logistic regression (L2, inverse strength `c`), unfitted."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


def _speaker_out_of_fold(x, y, speakers, c, num_classes):
    """Leave-one-speaker-out probabilities (N, C) of the logistic regression."""
    out = np.zeros((len(y), num_classes))
    for speaker in np.unique(speakers):
        held = speakers == speaker
        present = np.unique(y[~held])
        if len(present) < 2:  # the other speakers hold one class (a rare emotion): it is all they can say
            out[held, present[0]] = 1.0
            continue
        model = logistic_regression(c).fit(x[~held], y[~held])
        out[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
    return out


def select_functionals(features, y, speakers, num_classes, sets=("compare", "egemaps", "both"), c_grid=C_GRID):
    """Chooses the functional set and C by leave-one-speaker-out UAR on training utterances.

    Args:
        features: {"compare": (N, 6373), "egemaps": (N, 88)} arrays of the training utterances.
        y: (N,) class ids. speakers: (N,) speaker ids, or the values of
            another grouping held out one by one (`selection_groups`).
        sets: names of `FUNCTIONAL_SETS` to try.

    Returns:
        (set name, C, {"<set> C=<c>": UAR}, out-of-fold probabilities (N, C) of the choice).
        Ties go to the smaller set, then to the smaller C (stronger regularisation).
    """
    speakers = np.asarray(speakers)
    if len(np.unique(speakers)) < 2:
        raise ConfigError("choosing the functionals classifier needs at least two training speakers (or groups)")
    scores, best = {}, None
    for name in sets:
        x = np.concatenate([features[part] for part in FUNCTIONAL_SETS[name]], axis=1)
        for c in c_grid:
            probabilities = _speaker_out_of_fold(x, y, speakers, c, num_classes)
            score = uar(y, probabilities.argmax(axis=1), num_classes)
            scores[f"{name} C={c:g}"] = round(score, 4)
            key = (score, -x.shape[1], -c)
            if best is None or key > best[0]:
                best = (key, name, c, probabilities)
    return best[1], best[2], scores, best[3]


def choose_weight(y, msir, functionals, num_classes, weights=WEIGHTS):
    """The MSIR weight w of w * msir + (1 - w) * functionals with the best UAR (ties: nearest 0.5).

    Returns:
        (w, {w: UAR}).
    """
    scores = {float(w): uar(y, (w * msir + (1 - w) * functionals).argmax(axis=1), num_classes) for w in weights}
    best = max(scores, key=lambda w: (round(scores[w], 10), -abs(w - 0.5)))
    return best, {w: round(s, 4) for w, s in scores.items()}


def fit_functionals_classifier(features, y, names, c, class_names):
    """The logistic regression on every training utterance, as a `FunctionalsClassifier` layer.

    Returns:
        (the fitted scikit-learn pipeline, the layer).
    """
    from msir_keras.layers import FunctionalsClassifier

    x = np.concatenate([features[name] for name in names], axis=1)
    pipeline = logistic_regression(c).fit(x, y)
    sizes = [features[name].shape[1] for name in names]
    return pipeline, FunctionalsClassifier.from_sklearn(pipeline, list(names), sizes, len(class_names),
                                                        name="functionals_classifier")


def train_fused(config, table, data, fold, labels, class_names, target, log=print, verbose=0):
    """Trains one fold's late-fusion detector (module doc): members, classifier, weight.

    Args:
        config: ExperimentConfig with model "fusion".
        table: the corpus's utterance table. data: FeatureSet of every input
            (MSIR's and the functionals). fold: Fold. labels: (N,) class ids.

    Returns:
        (LateFusion model, history DataFrame of the members (a `group` column),
        extra report entries (chosen settings, selection scores), a
        DataFrame of the training utterances' out-of-fold probabilities, or
        None on a fixed budget).
    """
    from msir_keras import engine
    from msir_keras.corpora.splits import Fold
    from msir_keras.model import LateFusion, MSIREnsemble

    num_classes = len(class_names)
    train_rows = np.sort(np.concatenate([fold.train, fold.validation]))
    by, keys, groups = selection_groups(table, train_rows, config.inner_folds)
    # The members are MSIR models: their features and stored extractor settings are MSIR's alone.
    member_config = config.for_model("msir")
    msir_data = data.select(list(member_config.extractors()))
    functionals = {name: np.stack([data.features[name][i] for i in train_rows]) for name in FUNCTIONAL_SETS["both"]
                   if name in data.features}
    y = labels[train_rows]
    if by is None:
        return _train_on_fixed_budget(config, member_config, msir_data, functionals, fold, train_rows, labels,
                                      class_names, target, log, verbose)

    members, histories, member_scores = [], [], []
    out_of_fold = np.zeros((len(labels), num_classes))
    for index, group in enumerate(groups):
        held = train_rows[np.isin(keys[train_rows], group)]
        inner = Fold(f"{fold.name}-inner{index + 1}", np.setdiff1d(train_rows, held), held, fold.test)
        for offset in range(config.ensemble):
            seed = config.seed + offset
            model, history = engine.train(member_config, msir_data, inner, labels, class_names, target, seed=seed,
                                          verbose=verbose, name=f"msir_group{index + 1}_seed{seed}")
            probabilities = msir_data.subset(held).predict(model, config.batch_size)
            out_of_fold[held] += probabilities / config.ensemble
            members.append(model)
            histories.append(history.assign(group=index + 1, seed=seed))
            member_scores.append({"group": index + 1, "seed": seed, "held_out": group,
                                  "best_epoch": int(history["val_uar"].idxmax()) + 1,
                                  "val_uar": float(history["val_uar"].max())})
        log(f"    {target} {fold.name}: MSIR on {by}s {', '.join(group)} held out: "
            f"val_uar {np.mean([m['val_uar'] for m in member_scores[-config.ensemble:]]):.3f}")

    candidates = ("compare", "egemaps", "both") if config.functionals == "auto" else (config.functionals,)
    log(f"    {target} {fold.name}: choosing the functionals classifier among {len(candidates) * len(C_GRID)} "
        f"settings, each {by} of {len(set(keys[train_rows]))} held out in turn")
    chosen_set, c, functional_scores, functionals_oof = select_functionals(
        functionals, y, keys[train_rows], num_classes, candidates)
    msir_oof = out_of_fold[train_rows]
    if config.fusion_weight is None:
        weight, weight_scores = choose_weight(y, msir_oof, functionals_oof, num_classes)
    else:
        weight, weight_scores = float(config.fusion_weight), {}
    log(f"    {target} {fold.name}: chosen out of fold ({by}s held out): functionals {chosen_set} "
        f"C={c:g}, MSIR weight {weight:g} (UAR: MSIR {uar(y, msir_oof.argmax(1), num_classes):.3f}, "
        f"functionals {uar(y, functionals_oof.argmax(1), num_classes):.3f}, fused "
        f"{uar(y, (weight * msir_oof + (1 - weight) * functionals_oof).argmax(1), num_classes):.3f})")

    _, classifier = fit_functionals_classifier(functionals, y, FUNCTIONAL_SETS[chosen_set], c, class_names)
    msir = members[0] if len(members) == 1 else MSIREnsemble(members, name="msir_members")
    model = LateFusion(msir, classifier, weight)
    extra = {
        "chosen": {"functionals": chosen_set, "C": c, "msir_weight": weight},
        "selection": {"held_out": by, "groups": groups, "functionals": functional_scores,
                      "msir_weight": {f"{w:g}": s for w, s in weight_scores.items()}},
        "members": member_scores,
        "val_uar": float(np.mean([m["val_uar"] for m in member_scores])),
    }
    selection = pd.DataFrame({
        "path": table["path"].to_numpy()[train_rows],
        "speaker": table["speaker"].astype(str).to_numpy()[train_rows],
        by: keys[train_rows],
        "label": [class_names[i] for i in y],
    })
    for index, name in enumerate(class_names):
        selection[f"msir_p_{name}"] = msir_oof[:, index]
        selection[f"functionals_p_{name}"] = functionals_oof[:, index]
    return model, pd.concat(histories, ignore_index=True), extra, selection


def _train_on_fixed_budget(config, member_config, msir_data, functionals, fold, train_rows, labels, class_names,
                           target, log, verbose):
    """A fold with nothing to hold out: MSIR for the config's epochs on every training row, `FIXED_BUDGET`."""
    from msir_keras import engine
    from msir_keras.corpora.splits import Fold
    from msir_keras.model import LateFusion, MSIREnsemble

    names = FUNCTIONAL_SETS["compare" if config.functionals == "auto" else config.functionals]
    chosen = {"functionals": "compare" if config.functionals == "auto" else config.functionals,
              "C": FIXED_BUDGET["C"],
              "msir_weight": FIXED_BUDGET["msir_weight"] if config.fusion_weight is None else config.fusion_weight}
    everything = Fold(f"{fold.name}-all", train_rows, train_rows[:0], fold.test)
    members, histories = [], []
    for offset in range(config.ensemble):
        seed = config.seed + offset
        model, history = engine.train(member_config, msir_data, everything, labels, class_names, target, seed=seed,
                                      verbose=verbose, name=f"msir_seed{seed}")
        members.append(model)
        histories.append(history.assign(group=0, seed=seed))
    _, classifier = fit_functionals_classifier(functionals, labels[train_rows], names, chosen["C"], class_names)
    msir = members[0] if len(members) == 1 else MSIREnsemble(members, name="msir_members")
    log(f"    {target} {fold.name}: a fixed budget, nothing chosen: MSIR {config.epochs} epochs on every training "
        f"utterance, functionals {chosen['functionals']} C={chosen['C']:g}, MSIR weight {chosen['msir_weight']:g}")
    extra = {"chosen": chosen, "selection": {"held_out": None, "fixed_budget": True}}
    return LateFusion(msir, classifier, chosen["msir_weight"]), pd.concat(histories, ignore_index=True), extra, None


def part_probabilities(model, data, batch_size=64):
    """{"msir": (N, C), "functionals": (N, C)}: each part of a LateFusion model alone on `data` (a FeatureSet)."""
    msir = data.select(model.msir.feature_inputs).predict(model.msir, batch_size)
    vectors = [np.stack(data.features[name]).astype(np.float32) for name in model.classifier.inputs_names]
    from keras import ops

    return {"msir": msir, "functionals": np.asarray(ops.convert_to_numpy(model.classifier(vectors)))}
