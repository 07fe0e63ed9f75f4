#!/usr/bin/env bash
# Issue 5: where the first denoising step of a fresh process spends its seconds (GPU box).
# Installs the package, builds the kernels (sm_90a), lists what the extension carries (SASS / PTX), then
# benchmarks/first_step.py --profile over fresh processes in an order that separates the suspects:
# a cold machine (only the first process slow), our kernels' first launch (every kernels+* process slow),
# cuDNN plan building for our direct attention call (kernels+cudnn slow, kernels+flash not).
# Device tool: `bash benchmarks/gpu_first_step.sh`; log in $OUT/first_step.log. GPU: CUDA_VISIBLE_DEVICES as given.
set -uo pipefail
OUT=${OUT:-/tmp/first_step_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FOURREAL_CUDA_ARCHS=${FOURREAL_CUDA_ARCHS:-90a}
{
  FOURREAL_BUILD_CUDA=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
    || { [ -e fourreal_rt/export ] || ln -s ../export fourreal_rt/export; export PYTHONPATH=$PWD; }
  ls fourreal_rt/_C*.so >/dev/null 2>&1 || FOURREAL_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} timeout 240 \
    python3 setup.py build_ext --inplace >"$OUT/build_ext.log" 2>&1
  echo "extension: $(ls fourreal_rt/_C*.so)"
  echo "ELF (SASS) images: $(cuobjdump --list-elf fourreal_rt/_C*.so 2>&1 | sed 's/.*\.\(sm_[0-9a-z]*\)\..*/\1/' | sort | uniq -c | tr '\n' ' ')"
  echo "PTX images: $(cuobjdump --list-ptx fourreal_rt/_C*.so 2>&1 | wc -l)"
  python3 -c "import torch; print('torch', torch.__version__, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())"
  python3 benchmarks/first_step.py --preset paper --profile \
    --configs ${CONFIGS:-twins+cudnn kernels+flash kernels+cudnn kernels+cudnn twins+cudnn}
} 2>&1 | tee "$OUT/first_step.log"
