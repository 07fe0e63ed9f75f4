#!/usr/bin/env bash
# Everything the kernel issue needs from the GPU box, in one call:
#   build fourreal_rt._C (setup.py, ninja) while CMake builds the torch-free kernel library + its test in parallel,
#   ctest, the kernel tests (tests/test_kernels.py: CPU and GPU), benchmarks/bench_kernels.py, bench_step.py.
# Logs go to $OUT (log.txt is the whole console; one file per stage beside it). Each stage has its own time limit
# so that one slow stage still leaves the others their output.
#   OUT=/tmp/out bash benchmarks/gpu_kernels.sh
#   OUT=/tmp/out ONLY=tests bash benchmarks/gpu_kernels.sh     # build, ctest and the kernel tests; no benchmarks
#   ONLY=step: no bench_kernels; PYTEST_K="expr": only the kernel tests pytest -k selects
set -u
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16} FOURREAL_BUILD_CUDA=1 TORCHINDUCTOR_COMPILE_THREADS=16
STEP_ARGS=${STEP_ARGS:-}
KERNEL_ARGS=${KERNEL_ARGS:-}
BUDGET=${BUDGET:-470}   # seconds the whole script may take (the device call's limit, less a margin)
cd "$(dirname "$0")/.."

stage() { echo; echo "=== $* [$(date +%T), +$((SECONDS))s]"; }
# limit for a stage: its own cap, or what is left of the budget if that is less
cap() { local left=$((BUDGET - SECONDS)); [ "$left" -lt "$1" ] && echo $((left > 5 ? left : 5)) || echo "$1"; }

{
  stage environment
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  nvcc --version | tail -2
  git rev-parse --short HEAD 2>/dev/null; git status --short 2>/dev/null | head -20

  source benchmarks/carried_wheels.sh      # nvidia-cudnn-frontend: the FP8 attention core

  stage "cmake build + ctest (background)"
  rm -rf build/cmake
  ( cmake -S . -B build/cmake -G Ninja -DCMAKE_BUILD_TYPE=Release && cmake --build build/cmake -j 6 \
      && ctest --test-dir build/cmake -V ) > "$OUT/ctest.log" 2>&1 &
  CMAKE_PID=$!

  stage "build fourreal_rt._C"
  # always from scratch: a warm machine keeps build/ from an earlier call, and ninja judges staleness by mtimes
  # that the copied tree does not order reliably against the machine's own clock
  rm -rf build/temp.* build/lib.* fourreal_rt/_C*.so
  timeout $(cap 300) python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1
  echo "build rc=$?"
  grep -E "error|warning: .*fourreal" "$OUT/build.log" | head -30
  tail -3 "$OUT/build.log"
  ls -la fourreal_rt/_C*.so 2>/dev/null
  python3 -c "from fourreal_rt.ops import backend; print(backend.status())"
  # the package itself, editable (fourreal_rt.export is export/: the engine's kernel test imports it); no rebuild
  FOURREAL_BUILD_CUDA=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . > "$OUT/pip.log" 2>&1 \
    || echo "pip install -e failed (pip.log)"

  stage ctest
  wait $CMAKE_PID
  echo "cmake/ctest rc=$?"
  grep -E "ok  |FAIL|PASSED|FAILED|device|tests passed|error" "$OUT/ctest.log" | head -40

  stage "kernel tests (pytest tests/test_kernels.py)"
  timeout $(cap 200) python3 -m pytest --noconftest -q -p no:cacheprovider tests/test_kernels.py -rfEs \
    ${PYTEST_K:+-k "$PYTEST_K"} 2>&1 \
    | tee "$OUT/pytest.log" | grep -vE "^SKIPPED" | tail -40

  if [ "${ONLY:-}" = tests ]; then stage done; exit 0; fi

  stage "bench_step"
  timeout $(cap 330) python3 benchmarks/bench_step.py $STEP_ARGS 2>&1 | tee "$OUT/bench_step.log"
  if [ "${ONLY:-}" = step ]; then stage done; exit 0; fi

  stage "bench_kernels"
  # the torch.compile baselines cost a minute or two of compilation: only when the budget allows
  [ $((BUDGET - SECONDS)) -lt 150 ] && KERNEL_ARGS="$KERNEL_ARGS --no-compile"
  timeout $(cap 200) python3 benchmarks/bench_kernels.py $KERNEL_ARGS 2>&1 | tee "$OUT/bench_kernels.log"

  stage done
} 2>&1 | tee "$OUT/log.txt"
