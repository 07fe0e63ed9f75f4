// The weight side of hard sync: fold the σ-modulation (1 + s) into the columns of [W^v | W^t], once per batch.
#include "common.cuh"
#include "hard_sync.h"

namespace fourreal {

template <typename T, int VEC>
__global__ void __launch_bounds__(256) modulate_columns_kernel(const T* __restrict__ w, const float* __restrict__ mod,
                                                               T* __restrict__ out, int64_t rows, int64_t cols,
                                                               int64_t total_chunks) {
  const int64_t chunks_per_batch = rows * cols / VEC;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total_chunks;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / chunks_per_batch;
    const int64_t e = (i - b * chunks_per_batch) * VEC;  // element of w
    const int64_t j = e % cols;                           // column (VEC | cols, so a chunk stays in one row)
    float x[VEC], m[VEC];
    load_vec<T, VEC>(w + e, x);
    load_f32<VEC>(mod + b * cols + j, m);
#pragma unroll
    for (int k = 0; k < VEC; ++k) x[k] *= 1.f + m[k];
    store_vec<T, VEC>(out + i * VEC, x);
  }
}

namespace {

template <typename T>
cudaError_t modulate_t(const void* w, const float* mod, void* out, int B, int64_t rows, int64_t cols, cudaStream_t st) {
  constexpr int V = 16 / sizeof(T);
  const bool vec = cols % V == 0 && ptr_aligned(w, 16) && ptr_aligned(out, 16) && ptr_aligned(mod, 16);
  const int64_t total = B * rows * cols / (vec ? V : 1);
  if (total == 0) return cudaSuccess;
  const unsigned grid = grid_for(total, 256);
  if (vec) {
    modulate_columns_kernel<T, V><<<grid, 256, 0, st>>>(static_cast<const T*>(w), mod, static_cast<T*>(out), rows, cols, total);
  } else {
    modulate_columns_kernel<T, 1><<<grid, 256, 0, st>>>(static_cast<const T*>(w), mod, static_cast<T*>(out), rows, cols, total);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t modulate_columns_launch(DType dtype, const void* w, const float* mod, void* w_out, int B, int64_t rows,
                                    int64_t cols, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32: return modulate_t<float>(w, mod, w_out, B, rows, cols, stream);
    case DType::kBFloat16: return modulate_t<__nv_bfloat16>(w, mod, w_out, B, rows, cols, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fourreal
