"""Any corpus described by a CSV manifest: path, label, speaker[, session, gender]."""

from __future__ import annotations

import csv
import os

from msir_keras.corpora.base import Corpus, CorpusError, canonical_label, make_table

REQUIRED = ("path", "label", "speaker")


def load_manifest(csv_path, labels=None):
    """Loads a corpus from a CSV manifest.

    Columns: `path` (relative to the CSV's folder, or absolute), `label`,
    `speaker`, and optionally `session` and `gender`. Labels map to the four
    classes by name (angry/anger, happy/happiness, neutral, sad/sadness);
    other labels are kept as given, lower-cased.

    Args:
        csv_path: str. The manifest.
        labels: list of str or None. When given, rows with another label are
            skipped (reported with their line number).

    Returns:
        A Corpus. Bad rows (missing file, empty field, unknown label) are in
        `skipped` with their line number, and the others are kept.
    """
    if not os.path.isfile(csv_path):
        raise CorpusError(f"{csv_path}: no such manifest file")
    folder = os.path.dirname(os.path.abspath(csv_path))
    wanted = None if labels is None else {canonical_label(label) for label in labels}
    rows, skipped = [], []
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        absent = [c for c in REQUIRED if c not in columns]
        if absent:
            raise CorpusError(
                f"{csv_path}: missing column(s) {absent}; the header must name "
                "path,label,speaker[,session,gender]"
            )
        for line, raw in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
            where = f"{csv_path}:{line}"
            empty = [c for c in REQUIRED if not row.get(c)]
            if empty:
                skipped.append({"where": where, "reason": f"empty {', '.join(empty)}"})
                continue
            path = row["path"] if os.path.isabs(row["path"]) else os.path.join(folder, row["path"])
            if not os.path.isfile(path):
                skipped.append({"where": where, "reason": f"no such file {path}"})
                continue
            label = canonical_label(row["label"])
            if wanted is not None and label not in wanted:
                skipped.append({"where": where, "reason": f"unknown label {row['label']!r}"})
                continue
            session = row.get("session") or None
            rows.append(
                {
                    "path": os.path.abspath(path),
                    "label": label,
                    "speaker": row["speaker"],
                    "session": int(session) if session and session.isdigit() else session,
                    "gender": (row.get("gender") or "").upper()[:1] or None,
                }
            )
    if not rows:
        raise CorpusError(f"{csv_path}: no usable row ({len(skipped)} skipped)")
    return Corpus("manifest", make_table(rows), skipped)
