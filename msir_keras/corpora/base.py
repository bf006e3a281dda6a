"""The utterance table every corpus loader yields, and the label names."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

FOUR_CLASSES = ("angry", "happy", "neutral", "sad")
COLUMNS = ("path", "label", "speaker", "session", "gender")

# Names users and corpora give the four classes; other labels are kept as given.
LABEL_ALIASES = {
    "anger": "angry",
    "ang": "angry",
    "happiness": "happy",
    "hap": "happy",
    "neu": "neutral",
    "sadness": "sad",
}


def canonical_label(label):
    """'Anger' -> 'angry', 'happiness' -> 'happy'; other labels lower-cased as given."""
    label = str(label).strip().lower()
    return LABEL_ALIASES.get(label, label)


class CorpusError(ValueError):
    """A corpus that cannot be loaded, naming the file and the fix."""


@dataclasses.dataclass
class Corpus:
    """A table of utterances and what the loader skipped.

    Attributes:
        name: str. The corpus's name ("iemocap", "emodb", "manifest").
        utterances: pandas.DataFrame with columns path (absolute), label,
            speaker, session (None where the corpus has none), gender ("F",
            "M" or None), and any corpus-specific extras.
        skipped: list of dict(where=..., reason=...): files, lines or rows
            that were left out, and why.
        warnings: list of str: whole-corpus problems, such as counts that
            differ from the published ones.
    """

    name: str
    utterances: pd.DataFrame
    skipped: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)

    def __len__(self):
        return len(self.utterances)

    def counts(self):
        """Counts per label, session and speaker, and the skipped entries (JSON-able)."""
        table = self.utterances

        def count(column):
            values = table[column].dropna()
            return {str(k): int(v) for k, v in sorted(values.value_counts().items())}

        return {
            "corpus": self.name,
            "total": int(len(table)),
            "by_label": count("label"),
            "by_session": count("session"),
            "by_speaker": count("speaker"),
            "skipped": list(self.skipped),
            "warnings": list(self.warnings),
        }

    def select_labels(self, labels):
        """A copy holding only the given labels (in that order of classes)."""
        keep = self.utterances["label"].isin(labels)
        skipped = self.skipped + [
            {"where": path, "reason": f"label {label!r} is not among {list(labels)}", "label": label}
            for path, label in self.utterances.loc[~keep, ["path", "label"]].itertuples(
                index=False
            )
        ]
        return Corpus(
            self.name,
            self.utterances[keep].reset_index(drop=True),
            skipped,
            list(self.warnings),
        )


def make_table(rows):
    """A DataFrame with the standard columns first, from a list of dicts."""
    table = pd.DataFrame(rows)
    for column in COLUMNS:
        if column not in table:
            table[column] = None
    extras = [c for c in table.columns if c not in COLUMNS]
    table = table[list(COLUMNS) + extras]
    return table.sort_values("path", kind="stable").reset_index(drop=True)


def class_labels(table, classes=FOUR_CLASSES):
    """Integer class ids of the table's labels, in the order of `classes`."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(table["label"]) - set(index))
    if unknown:
        raise CorpusError(f"labels {unknown} are not among the classes {list(classes)}")
    return np.array([index[label] for label in table["label"]], dtype=np.int64)


def detection_labels(table, emotion):
    """One-vs-rest targets: 1 where the label is `emotion`, else 0."""
    emotion = canonical_label(emotion)
    if emotion not in set(table["label"]):
        raise CorpusError(f"no utterance is labelled {emotion!r}; labels: {sorted(set(table['label']))}")
    return (table["label"].to_numpy() == emotion).astype(np.int64)
