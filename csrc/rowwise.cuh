// Row-wise kernel templates shared by modulated_layernorm, gated_residual and soft_sync: one warp per token row
// of D channels, fp32 arithmetic, one rounding on the way out. Up to two "streams" (the view and time streams
// of a sync layer) run in one launch through blockIdx.y.
#pragma once

#include <type_traits>

#include "common.cuh"
#include "fp8.cuh"
#include "rowwise_params.h"

namespace fourreal {

// out[r, :] = LayerNorm(x[r, :]) * (1 + scale[b, :]) + shift[b, :], b = r / rows_per_batch.
// The row stays in registers: lane `l` holds chunks l, l + 32, ... (NIT of them) of VEC channels each.
// TO = uint8_t: the row is written as e4m3 with its own scale (amax / 448, to s.row_scale[r]), as the FP8 linears
// take their input (quantize_fp8_kernel.cu), from the fp32 values without a bf16 rounding in between.
template <typename T, typename TO, int VEC, int NIT>
__global__ void __launch_bounds__(256) modln_kernel(const ModLNParams p) {
  constexpr bool kFp8 = std::is_same_v<TO, uint8_t>;
  const ModLNStream& s = p.s[blockIdx.y];
  const int lane = threadIdx.x & 31;
  const int nchunk = p.D / VEC;
  const float inv_d = 1.0f / static_cast<float>(p.D);
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  const T* __restrict__ x = static_cast<const T*>(s.x);
  TO* __restrict__ out = static_cast<TO*>(s.out);

  for (int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); r < p.rows; r += warps) {
    const T* __restrict__ xr = x + s.x_rows.offset(r);
    float v[NIT][VEC];
    float sum = 0.f;
#pragma unroll
    for (int it = 0; it < NIT; ++it) {
      const int c = it * 32 + lane;
      if (c < nchunk) {
        load_vec<T, VEC>(xr + c * VEC, v[it]);
#pragma unroll
        for (int i = 0; i < VEC; ++i) sum += v[it][i];
      } else {
#pragma unroll
        for (int i = 0; i < VEC; ++i) v[it][i] = 0.f;
      }
    }
    const float mean = warp_sum(sum) * inv_d;
    float sq = 0.f;
#pragma unroll
    for (int it = 0; it < NIT; ++it) {
      if (it * 32 + lane < nchunk) {
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const float d = v[it][i] - mean;
          sq += d * d;
        }
      }
    }
    const float rstd = rsqrtf(warp_sum(sq) * inv_d + p.eps);
    const int64_t b = r / p.rows_per_batch;
    const float* __restrict__ sh = s.shift + b * s.shift_stride;
    const float* __restrict__ sc = s.scale + b * s.scale_stride;
    TO* __restrict__ orow = out + r * s.out_stride;
    float amax = 0.f;
#pragma unroll
    for (int it = 0; it < NIT; ++it) {
      const int c = it * 32 + lane;
      if (c < nchunk) {
        float a[VEC], m[VEC];
        load_f32<VEC>(sc + c * VEC, m);
        load_f32<VEC>(sh + c * VEC, a);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          v[it][i] = (v[it][i] - mean) * rstd * (1.f + m[i]) + a[i];
          if constexpr (kFp8) amax = fmaxf(amax, fabsf(v[it][i]));
        }
        if constexpr (!kFp8) store_vec<TO, VEC>(orow + c * VEC, v[it]);
      }
    }
    if constexpr (kFp8) {
      amax = fmaxf(warp_max(amax), 1e-12f);
      const float inv = kFp8E4m3Max / amax;
      if (lane == 0) s.row_scale[r] = amax / kFp8E4m3Max;
#pragma unroll
      for (int it = 0; it < NIT; ++it) {
        const int c = it * 32 + lane;
        if (c < nchunk) {
#pragma unroll
          for (int i = 0; i < VEC; ++i) v[it][i] *= inv;
          store_fp8<VEC>(orow + c * VEC, v[it]);
        }
      }
    }
  }
}

// out[r, :] = x[r, :] + gate[b, :] * y[r, :], b = r / rows_per_batch.
template <typename T, int VEC>
__global__ void __launch_bounds__(256) residual_kernel(const ResidualParams p) {
  const int lane = threadIdx.x & 31;
  const int nchunk = p.D / VEC;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ y = static_cast<const T*>(p.y);
  T* __restrict__ out = static_cast<T*>(p.out);

  for (int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); r < p.rows; r += warps) {
    const T* __restrict__ xr = x + p.x_rows.offset(r);
    const T* __restrict__ yr = y + p.y_rows.offset(r);
    const float* __restrict__ g = p.gate + (r / p.rows_per_batch) * p.gate_stride;
    T* __restrict__ orow = out + r * p.out_stride;
#pragma unroll 4
    for (int c = lane; c < nchunk; c += 32) {
      float a[VEC], b[VEC], m[VEC], o[VEC];
      load_vec<T, VEC>(xr + c * VEC, a);
      load_vec<T, VEC>(yr + c * VEC, b);
      load_f32<VEC>(g + c * VEC, m);
#pragma unroll
      for (int i = 0; i < VEC; ++i) o[i] = fmaf(m[i], b[i], a[i]);
      store_vec<T, VEC>(orow + c * VEC, o);
    }
  }
}

constexpr int kRowThreads = 256;  // 8 warps = 8 rows a block
constexpr int kRowsPerBlock = kRowThreads / 32;

// Vector width: 16 bytes when every row start, the channel count and the fp32 vectors allow it, else 1.
template <typename T, typename TO = T>
inline bool modln_can_vectorize(const ModLNParams& p, int nstreams) {
  constexpr int V = 16 / sizeof(T);
  if (p.D % V) return false;
  for (int i = 0; i < nstreams; ++i) {
    const ModLNStream& s = p.s[i];
    if (!ptr_aligned(s.x, 16) || !rows_aligned(s.x_rows, V) || !ptr_aligned(s.out, V * sizeof(TO)) || s.out_stride % V)
      return false;
    if (!ptr_aligned(s.shift, 16) || !ptr_aligned(s.scale, 16) || s.shift_stride % 4 || s.scale_stride % 4) return false;
  }
  return true;
}

template <typename T>
inline bool residual_can_vectorize(const ResidualParams& p) {
  constexpr int V = 16 / sizeof(T);
  if (p.D % V) return false;
  if (!ptr_aligned(p.x, 16) || !rows_aligned(p.x_rows, V) || !ptr_aligned(p.y, 16) || !rows_aligned(p.y_rows, V))
    return false;
  if (!ptr_aligned(p.out, 16) || p.out_stride % V) return false;
  return ptr_aligned(p.gate, 16) && p.gate_stride % 4 == 0;
}

}  // namespace fourreal
