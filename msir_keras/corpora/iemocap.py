"""IEMOCAP, read from an `IEMOCAP_full_release` tree as it is distributed."""

from __future__ import annotations

import os
import re

from msir_keras.corpora.base import Corpus, CorpusError, drop_repeats, make_table

# Kept categories; excited is merged into happy as in the paper and its peers.
KEPT = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
EXPECTED_TOTAL = 5531
EXPECTED_BY_SESSION = {1: 1085, 2: 1023, 3: 1151, 4: 1031, 5: 1241}
EXPECTED_BY_LABEL = {"angry": 1103, "happy": 1636, "neutral": 1708, "sad": 1084}

# "[6.2901 - 8.2357]	Ses01F_impro01_F000	neu	[2.5000, 2.5000, 2.5000]"
_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[")


def parse_evaluation(path):
    """Yields (utterance, label, start, end, line number) from one EmoEvaluation file.

    Only the summary lines that begin with `[` count; the annotators' lines
    that follow each (`C-E2:`, `A-E3:` ...) are ignored.

    Raises:
        CorpusError: the file is not UTF-8 (or ASCII) text, e.g. saved as UTF-16.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except UnicodeDecodeError as error:
        raise CorpusError(f"{path}: bytes that are not UTF-8 at offset {error.start}; save the label file "
                          "as UTF-8 (as IEMOCAP distributes it)") from None
    for number, line in enumerate(lines, start=1):
        match = _LINE.match(line)
        if match:
            start, end, utterance, label = match.groups()
            yield utterance, label, float(start), float(end), number


def load_iemocap(root, kind="all", check_counts=True):
    """Loads the 4-class IEMOCAP utterances (exc merged into hap).

    Args:
        root: str. The `IEMOCAP_full_release` folder (holding Session1..5).
        kind: "all", "improvised" or "scripted" dialogues.
        check_counts: bool, defaults to True. For kind="all", compare the
            counts with the published 5531 (per session 1085/1023/1151/1031/
            1241) and report any difference in `Corpus.warnings`.

    Returns:
        A Corpus; speaker is e.g. "Ses01F", gender "F"/"M", session 1-5,
        plus `utterance`, `dialog`, `improvised`, `start`, `end`.
    """
    if kind not in ("all", "improvised", "scripted"):
        raise ValueError(f"kind must be 'all', 'improvised' or 'scripted', got {kind!r}")
    sessions = [s for s in range(1, 6) if os.path.isdir(os.path.join(root, f"Session{s}"))]
    if not sessions:
        raise CorpusError(
            f"{root}: no Session1..Session5 folders; --root must be the IEMOCAP_full_release folder"
        )
    rows, skipped = [], []
    for session in sessions:
        base = os.path.join(root, f"Session{session}")
        evaluations = os.path.join(base, "dialog", "EmoEvaluation")
        if not os.path.isdir(evaluations):
            skipped.append({"where": evaluations, "reason": "missing label folder; session left out"})
            continue
        for name in sorted(os.listdir(evaluations)):
            if name.startswith(".") or not name.endswith(".txt"):
                continue
            dialog = name[: -len(".txt")]
            improvised = "_impro" in dialog
            if (kind == "improvised" and not improvised) or (kind == "scripted" and improvised):
                continue
            source = os.path.join(evaluations, name)
            try:
                parsed = list(parse_evaluation(source))
            except CorpusError as error:
                skipped.append({"where": source, "reason": f"{error.args[0].split(': ', 1)[1]}; its "
                                                           "utterances are left out"})
                continue
            for utterance, label, start, end, line in parsed:
                if label not in KEPT:
                    skipped.append({"where": f"{source}:{line}", "label": label,
                                    "reason": f"{utterance}: label {label!r} is not among {sorted(KEPT)}"})
                    continue
                wav = os.path.join(base, "sentences", "wav", dialog, f"{utterance}.wav")
                if not os.path.exists(wav):
                    skipped.append({"where": wav, "reason": f"labelled in {name} but the wav is missing"})
                    continue
                gender = utterance.rsplit("_", 1)[-1][:1]
                rows.append(
                    {
                        "path": os.path.abspath(wav),
                        "label": KEPT[label],
                        "speaker": f"Ses{session:02d}{gender}",
                        "session": session,
                        "gender": gender,
                        "utterance": utterance,
                        "dialog": dialog,
                        "improvised": improvised,
                        "start": start,
                        "end": end,
                        "source": source,
                        "line": line,
                    }
                )
    rows = drop_repeats(rows, skipped)
    if not rows:
        raise CorpusError(f"{root}: found no labelled neu/hap/exc/ang/sad utterance with a wav")
    corpus = Corpus("iemocap", make_table(rows), skipped)
    if check_counts and kind == "all":
        corpus.warnings.extend(_count_warnings(corpus))
    return corpus


def _count_warnings(corpus):
    table = corpus.utterances
    if len(table) == EXPECTED_TOTAL:
        return []
    found = table["session"].value_counts().to_dict()
    sessions = ", ".join(
        f"Session{s} {found.get(s, 0)}/{n}" for s, n in EXPECTED_BY_SESSION.items()
        if found.get(s, 0) != n
    )
    labels = table["label"].value_counts().to_dict()
    classes = ", ".join(
        f"{label} {labels.get(label, 0)}/{n}" for label, n in EXPECTED_BY_LABEL.items()
        if labels.get(label, 0) != n
    )
    missing = sum(1 for entry in corpus.skipped if "wav is missing" in entry["reason"])
    return [
        f"IEMOCAP yielded {len(table)} utterances, not the published {EXPECTED_TOTAL} "
        f"(found/expected: {sessions}; {classes}); {missing} labelled wav(s) are missing. "
        "Results on this tree are not comparable with the paper's."
    ]
