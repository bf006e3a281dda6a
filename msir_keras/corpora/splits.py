"""Speaker-independent splits: train / validation / test row indices of a table.

Every split keeps test speakers out of training and validation, and draws the
validation part from the training speakers only: model selection never sees
a test speaker.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Fold:
    """Row positions (into a corpus table) of one fold's three parts."""

    name: str
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    def to_dict(self, table=None):
        out = {"name": self.name}
        for part in ("train", "validation", "test"):
            rows = getattr(self, part)
            out[part] = int(len(rows))
            if table is not None:
                out[f"{part}_speakers"] = sorted(map(str, set(table["speaker"].iloc[rows])))
        return out


def _validation_from(table, train, fraction, seed, by):
    """Splits training rows into (train, validation), both from training speakers.

    by="utterances": a label-stratified `fraction` of the training rows.
    by="speakers": whole training speakers (about `fraction` of them, at least
    one; one of each gender where genders are known).
    """
    rng = np.random.default_rng(seed)
    if fraction <= 0:
        return train, train[:0]
    if by == "speakers":
        speakers = sorted(set(table["speaker"].iloc[train]))
        count = max(1, int(round(fraction * len(speakers))))
        genders = table.iloc[train].groupby("speaker")["gender"].first()
        held = []
        for gender in ("F", "M"):
            pool = [s for s in speakers if genders.get(s) == gender]
            if pool and len(held) < count:
                held.append(pool[rng.integers(len(pool))])
        rest = [s for s in speakers if s not in held]
        rng.shuffle(rest)
        held += rest[: count - len(held)]
        in_validation = table["speaker"].iloc[train].isin(held).to_numpy()
        return train[~in_validation], train[in_validation]
    if by != "utterances":
        raise ValueError(f"validation must be drawn by 'utterances' or 'speakers', got {by!r}")
    labels = table["label"].iloc[train].to_numpy()
    validation = []
    for label in sorted(set(labels)):
        rows = train[labels == label]
        rows = rows[rng.permutation(len(rows))]
        validation.extend(rows[: int(round(fraction * len(rows)))])
    validation = np.sort(np.asarray(validation, dtype=np.int64))
    return np.setdiff1d(train, validation), validation


def _fold(table, name, test_mask, validation, seed, by):
    rows = np.arange(len(table))
    train, valid = _validation_from(table, rows[~test_mask], validation, seed, by)
    return Fold(name, train, valid, rows[test_mask])


def session_independent(table, test_sessions=(5,), validation=0.2, seed=0, by="utterances"):
    """The paper's split: sessions 1-4 train, session 5 test (IEMOCAP)."""
    if table["session"].isna().all():
        raise ValueError("this corpus has no sessions; use leave_speakers_out")
    mask = table["session"].isin(test_sessions).to_numpy()
    if not mask.any():
        raise ValueError(f"no utterance in test session(s) {list(test_sessions)}")
    name = "test-session-" + "-".join(map(str, test_sessions))
    return [_fold(table, name, mask, validation, seed, by)]


def leave_one_session_out(table, validation=0.2, seed=0, by="utterances"):
    """One fold per session, that session as test."""
    sessions = sorted(set(table["session"].dropna()))
    if len(sessions) < 2:
        raise ValueError("leave-one-session-out needs at least two sessions")
    return [
        _fold(table, f"test-session-{s}", (table["session"] == s).to_numpy(), validation, seed, by)
        for s in sessions
    ]


def speaker_groups(table, n_folds):
    """Splits the speakers into `n_folds` test groups.

    Where genders are known and there are as many female as male speakers
    (IEMOCAP, EmoDB), each group holds one female and one male speaker, as
    IEMOCAP's session 5 does; otherwise speakers are dealt round-robin.
    """
    genders = table.groupby("speaker")["gender"].first()
    female = sorted(s for s, g in genders.items() if g == "F")
    male = sorted(s for s, g in genders.items() if g == "M")
    if female and len(female) == len(male) == n_folds:
        return [[f, m] for f, m in zip(female, male)]
    speakers = sorted(genders.index)
    if n_folds > len(speakers):
        raise ValueError(f"{n_folds} folds need at least {n_folds} speakers, found {len(speakers)}")
    return [speakers[i::n_folds] for i in range(n_folds)]


def leave_speakers_out(table, n_folds=5, validation=0.2, seed=0, by="utterances"):
    """Speaker-independent folds for any corpus: each fold's speakers are its test."""
    folds = []
    for group in speaker_groups(table, n_folds):
        mask = table["speaker"].isin(group).to_numpy()
        folds.append(_fold(table, "test-" + "-".join(map(str, group)), mask, validation, seed, by))
    return folds


SPLITS = {
    "session": session_independent,
    "loso": leave_one_session_out,
    "speakers": leave_speakers_out,
}


def make_folds(table, split="speakers", **options):
    """Folds by name: "session" (1-4 / 5), "loso", or "speakers" (n_folds=5)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLITS)}")
    if split != "speakers":
        options.pop("n_folds", None)
    return SPLITS[split](table, **options)
