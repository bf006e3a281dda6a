#!/usr/bin/env bash
# The paper's learning-rate grid on IEMOCAP with the `paper` preset (a GPU wants this):
# per-emotion detection, focal loss with the paper's zeta, sessions 1-4 for the search
# (validation speakers drawn from them), session 5 never seen by a trial.
# Usage: tuning/paper_lr_iemocap.sh /data/IEMOCAP_full_release /models/wav2vec2-base
set -euo pipefail
IEMOCAP=${1:?the IEMOCAP_full_release folder}
WAV2VEC2=${2:?a local wav2vec 2.0 checkpoint folder (save_pretrained), or off}
msir tune --corpus iemocap --root "$IEMOCAP" --split session --task detection --preset paper \
    --wav2vec2 "$WAV2VEC2" --space paper-lr --validation-by speakers --out runs/iemocap-paper-lr
# Then train and test with the chosen rate per emotion, searching again inside the run:
#   msir train ... --tune paper-lr --out runs/iemocap-sed
