// Gate + residual in one pass: x and y read in place (any row strides), 16-byte accesses, fp32 fma.
#include "gated_residual.h"
#include "rowwise.cuh"

namespace fourreal {

namespace {

template <typename T>
cudaError_t launch_residual_t(const ResidualParams& p, int nstreams, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const dim3 grid(grid_for(p.rows, kRowsPerBlock), nstreams);
  if (residual_can_vectorize<T>(p, nstreams)) {
    residual_kernel<T, V><<<grid, kRowThreads, 0, stream>>>(p);
  } else {
    residual_kernel<T, 1><<<grid, kRowThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t gated_residual_launch(DType dtype, const ResidualParams& p, int nstreams, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  if (nstreams < 1 || nstreams > 2) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32: return launch_residual_t<float>(p, nstreams, stream);
    case DType::kBFloat16: return launch_residual_t<__nv_bfloat16>(p, nstreams, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fourreal
