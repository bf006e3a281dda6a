"""Corpora (IEMOCAP, EmoDB, CSV manifests), labels and speaker-independent splits."""

from msir_keras.corpora.base import (
    FOUR_CLASSES,
    Corpus,
    CorpusError,
    canonical_label,
    class_labels,
    detection_labels,
)
from msir_keras.corpora.emodb import load_emodb
from msir_keras.corpora.iemocap import load_iemocap
from msir_keras.corpora.manifest import load_manifest
from msir_keras.corpora.splits import (
    Fold,
    leave_one_session_out,
    leave_speakers_out,
    make_folds,
    session_independent,
)

CORPORA = ("iemocap", "emodb", "manifest")


def load_corpus(name, root, emotions="four", **options):
    """Loads a corpus by name.

    Args:
        name: "iemocap", "emodb" or "manifest".
        root: str. The IEMOCAP_full_release folder, the EmoDB folder, or the
            manifest CSV file.
        emotions: "four" (angry, happy, neutral, sad) or "all".
        **options: passed to the loader (IEMOCAP: kind="improvised"...).
    """
    if name == "iemocap":
        return load_iemocap(root, **options)  # always the four classes
    if name == "emodb":
        return load_emodb(root, emotions=emotions)
    if name == "manifest":
        return load_manifest(root, labels=FOUR_CLASSES if emotions == "four" else None)
    raise CorpusError(f"unknown corpus {name!r}; choose from {CORPORA}")
