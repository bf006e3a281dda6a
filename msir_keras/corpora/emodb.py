"""EmoDB (Berlin Database of Emotional Speech), labelled from its file names."""

from __future__ import annotations

import os
import re

from msir_keras.corpora.base import FOUR_CLASSES, Corpus, CorpusError, make_table

EMOTION_CODES = {
    "W": "angry",  # Aerger
    "L": "boredom",  # Langeweile
    "N": "neutral",
    "F": "happy",  # Freude
    "A": "fear",  # Angst
    "T": "sad",  # Trauer
    "E": "disgust",  # Ekel
}
SPEAKER_GENDER = {
    "03": "M", "08": "F", "09": "F", "10": "M", "11": "M",
    "12": "M", "13": "F", "14": "F", "15": "M", "16": "F",
}  # fmt: skip
_NAME = re.compile(r"^(\d\d)([a-z]\d\d)([A-Z])([a-z])\.wav$")


def load_emodb(root, emotions="all"):
    """Loads EmoDB from `root` (the folder holding `wav/`).

    Args:
        root: str. The corpus folder, e.g. `../shared/data/emodb`.
        emotions: "all" (7 emotions, 535 files) or "four" (angry, happy,
            neutral, sad: 339 files, as IEMOCAP work uses).

    Returns:
        A Corpus; `session` is None (EmoDB has none), `text` holds the text id.
    """
    folder = os.path.join(root, "wav")
    if not os.path.isdir(folder):
        raise CorpusError(
            f"{folder}: no such folder; --root must be the EmoDB folder that holds wav/"
        )
    rows, skipped = [], []
    for name in sorted(os.listdir(folder)):
        match = _NAME.match(name)
        if not match or match.group(3) not in EMOTION_CODES:
            if not name.startswith("."):
                skipped.append({"where": os.path.join(folder, name), "reason": "not an EmoDB file name (SSTTTEV.wav)"})
            continue
        speaker, text, code, _ = match.groups()
        rows.append(
            {
                "path": os.path.abspath(os.path.join(folder, name)),
                "label": EMOTION_CODES[code],
                "speaker": speaker,
                "session": None,
                "gender": SPEAKER_GENDER.get(speaker),
                "text": text,
            }
        )
    if not rows:
        raise CorpusError(f"{folder}: holds no EmoDB wav files")
    corpus = Corpus("emodb", make_table(rows), skipped)
    if emotions == "four":
        return corpus.select_labels(FOUR_CLASSES)
    if emotions != "all":
        raise ValueError(f"emotions must be 'all' or 'four', got {emotions!r}")
    return corpus
