// Gate + residual in one pass: x and y read in place (any row strides), 16-byte accesses, fp32 fma.
#include "gated_residual.h"
#include "rowwise.cuh"

namespace fourreal {

namespace {

template <typename T>
cudaError_t launch_residual_t(const ResidualParams& p, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const unsigned grid = grid_for(p.rows, kRowsPerBlock);
  if (residual_can_vectorize<T>(p)) {
    residual_kernel<T, V><<<grid, kRowThreads, 0, stream>>>(p);
  } else {
    residual_kernel<T, 1><<<grid, kRowThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t gated_residual_launch(DType dtype, const ResidualParams& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  switch (dtype) {
    case DType::kFloat32: return launch_residual_t<float>(p, stream);
    case DType::kBFloat16: return launch_residual_t<__nv_bfloat16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fourreal
