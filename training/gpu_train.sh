#!/usr/bin/env bash
# Training on the GPU box (device tool); results under $OUT. Each python run has a hard wall-clock cap,
# so the copy-out below always happens within one device call. At most 8 files come back from a call.
#   STAGES="1"                    stage 1 only (MIN1 minutes): a whole call for the base model
#   STAGES="1 soft"               stage 1, then stage-2 soft sync (MIN2 minutes); returns exactly 8 files
#   STAGES="soft hard sequential" INIT=<stage-1 model dir, carried>   the stage-2 variants, MIN2 minutes each
#   SHIP="soft"                   the stage-2 models copied back (default: all trained)
#   TOTAL2=m                      stage 2's LR schedule over m minutes of training (default: no decay in a chunk)
#   TUNE=lr                       stage 2 also trains the blocks at peak LR lr (--tune-blocks; runs named <sync>-tuned)
#   QUALITY=1                     then benchmarks/quality.py on INIT and the trained variants ($OUT/quality.json);
#                                 QARGS="--fp8" adds the soft model in FP8 and its PSNR against bf16; QSTAGE1=0 skips
#                                 the training-free syncs
#   QSWEEP="3 10"                 then the sampler's σ shift for the last model: quality on VAL at each
#                                 (with EMA: the average and the online weights) ($OUT/quality_sweep.jsonl),
#                                 then on TEST at the best ($OUT/quality_test.json)
#   WINDOWS=n                     then benchmarks/bench_windows.py quality on n scenes with the last model trained
#   NPROC=n                       data-parallel over n GPUs (torchrun; BATCH/BATCH2 grids per GPU)
#   COMPILE=1                     torch.compile the model for training
#   SSHIFT=s                      time shift of the training σ distribution (--sigma-shift; default 1)
#   SEED=n                        a new run's train seeds start at n·1,000,000 (--seed; default 0)
#   EMA=d                         also average the trained weights (--ema d): model/ is the average, model_online/ the
#                                 raw weights (both shipped: 2 more files)
#   FRESH=1                       stage 2 from a stage-2 INIT of the same sync: new sync layers (--fresh-sync), not
#                                 the INIT's continued (the ablation variants from one stage-2 model need this)
#   CKPT=1                        return each run's checkpoint ($OUT/ckpt_<run>/part_*, 15 MiB parts; weights float32,
#                                 moments bf16) so the next call continues it: carry the parts back as
#                                 runs/carry/ckpt_<run>/ (cat them, or leave it to this script), same STAGES
# A run directory already on the machine (a warm machine) is continued as it is; else one from runs/carry/.
# A carried stage-2 run also needs its stage-1 model as INIT (carried too): CKPT=1 returns no model, but
# `python -m fourreal_rt.training --stage 1 --out DIR --minutes 0 --pool 1` exports one from a stage-1 checkpoint.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-runs/out}
mkdir -p "$OUT" runs
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
INIT=${INIT:-runs/stage1/model}
TRAINED=()
if [ "${NPROC:-1}" -gt 1 ]; then TRAIN=(python3 -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m fourreal_rt.training)
else TRAIN=(python3 -m fourreal_rt.training); fi
[ "${COMPILE:-0}" = 1 ] && TRAIN+=(--compile)
[ -n "${SSHIFT:-}" ] && TRAIN+=(--sigma-shift "$SSHIFT")
[ "${FRESH:-0}" = 1 ] && TRAIN+=(--fresh-sync)
[ -n "${SEED:-}" ] && TRAIN+=(--seed "$SEED")
[ -n "${EMA:-}" ] && TRAIN+=(--ema "$EMA")
restore() {   # $1: run name (stage1, stage2_soft, …): continue a returned checkpoint unless the run is here already
  if [ ! -f "runs/$1/train_state.safetensors" ] && ls "runs/carry/ckpt_$1"/part_* >/dev/null 2>&1; then
    mkdir -p "runs/$1" && cat "runs/carry/ckpt_$1"/part_* > "runs/$1/train_state.safetensors"
    cp "runs/carry/ckpt_$1/train_log.jsonl" "runs/$1/" 2>/dev/null
    echo "restored runs/$1 from runs/carry/ckpt_$1"
  fi
}
give_ckpt() {  # $1: run name
  if [ "${CKPT:-0}" = 1 ]; then
    mkdir -p "$OUT/ckpt_$1" && split -b 15M "runs/$1/train_state.safetensors" "$OUT/ckpt_$1/part_"
    cp "runs/$1/train_log.jsonl" "$OUT/ckpt_$1/"
  fi
}
for st in ${STAGES:-1 soft}; do
  if [ "$st" = 1 ]; then
    restore stage1
    timeout $(( ${MIN1%.*} * 60 + 150 )) "${TRAIN[@]}" --stage 1 --preset small --out runs/stage1 \
      --minutes "${MIN1:-5}" --total-minutes "${TOTAL1:-${MIN1:-5}}" --batch "${BATCH:-8}" --lr "${LR1:-4e-4}" \
      --workers "${WORKERS:-8}" --pool "${POOL:-128}" --save-dtype bfloat16 --log-every 50 2>&1 | tee "$OUT/stage1.log"
    if [ "${CKPT:-0}" = 1 ]; then give_ckpt stage1
    else mkdir -p "$OUT/stage1" && cp -r runs/stage1/train_log.jsonl runs/stage1/model "$OUT/stage1/"; fi
    INIT=runs/stage1/model
  else
    extra=()
    [ -n "${TOTAL2:-}" ] && extra+=(--total-minutes "$TOTAL2")
    [ -n "${TUNE:-}" ] && extra+=(--tune-blocks "$TUNE") && st="$st-tuned"
    restore "stage2_$st"
    timeout $(( ${MIN2%.*} * 60 + 150 )) "${TRAIN[@]}" --stage 2 --init "$INIT" --sync "${st%-tuned}" \
      --out "runs/stage2_$st" --minutes "${MIN2:-2}" --batch "${BATCH2:-8}" --lr "${LR2:-1e-3}" \
      --workers "${WORKERS:-8}" --pool "${POOL:-128}" --save-dtype bfloat16 --log-every 25 "${extra[@]}" 2>&1 | tee "$OUT/stage2_$st.log"
    [ -f "runs/stage2_$st/model/model.safetensors" ] && TRAINED+=("$st")
    give_ckpt "stage2_$st"
    if [[ " ${SHIP:-${STAGES}} " == *" ${st%-tuned} "* ]]; then
      mkdir -p "$OUT/$st" && cp -r "runs/stage2_$st/model" "$OUT/$st/"
      [ -d "runs/stage2_$st/model_online" ] && cp -r "runs/stage2_$st/model_online" "$OUT/$st/"
    fi
  fi
done
if [ "${QUALITY:-0}" = 1 ]; then
  args=(--n "${QN:-32}" --steps "${QSTEPS:-16}" --json "$OUT/quality.json" ${QARGS:-})
  [ "${QSTAGE1:-1}" = 1 ] && args+=(--stage1 "$INIT")
  for st in "${TRAINED[@]}"; do args+=("--$st" "runs/stage2_$st/model"); done
  timeout "${QTIMEOUT:-240}" python3 benchmarks/quality.py "${args[@]}" 2>&1 | tee "$OUT/quality.log"
fi
if [ -n "${QSWEEP:-}" ] && [ "${#TRAINED[@]}" -gt 0 ]; then   # for the model trained last: the sampler's σ shift
  run="runs/stage2_${TRAINED[-1]}"                                # (and with EMA, which weights) chosen on VAL,
  models=("$run/model")                                           # then TEST at the best
  [ -d "$run/model_online" ] && models+=("$run/model_online")
  rm -f /tmp/val_*.json                                          # (~20 s each on an H200: 4 side by side on 4
  i=0                                                             # GPUs hung past 150 s, so one after another)
  for m in "${models[@]}"; do for sh in $QSWEEP; do
    timeout 100 python3 benchmarks/quality.py --split val --n "${QN:-32}" --shift "$sh" --soft "$m" ${QARGS:-} \
      --json "/tmp/val_$i.json" 2>&1 | tail -1
    i=$((i + 1))
  done; done
  : >"$OUT/quality_sweep.jsonl"
  for f in /tmp/val_*.json; do
    [ -f "$f" ] && python3 -c "import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))" "$f" >>"$OUT/quality_sweep.jsonl"
  done
  read -r best_model best_shift < <(ls /tmp/val_*.json >/dev/null 2>&1 && \
    python3 benchmarks/quality.py --pick-best /tmp/val_*.json)
  echo "VAL sweep: best ${best_model:-none (every run failed)} at σ shift ${best_shift:-}"
  [ -n "${best_model:-}" ] && \
  timeout 150 python3 benchmarks/quality.py --split test --n "${QN:-32}" --shift "$best_shift" --soft "$best_model" \
    ${QARGS:-} --json "$OUT/quality_test.json" 2>&1 | tail -8
fi
if [ -n "${WINDOWS:-}" ]; then   # issue 6: sliding windows vs tiles on a 16x16 grid, with the model trained last
  timeout "${WTIMEOUT:-150}" python3 benchmarks/bench_windows.py quality --model "runs/stage2_${TRAINED[-1]}/model" \
    --device "${WDEVICE:-cuda}" --scenes "$WINDOWS" --steps "${QSTEPS:-16}" 2>&1 | tee "$OUT/windows.log"
fi
ls -R "$OUT" | head -30
