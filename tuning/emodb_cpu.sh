#!/usr/bin/env bash
# The paper's learning-rate grid on EmoDB, on a CPU in minutes per fold: the `small` preset,
# log-Mels + LLDs, the first two speaker folds, at most 20 epochs per trial.
# Each fold's search sees its training speakers only (val_uar on their validation part).
# Started again, it resumes where it stopped.
set -euo pipefail
EMODB=${1:-../shared/data/emodb}
msir tune --corpus emodb --root "$EMODB" --wav2vec2 off --space paper-lr \
    --max-folds 2 --epochs 20 --patience 8 --batch-size 32 --out runs/emodb-paper-lr
