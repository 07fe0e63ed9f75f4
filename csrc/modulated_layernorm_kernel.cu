// adaLN modulate + LayerNorm in one pass: one warp per token row, the row held in registers, fp32 statistics.
#include "modulated_layernorm.h"
#include "rowwise.cuh"

namespace fourreal {

namespace {

constexpr int kMaxRowFloats = 64;  // fp32 values a lane holds: D <= 32 * 64 = 2048 channels

// TO = T, or uint8_t for e4m3 output with row scales (one stream).
template <typename T, typename TO>
cudaError_t launch_modln_t(const ModLNParams& p, int nstreams, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const dim3 grid(grid_for(p.rows, kRowsPerBlock), nstreams);
  bool ok;
  if (modln_can_vectorize<T, TO>(p, nstreams)) {
    FOURREAL_DISPATCH_NIT((p.D / V + 31) / 32, kMaxRowFloats / V, ok,
                          modln_kernel<T, TO, V, NIT><<<grid, kRowThreads, 0, stream>>>(p));
  } else {
    FOURREAL_DISPATCH_NIT((p.D + 31) / 32, kMaxRowFloats, ok,
                          modln_kernel<T, TO, 1, NIT><<<grid, kRowThreads, 0, stream>>>(p));
  }
  if (!ok) return cudaErrorInvalidValue;
  return cudaGetLastError();
}

}  // namespace

cudaError_t modulated_layernorm_launch(DType dtype, const ModLNParams& p, int nstreams, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  if (nstreams < 1 || nstreams > 2) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32: return launch_modln_t<float, float>(p, nstreams, stream);
    case DType::kBFloat16: return launch_modln_t<__nv_bfloat16, __nv_bfloat16>(p, nstreams, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t modulated_layernorm_fp8_launch(DType dtype, const ModLNParams& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  if (p.s[0].row_scale == nullptr) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32: return launch_modln_t<float, uint8_t>(p, 1, stream);
    case DType::kBFloat16: return launch_modln_t<__nv_bfloat16, uint8_t>(p, 1, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fourreal
