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


def drop_repeats(rows, skipped):
    """Keeps each file once, for every loader; what it leaves out goes into `skipped`.

    A file listed again with the same label and speaker is kept once (each
    repeat reported as a duplicate); a file listed with two labels or two
    speakers is left out entirely (every listing reported), since either
    could be wrong. Rows carry `source` (the label file) and `line`, which
    are removed from the kept rows.
    """
    by_path = {}
    for row in rows:
        by_path.setdefault(row["path"], []).append(row)
    kept = []
    for path, group in by_path.items():
        first = group[0]
        same_file = all(r["source"] == first["source"] for r in group)
        places = (f"lines {', '.join(str(r['line']) for r in group)}" if same_file
                  else ", ".join(f"{r['source']}:{r['line']}" for r in group))
        for key in ("label", "speaker"):
            values = sorted({str(r[key]) for r in group})
            if len(values) > 1:
                skipped += [{"where": f"{r['source']}:{r['line']}",
                             "reason": f"{path} is listed at {places} with {key}s {values}; fix the labels so "
                                       "it has one (left out)"} for r in group]
                break
        else:
            kept.append(first)
            origin = f"line {first['line']}" if same_file else f"{first['source']}:{first['line']}"
            skipped += [{"where": f"{r['source']}:{r['line']}", "reason": f"duplicate of {origin} ({path})"}
                        for r in group[1:]]
    for row in kept:
        del row["source"], row["line"]
    return kept


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
