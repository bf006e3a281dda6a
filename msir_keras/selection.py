"""Few-speaker validation: what a fold that trains on one speaker chooses its settings on.

A same-speaker validation score picks what fits that speaker, so such a
fold (for the fused detector: one with fewer speakers than its inner
folds) holds out whole values of another grouping (a `group` or `text`
column: `fusion.GROUP_COLUMNS`) or trains on a fixed budget.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from msir_keras.fusion import GROUP_COLUMNS, grouping_column, selection_groups


ADD_GROUPS = "add a `group` column (e.g. the spoken text) to the manifest to choose on held-out groups"


def no_groups(table, rows):
    """Why a fold's training rows have no grouping to hold out (`fusion.grouping_column` found none)."""
    present = [c for c in GROUP_COLUMNS if c in table]
    if not present:
        return "the corpus has no `group` or `text` column"
    reasons = []
    for column in present:
        values = table[column].iloc[rows]
        blank = int(values.isna().sum())
        reasons.append(f"`{column}` is empty on {blank} of its {len(rows)} training utterances (fill them)" if blank
                       else f"`{column}` has one value among its training utterances")
    return "; ".join(reasons)


def selection_notes(config, table, folds):
    """One line per fold that cannot choose its settings on speakers it did not train on, saying what it does.

    A same-speaker score picks what fits that speaker: on a corpus of two
    speakers (one per training part), MSIR's val_uar reached 1.0 while the
    test speaker got chance. Such folds hold out another grouping (a
    `group` or `text` column: `fusion.GROUP_COLUMNS`) or train on a fixed
    budget (`_without_same_speaker_selection`, `fusion.selection_groups`).
    """
    notes = []
    for fold in folds:
        rows = np.sort(np.concatenate([fold.train, fold.validation]))
        count = table["speaker"].iloc[rows].nunique()
        if config.model == "fusion" and count < config.inner_folds:
            by, _, groups = selection_groups(table, rows, config.inner_folds)
            if by == "speaker":
                notes.append(f"fold {fold.name} trains on {count} speakers, fewer than inner_folds="
                             f"{config.inner_folds}: the fused detector holds out {count} speaker groups")
            elif by is not None:
                notes.append(f"fold {fold.name} trains on one speaker: the fused detector holds out groups of the "
                             f"corpus's `{by}` values instead ({'; '.join(', '.join(g) for g in groups)})")
            else:
                notes.append(f"fold {fold.name} trains on one speaker and {no_groups(table, rows)}: the fused "
                             f"detector trains on a fixed budget ({config.epochs} MSIR epochs, ComParE C=1, equal "
                             f"weights); {ADD_GROUPS}")
        elif config.model != "fusion" and count < 2:
            fold = _without_same_speaker_selection(config, table, fold)
            selection = fold_selection(table, fold)
            what = "MSIR's epoch" if config.model == "msir" else "the SVM's C"
            if selection.get("fixed_budget"):
                budget = f"MSIR trains {config.epochs} epochs (no early stopping)" if config.model == "msir" \
                    else "the SVM takes C=1"
                notes.append(f"fold {fold.name} trains on one speaker and {no_groups(table, rows)}: a fixed "
                             f"budget, {budget}; {ADD_GROUPS}")
            else:
                held = sorted(set(table[selection["held_out"]].iloc[fold.validation].astype(str)))
                notes.append(f"fold {fold.name} trains on one speaker: {what} is chosen on held-out "
                             f"`{selection['held_out']}` values ({', '.join(held)}), not on that speaker's other "
                             "utterances")
    return notes


def fold_selection(table, fold):
    """What a (non-fused) fold with one training speaker validates on: {"held_out": column} or a fixed budget.

    Returns {} for a fold with two training speakers or more.
    """
    rows = np.concatenate([fold.train, fold.validation])
    if table["speaker"].iloc[rows].nunique() >= 2:
        return {}
    if not len(fold.validation):
        return {"held_out": None, "fixed_budget": True}
    return {"held_out": grouping_column(table, np.sort(rows))}


def _without_same_speaker_selection(config, table, fold):
    """A fold whose training part holds one speaker: validation on held-out groups, or none (fixed budget).

    For MSIR and the SVMs (the fused detector holds out groups itself):
    the validation part is made of whole values of `fusion.grouping_column`,
    drawn with the config's seed until they hold a `config.validation`
    share of the utterances (never every value); without such a column it
    is empty, and `engine.fit`
    trains every epoch and keeps the last, `baselines.fit_svm` takes C=1.
    """
    rows = np.sort(np.concatenate([fold.train, fold.validation]))
    if config.model == "fusion" or config.validation <= 0 or table["speaker"].iloc[rows].nunique() >= 2:
        return fold
    column = grouping_column(table, rows)
    if column is None:
        return dataclasses.replace(fold, train=rows, validation=rows[:0])
    keys = table[column].iloc[rows].astype(str).to_numpy()
    values = np.random.default_rng(config.seed).permutation(sorted(set(keys)))
    # Whole values, drawn in turn until they hold the validation share of the utterances (never all values).
    sizes = np.cumsum([np.count_nonzero(keys == value) for value in values[:-1]])
    count = int(np.searchsorted(sizes, config.validation * len(rows))) + 1
    in_validation = np.isin(keys, values[: min(count, len(values) - 1)])
    return dataclasses.replace(fold, train=rows[~in_validation], validation=rows[in_validation])
