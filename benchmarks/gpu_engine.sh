#!/usr/bin/env bash
# Issue 5 on the GPU box, in one call: kernels (if csrc/ has sources), the package, then
# benchmarks/bench_e2e.py on the paper preset (build-engine + generate with the engine, eager, torch.compile).
#
# Device tool: command `bash benchmarks/gpu_engine.sh`, carry [".whl"] (PyAV for cp312: the box has none),
# timeout_s <= 540. Logs, results.json and the engine's manifest.json go to $OUT.
# BUDGET (s, default 490) bounds the whole script; the benchmark skips what would start past it.
# RUNTIME (build-engine --runtime, default auto: no AOTInductor on CUDA) and CONFIGS (default "engine eager
# compile") narrow a re-run; BENCH_ARGS go to bench_e2e.py (e.g. --reuse on a warm machine). TESTS=1: then the
# kernel tests (tests/test_kernels.py) in what is left of BUDGET. WRITE=1: benchmarks/bench_write.py too (where writing
# the grid spends its time; ~20 s). STEP=1: benchmarks/bench_step.py without torch.compile and the fp32 reference (the
# step's routes and its kernel breakdown; ~90 s). GEMM_PROBE=1: benchmarks/probe_fp8_gemm.cu against torch's cuBLASLt
# (every algorithm for the step's e4m3 GEMMs; ~30 s). FOURREAL_CUDA_ARCHS (default 90a) for the build.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_engine_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_COMPILE_THREADS=16 FOURREAL_CUDA_ARCHS=${FOURREAL_CUDA_ARCHS:-90a}
T0=$(date +%s)
BUDGET=${BUDGET:-490}
RUNTIME=${RUNTIME:-auto}
CONFIGS=${CONFIGS:-engine eager compile}
log() { echo "[$(($(date +%s) - T0)) s] $*"; }

run() {
  log "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
  nproc
  python3 -c "import sys, torch, onnx, onnxruntime; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'onnx', onnx.__version__, 'onnxruntime', onnxruntime.__version__)"

  source benchmarks/carried_wheels.sh

  log "package (editable: fourreal_rt.export is export/)"
  if ! FOURREAL_BUILD_CUDA=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$OUT/pip_install.log" 2>&1; then
    log "pip install -e failed (pip_install.log); using the source tree with a link for fourreal_rt.export"
    [ -e fourreal_rt/export ] || ln -s ../export fourreal_rt/export
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  fi

  # bytecode, as a pip install of the package leaves it: a fresh tree would compile its modules inside the first
  # generate (0.2 s of the e2e time: its imports are lazy)
  python3 -m compileall -q fourreal_rt export >/dev/null

  if ls fourreal_rt/_C*.so >/dev/null 2>&1; then
    log "kernels: $(ls fourreal_rt/_C*.so) already built (a warm machine)"
  elif ls csrc/*.cu csrc/*.cpp >/dev/null 2>&1; then
    log "kernels: FOURREAL_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace"
    FOURREAL_BUILD_CUDA=1 MAX_JOBS=16 timeout 200 python3 setup.py build_ext --inplace >"$OUT/build_ext.log" 2>&1
    log "build_ext exit $? ($(ls fourreal_rt/_C*.so 2>/dev/null || echo 'no _C'))"
    tail -3 "$OUT/build_ext.log"
  else
    log "kernels: csrc/ has no sources; the fourreal:: ops run their PyTorch twins"
  fi
  python3 -c "from fourreal_rt.export.engine import kernels_status; print('kernels:', kernels_status())"

  local left=$((BUDGET - ($(date +%s) - T0) - 15))
  [ "${TESTS:-0}" = 1 ] && left=$((left - 75))             # kept for the kernel tests
  log "bench_e2e (budget ${left} s)"
  python3 benchmarks/bench_e2e.py --preset paper --steps 32 --work /tmp/bench --out "$OUT" \
    --budget-s "$left" --runtime "$RUNTIME" --configs $CONFIGS ${BENCH_ARGS:-}
  cp /tmp/bench/engine/manifest.json "$OUT/manifest.json" 2>/dev/null
  if [ "${WRITE:-0}" = 1 ]; then
    log "bench_write"
    timeout 120 python3 benchmarks/bench_write.py --preset paper --reps 3 --out "$OUT"
  fi

  if [ "${STEP:-0}" = 1 ]; then
    log "bench_step (no compile, no fp32 reference)"
    timeout 170 python3 benchmarks/bench_step.py --no-compile --no-ref --iters 5 > "$OUT/bench_step.log" 2>&1
    grep -vE "Warning|warn_once" "$OUT/bench_step.log" | tail -48
  fi
  if [ "${GEMM_PROBE:-0}" = 1 ]; then   # linked against the cuBLASLt torch loads (its wheel), not the toolkit's
    local lt
    lt=$(python3 -c "import glob, os, torch; print(sorted(glob.glob(os.path.dirname(torch.__file__) + '/../nvidia/**/libcublasLt.so.*', recursive=True))[0])")
    log "probe_fp8_gemm ($lt)"
    mkdir -p /tmp/ltlib && ln -sf "$lt" /tmp/ltlib/libcublasLt.so
    nvcc -O2 -std=c++17 -arch=sm_90a benchmarks/probe_fp8_gemm.cu -L/tmp/ltlib -lcublasLt \
      -Xlinker -rpath="$(dirname "$lt")" -o /tmp/probe_fp8_gemm && timeout 120 /tmp/probe_fp8_gemm > "$OUT/probe_fp8_gemm.log" 2>&1
    cat "$OUT/probe_fp8_gemm.log"
  fi

  left=$((BUDGET - ($(date +%s) - T0)))
  if [ "${TESTS:-0}" = 1 ] && [ "$left" -gt 40 ]; then     # the kernel tests, in what is left of the budget
    log "pytest tests/test_kernels.py (${left} s left)"
    timeout $((left - 5)) python3 -m pytest --noconftest -q -p no:cacheprovider tests/test_kernels.py -rfE 2>&1 \
      | grep -vE "^SKIPPED" | tail -25
  fi
  log "done"
}

run 2>&1 | tee "$OUT/gpu_engine.log"
