// Shared device helpers for the fourreal kernels. CUDA headers only (no torch): every launcher takes raw
// pointers, sizes and strides, so the kernels also build into the torch-free CMake library and its tests.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "types.h"

namespace fourreal {

template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

// VEC elements moved as one access (16 bytes when VEC * sizeof(T) == 16).
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, float (&out)[VEC]) {
  const Pack<T, VEC> t = *reinterpret_cast<const Pack<T, VEC>*>(p);
#pragma unroll
  for (int i = 0; i < VEC; ++i) out[i] = to_float<T>(t.v[i]);
}

template <typename T, int VEC>
__device__ __forceinline__ void store_vec(T* __restrict__ p, const float (&in)[VEC]) {
  Pack<T, VEC> t;
#pragma unroll
  for (int i = 0; i < VEC; ++i) t.v[i] = from_float<T>(in[i]);
  *reinterpret_cast<Pack<T, VEC>*>(p) = t;
}

// Loads VEC fp32 values (modulation vectors, RoPE tables), 16 bytes at a time where VEC allows.
template <int VEC>
__device__ __forceinline__ void load_f32(const float* __restrict__ p, float (&out)[VEC]) {
  if constexpr (VEC % 4 == 0) {
#pragma unroll
    for (int i = 0; i < VEC; i += 4) {
      const float4 t = *reinterpret_cast<const float4*>(p + i);
      out[i] = t.x; out[i + 1] = t.y; out[i + 2] = t.z; out[i + 3] = t.w;
    }
  } else if constexpr (VEC % 2 == 0) {
#pragma unroll
    for (int i = 0; i < VEC; i += 2) {
      const float2 t = *reinterpret_cast<const float2*>(p + i);
      out[i] = t.x; out[i + 1] = t.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = p[i];
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Max over the block (blockDim.x a multiple of 32), returned to every thread; smem: 32 floats, free for the next call
// when this returns (so a grid-stride loop may call it once an iteration).
__device__ __forceinline__ float block_max(float v, float* smem) {
  v = warp_max(v);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? smem[lane] : 0.f;
  v = warp_max(v);
  __syncthreads();
  return v;
}

// Blocks for a grid-stride loop of `work` items with `per_block` items a block.
inline unsigned grid_for(int64_t work, int64_t per_block) {
  int64_t g = (work + per_block - 1) / per_block;
  if (g < 1) g = 1;
  if (g > (1 << 20)) g = 1 << 20;
  return static_cast<unsigned>(g);
}

}  // namespace fourreal

// Runs the statement(s) with `constexpr int NIT` set to the smallest of 1, 2, 4, ..., 64 that is >= need;
// sets ok = false (running nothing) if that NIT would exceed the compile-time bound maxnit.
#define FOURREAL_NIT_CASE(N, maxnit, ok, ...)                   \
  {                                                             \
    if constexpr ((N) <= (maxnit)) {                            \
      constexpr int NIT = (N);                                  \
      __VA_ARGS__;                                              \
    } else {                                                    \
      ok = false;                                               \
    }                                                           \
  }
#define FOURREAL_DISPATCH_NIT(need, maxnit, ok, ...)                                   \
  do {                                                                                 \
    ok = true;                                                                         \
    const int need_ = (need);                                                          \
    if (need_ <= 1) FOURREAL_NIT_CASE(1, maxnit, ok, __VA_ARGS__)                      \
    else if (need_ <= 2) FOURREAL_NIT_CASE(2, maxnit, ok, __VA_ARGS__)                 \
    else if (need_ <= 4) FOURREAL_NIT_CASE(4, maxnit, ok, __VA_ARGS__)                 \
    else if (need_ <= 8) FOURREAL_NIT_CASE(8, maxnit, ok, __VA_ARGS__)                 \
    else if (need_ <= 16) FOURREAL_NIT_CASE(16, maxnit, ok, __VA_ARGS__)               \
    else if (need_ <= 32) FOURREAL_NIT_CASE(32, maxnit, ok, __VA_ARGS__)               \
    else if (need_ <= 64) FOURREAL_NIT_CASE(64, maxnit, ok, __VA_ARGS__)               \
    else ok = false;                                                                   \
  } while (0)
