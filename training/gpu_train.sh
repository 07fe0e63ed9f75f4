#!/usr/bin/env bash
# One training chunk on the GPU box (device tool), results under $OUT.
#   STAGE=1: base video model from scratch            -> $OUT/stage1/{model/,train_log.jsonl}
#   STAGE=2: sync layers for each SYNCS variant, from the stage-1 model in $INIT (carried)
# Usage (device tool): STAGE=1 MIN=8 bash training/gpu_train.sh
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-runs/out}
mkdir -p "$OUT" runs
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
if [ "${STAGE:-1}" = 1 ]; then
  python3 -m fourreal_rt.training --stage 1 --preset small --out runs/stage1 \
    --minutes "${MIN:-8}" --total-minutes "${TOTAL:-${MIN:-8}}" --batch "${BATCH:-8}" --lr "${LR:-4e-4}" \
    --workers 14 --pool 256 --save-dtype bfloat16 --log-every 50 2>&1 | tee "$OUT/stage1.log"
  mkdir -p "$OUT/stage1" && cp -r runs/stage1/model "$OUT/stage1/" && cp runs/stage1/train_log.jsonl "$OUT/stage1/"
else
  for sync in ${SYNCS:-soft hard sequential}; do
    python3 -m fourreal_rt.training --stage 2 --init "${INIT:-runs/stage1/model}" --sync "$sync" \
      --out "runs/stage2_$sync" --minutes "${MIN:-3}" --batch "${BATCH:-8}" --lr "${LR:-1e-3}" \
      --workers 14 --pool 256 --save-dtype bfloat16 --log-every 50 2>&1 | tee "$OUT/stage2_$sync.log"
    mkdir -p "$OUT/$sync" && cp -r "runs/stage2_$sync/model" "$OUT/$sync/" && cp "runs/stage2_$sync/train_log.jsonl" "$OUT/$sync/"
  done
fi
