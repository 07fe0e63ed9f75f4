// e4m3 helpers shared by the kernels that write or read FP8 (quantize_fp8, grid attention's FP8 path): saturating
// VEC-wide stores and loads of packed e4m3 bytes.
#pragma once

#include <cuda_fp8.h>

#include <cstdint>

namespace fourreal {

template <int VEC>
__device__ __forceinline__ void store_fp8(uint8_t* __restrict__ p, const float (&v)[VEC]) {
  if constexpr (VEC % 2 == 0) {
    __nv_fp8x2_storage_t pk[VEC / 2];
#pragma unroll
    for (int j = 0; j < VEC / 2; ++j)
      pk[j] = __nv_cvt_float2_to_fp8x2(make_float2(v[2 * j], v[2 * j + 1]), __NV_SATFINITE, __NV_E4M3);
    if constexpr (VEC == 8) {
      uint2 u;
      u.x = static_cast<uint32_t>(pk[0]) | (static_cast<uint32_t>(pk[1]) << 16);
      u.y = static_cast<uint32_t>(pk[2]) | (static_cast<uint32_t>(pk[3]) << 16);
      *reinterpret_cast<uint2*>(p) = u;
    } else if constexpr (VEC == 4) {
      *reinterpret_cast<uint32_t*>(p) = static_cast<uint32_t>(pk[0]) | (static_cast<uint32_t>(pk[1]) << 16);
    } else {
#pragma unroll
      for (int j = 0; j < VEC / 2; ++j) *reinterpret_cast<__nv_fp8x2_storage_t*>(p + 2 * j) = pk[j];
    }
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) p[j] = __nv_cvt_float_to_fp8(v[j], __NV_SATFINITE, __NV_E4M3);
  }
}

// Loads VEC e4m3 bytes as floats (8 bytes in one access when VEC == 8).
template <int VEC>
__device__ __forceinline__ void load_fp8(const uint8_t* __restrict__ p, float (&out)[VEC]) {
  alignas(8) uint8_t b[VEC];
  if constexpr (VEC == 8) {
    *reinterpret_cast<uint2*>(b) = *reinterpret_cast<const uint2*>(p);
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) b[j] = p[j];
  }
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(b[j]), __NV_E4M3);
    out[j] = __half2float(__half(h));
  }
}

}  // namespace fourreal
