#!/usr/bin/env bash
# Training on the GPU box (device tool); results under $OUT. Each python run has a hard wall-clock cap,
# so the copy-out below always happens within one device call. At most 8 files come back from a call:
# the stage-1 model is not copied out (every stage-2 model holds its blocks as base.*; pass a stage-2
# model as INIT to train further variants from the same blocks).
#   STAGES="1 soft"        stage 1 (MIN1 minutes), then stage-2 soft sync (MIN2 minutes)
#   STAGES="hard sequential" INIT=dir   stage-2 variants from a carried stage-1 model
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-runs/out}
mkdir -p "$OUT" runs
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
INIT=${INIT:-runs/stage1/model}
for st in ${STAGES:-1 soft}; do
  if [ "$st" = 1 ]; then
    timeout $(( ${MIN1%.*} * 60 + 90 )) python3 -m fourreal_rt.training --stage 1 --preset small --out runs/stage1 \
      --minutes "${MIN1:-5}" --total-minutes "${TOTAL1:-${MIN1:-5}}" --batch "${BATCH:-8}" --lr "${LR1:-4e-4}" \
      --workers 8 --pool 128 --save-dtype bfloat16 --log-every 50 2>&1 | tee "$OUT/stage1.log"
    mkdir -p "$OUT/stage1" && cp runs/stage1/train_log.jsonl "$OUT/stage1/"
    INIT=runs/stage1/model
  else
    timeout $(( ${MIN2%.*} * 60 + 90 )) python3 -m fourreal_rt.training --stage 2 --init "$INIT" --sync "$st" \
      --out "runs/stage2_$st" --minutes "${MIN2:-2}" --batch "${BATCH2:-8}" --lr "${LR2:-1e-3}" \
      --workers 8 --pool 128 --save-dtype bfloat16 --log-every 25 2>&1 | tee "$OUT/stage2_$st.log"
    mkdir -p "$OUT/$st" && cp -r "runs/stage2_$st/model" "$OUT/$st/"
  fi
done
ls -R "$OUT" | head -30
