"""Builds small trees in IEMOCAP_full_release's exact layout and label format."""

import os

from conftest import tone, write_wav

HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
ANNOTATORS = (
    "C-E2:\tNeutral;\t()\n"
    "C-E3:\tNeutral;\t()\n"
    "C-F1:\tNeutral;\t(curious)\n"
    "A-E3:\tval 3; act 2; dom  2;\t()\n"
    "A-F1:\tval 3; act 2; dom  1;\t()\n"
)
# Per dialog: (label, speaker letter) of each turn. fru and xxx are dropped,
# exc becomes happy.
TURNS = [("neu", "F"), ("hap", "M"), ("exc", "F"), ("ang", "M"), ("sad", "F"), ("fru", "M"), ("xxx", "F"), ("sad", "M")]


def build_iemocap(root, sessions=(1, 2, 3, 4, 5), missing_wav=None, seconds=0.3):
    """Writes Session1..5 with one improvised and one scripted dialog each.

    Returns the number of kept utterances per session (6 per dialog).
    """
    for session in sessions:
        base = os.path.join(root, f"Session{session}")
        labels = os.path.join(base, "dialog", "EmoEvaluation")
        os.makedirs(labels, exist_ok=True)
        for dialog in (f"Ses{session:02d}F_impro01", f"Ses{session:02d}M_script01_1"):
            lines = [HEADER]
            for index, (label, speaker) in enumerate(TURNS):
                utterance = f"{dialog}_{speaker}{index:03d}"
                start = 1.5 * index + 0.25
                lines.append(
                    f"[{start:.4f} - {start + 1.2:.4f}]\t{utterance}\t{label}\t[2.5000, 3.0000, 2.5000]\n"
                )
                lines.append(ANNOTATORS + "\n")
                if utterance != missing_wav:
                    write_wav(
                        os.path.join(base, "sentences", "wav", dialog, f"{utterance}.wav"),
                        tone(seconds, frequency=150 + 20 * index, seed=index),
                    )
            with open(os.path.join(labels, f"{dialog}.txt"), "w") as handle:
                handle.writelines(lines)
        # A macOS resource fork as found in some copies of the corpus: ignored.
        with open(os.path.join(labels, f"._{dialog}.txt"), "wb") as handle:
            handle.write(b"\x00\x05\x16\x07")
    return 12
