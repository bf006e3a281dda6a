#!/usr/bin/env bash
# How the `small-data` recipe was chosen: batch size and learning-rate schedule searched by keras-tuner
# inside each of EmoDB's five training folds, scored by val_uar on two held-out training speakers
# (--validation-by speakers); feature masks (2 spans) in every trial. The test speakers take no part.
# A chief and two workers on one machine (keras-tuner's chief/worker mode): each worker trains one trial
# at a time, which keeps both cores of a 2-core CPU busy. Afterwards:
#   msir compare runs/recipe-search      # every combination, ranked by mean val_uar over the folds
set -euo pipefail
mkdir -p runs
export TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0
export KERASTUNER_ORACLE_IP=127.0.0.1 KERASTUNER_ORACLE_PORT=${PORT:-8310}
ARGS=(tune --corpus emodb --root ../shared/data/emodb --wav2vec2 off --space tuning/small_data_recipe.json
      --validation-by speakers --epochs 20 --patience 8 --set feature_masks=2 --out runs/recipe-search)
KERASTUNER_TUNER_ID=chief msir "${ARGS[@]}" > runs/recipe-chief.log 2>&1 &
sleep 20
KERASTUNER_TUNER_ID=tuner0 msir "${ARGS[@]}" > runs/recipe-w0.log 2>&1 &
KERASTUNER_TUNER_ID=tuner1 msir "${ARGS[@]}" > runs/recipe-w1.log 2>&1 &
wait
