"""Any corpus described by a CSV manifest: path, label, speaker[, session, gender]."""

from __future__ import annotations

import csv
import io
import os

from msir_keras.corpora.base import Corpus, CorpusError, canonical_label, drop_repeats, make_table

REQUIRED = ("path", "label", "speaker")
GROUPING = ("group", "text")  # optional columns kept for selection on held-out groups


def load_manifest(csv_path, labels=None):
    """Loads a corpus from a CSV manifest.

    Columns: `path` (relative to the CSV's folder, or absolute), `label`,
    `speaker`, and optionally `session`, `gender`, and `group` or `text`
    (what a fold with too few training speakers holds out to choose its
    settings, e.g. the spoken sentence). Labels map to the four
    classes by name (angry/anger, happy/happiness, neutral, sad/sadness);
    other labels are kept as given, lower-cased.

    Args:
        csv_path: str. The manifest.
        labels: list of str or None. When given, rows with another label are
            skipped (reported with their line number).

    Returns:
        A Corpus. Bad rows (missing file, empty field, unknown label, a
        repeated file) are in `skipped` with their line number, and the
        others are kept. A file listed twice with the same label and speaker
        is kept once; a file listed with two labels or two speakers is left
        out entirely, since neither row can be trusted.

    Raises:
        CorpusError: no such file, bytes that are not UTF-8 (the line is
            named), a missing column, or no usable row.
    """
    if not os.path.isfile(csv_path):
        raise CorpusError(f"{csv_path}: no such manifest file")
    folder = os.path.dirname(os.path.abspath(csv_path))
    wanted = None if labels is None else {canonical_label(label) for label in labels}
    rows, skipped = [], []
    with open(csv_path, "rb") as handle:
        raw_bytes = handle.read()
    try:
        # utf-8-sig: spreadsheet programs start their CSV files with a byte-order mark.
        text = raw_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw_bytes[: error.start].count(b"\n") + 1
        raise CorpusError(
            f"{csv_path}:{line}: bytes that are not UTF-8 ({raw_bytes[error.start:error.start + 4]!r}); "
            "save the manifest as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        absent = [c for c in REQUIRED if c not in columns]
        if absent:
            raise CorpusError(
                f"{csv_path}: missing column(s) {absent}; the header must name "
                "path,label,speaker[,session,gender]"
            )
        for raw in reader:
            line = reader.line_num
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
            where = f"{csv_path}:{line}"
            empty = [c for c in REQUIRED if not row.get(c)]
            if empty:
                skipped.append({"where": where, "reason": f"empty {', '.join(empty)}"})
                continue
            path = row["path"] if os.path.isabs(row["path"]) else os.path.join(folder, row["path"])
            if not os.path.isfile(path):
                hint = "; the path uses \\ separators: write them as /" if "\\" in row["path"] else ""
                skipped.append({"where": where, "reason": f"no such file {path}{hint}"})
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
                    # Optional: what the fused detector and MSIR hold out where a fold has too few
                    # speakers (e.g. the spoken text; `fusion.GROUP_COLUMNS`).
                    **{column: row.get(column) or None for column in GROUPING if column in columns},
                    "source": csv_path,
                    "line": line,
                }
            )
    rows = drop_repeats(rows, skipped)
    if not rows:
        reasons = "; ".join(f"{e['where']}: {e['reason']}" for e in skipped[:3])
        raise CorpusError(f"{csv_path}: no usable row ({len(skipped)} skipped, e.g. {reasons})")
    return Corpus("manifest", make_table(rows), skipped)
