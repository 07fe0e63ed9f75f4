// Weight modulation (modulate_weight.h): hard sync's (1 + s) on the columns, a gated residual's gate on the rows.
#include "common.cuh"
#include "modulate_weight.h"

namespace fourreal {

// w_out[b, i, j] = w[i, j] * (offset + mod[b, kRows ? i : j]); one thread a VEC-wide chunk of a row. kRows with
// a bias: the thread of a row's first chunk also writes bias_out[b, i] = bias[i] * (offset + mod[b, i]).
template <typename T, int VEC, bool kRows>
__global__ void __launch_bounds__(256) modulate_weight_kernel(const T* __restrict__ w, const float* __restrict__ mod,
                                                              T* __restrict__ out, int64_t rows, int64_t cols,
                                                              int64_t total_chunks, float offset,
                                                              const T* __restrict__ bias, T* __restrict__ bias_out) {
  const int64_t chunks_per_batch = rows * cols / VEC;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total_chunks;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / chunks_per_batch;
    const int64_t e = (i - b * chunks_per_batch) * VEC;  // element of w
    const int64_t j = e % cols;                           // column (VEC | cols, so a chunk stays in one row)
    float x[VEC], m[VEC];
    load_vec<T, VEC>(w + e, x);
    if (kRows) {
      const int64_t r = e / cols;
      const float g = mod[b * rows + r];
#pragma unroll
      for (int k = 0; k < VEC; ++k) m[k] = g;
      if (bias != nullptr && j == 0) bias_out[b * rows + r] = from_float<T>(to_float(bias[r]) * (offset + g));
    } else {
      load_f32<VEC>(mod + b * cols + j, m);
    }
#pragma unroll
    for (int k = 0; k < VEC; ++k) x[k] *= offset + m[k];
    store_vec<T, VEC>(out + i * VEC, x);
  }
}

namespace {

template <typename T, bool kRows>
cudaError_t modulate_t(const void* w, const float* mod, void* out, int B, int64_t rows, int64_t cols, float offset,
                       const void* bias, void* bias_out, cudaStream_t st) {
  constexpr int V = 16 / sizeof(T);
  const bool vec = cols % V == 0 && ptr_aligned(w, 16) && ptr_aligned(out, 16) && (kRows || ptr_aligned(mod, 16));
  const int64_t total = B * rows * cols / (vec ? V : 1);
  if (total == 0) return cudaSuccess;
  const unsigned grid = grid_for(total, 256);
  if (vec) {
    modulate_weight_kernel<T, V, kRows><<<grid, 256, 0, st>>>(static_cast<const T*>(w), mod, static_cast<T*>(out), rows,
                                                              cols, total, offset, static_cast<const T*>(bias),
                                                              static_cast<T*>(bias_out));
  } else {
    modulate_weight_kernel<T, 1, kRows><<<grid, 256, 0, st>>>(static_cast<const T*>(w), mod, static_cast<T*>(out), rows,
                                                              cols, total, offset, static_cast<const T*>(bias),
                                                              static_cast<T*>(bias_out));
  }
  return cudaGetLastError();
}

template <bool kRows>
cudaError_t modulate(DType dtype, const void* w, const float* mod, void* w_out, int B, int64_t rows, int64_t cols,
                     float offset, const void* bias, void* bias_out, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32: return modulate_t<float, kRows>(w, mod, w_out, B, rows, cols, offset, bias, bias_out, stream);
    case DType::kBFloat16:
      return modulate_t<__nv_bfloat16, kRows>(w, mod, w_out, B, rows, cols, offset, bias, bias_out, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t modulate_columns_launch(DType dtype, const void* w, const float* mod, void* w_out, int B, int64_t rows,
                                    int64_t cols, cudaStream_t stream) {
  return modulate<false>(dtype, w, mod, w_out, B, rows, cols, 1.f, nullptr, nullptr, stream);
}

cudaError_t scale_rows_launch(DType dtype, const void* w, const float* gate, void* w_out, int B, int64_t rows,
                              int64_t cols, const void* bias, void* bias_out, cudaStream_t stream) {
  return modulate<true>(dtype, w, gate, w_out, B, rows, cols, 0.f, bias, bias_out, stream);
}

}  // namespace fourreal
