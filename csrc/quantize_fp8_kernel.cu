// Row-wise e4m3 quantization, saturating conversion, 16-byte loads. Rows of up to kRowChunks 16-byte chunks: one
// block per row, the row held in registers (two chunks a thread), one read of it: amax (block reduction), then scale
// and convert. Longer or unaligned rows: one warp per row, two passes (the second reads the row back from L1/L2).
#include "common.cuh"
#include "fp8.cuh"
#include "quantize_fp8.h"

namespace fourreal {

__device__ __forceinline__ float gelu_tanh(float x) {
  const float k0 = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * x * (1.f + tanhf(k0 * (x + 0.044715f * x * x * x)));
}

template <typename T, int VEC, bool GELU>
__global__ void __launch_bounds__(256) quantize_fp8_kernel(const T* __restrict__ x, int64_t x_stride, int64_t rows, int K,
                                                           uint8_t* __restrict__ q, float* __restrict__ scale) {
  const int lane = threadIdx.x & 31;
  const int nchunk = K / VEC;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
    const T* __restrict__ xr = x + r * x_stride;
    float amax = 0.f;
#pragma unroll 4
    for (int c = lane; c < nchunk; c += 32) {
      float v[VEC];
      load_vec<T, VEC>(xr + c * VEC, v);
#pragma unroll
      for (int i = 0; i < VEC; ++i) amax = fmaxf(amax, fabsf(GELU ? gelu_tanh(v[i]) : v[i]));
    }
    amax = fmaxf(warp_max(amax), 1e-12f);
    const float inv = kFp8E4m3Max / amax;
    if (lane == 0) scale[r] = amax / kFp8E4m3Max;
    uint8_t* __restrict__ qr = q + r * static_cast<int64_t>(K);
#pragma unroll 4
    for (int c = lane; c < nchunk; c += 32) {
      float v[VEC];
      load_vec<T, VEC>(xr + c * VEC, v);
#pragma unroll
      for (int i = 0; i < VEC; ++i) v[i] = (GELU ? gelu_tanh(v[i]) : v[i]) * inv;
      store_fp8<VEC>(qr + c * VEC, v);
    }
  }
}

constexpr int kChunksPerThread = 2;
constexpr int kRowChunks = 1024 * kChunksPerThread;

template <typename T, int VEC, bool GELU>
__global__ void __launch_bounds__(1024) quantize_fp8_row_kernel(const T* __restrict__ x, int64_t x_stride,
                                                                 int64_t rows, int K, uint8_t* __restrict__ q,
                                                                 float* __restrict__ scale) {
  __shared__ float smem[32];
  const int nchunk = K / VEC;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* __restrict__ xr = x + r * x_stride;
    float v[kChunksPerThread][VEC];
    float amax = 0.f;
#pragma unroll
    for (int j = 0; j < kChunksPerThread; ++j) {
      const int c = threadIdx.x + j * blockDim.x;
      if (c < nchunk) {
        load_vec<T, VEC>(xr + c * VEC, v[j]);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          if (GELU) v[j][i] = gelu_tanh(v[j][i]);
          amax = fmaxf(amax, fabsf(v[j][i]));
        }
      }
    }
    amax = fmaxf(block_max(amax, smem), 1e-12f);
    const float inv = kFp8E4m3Max / amax;
    if (threadIdx.x == 0) scale[r] = amax / kFp8E4m3Max;
    uint8_t* __restrict__ qr = q + r * static_cast<int64_t>(K);
#pragma unroll
    for (int j = 0; j < kChunksPerThread; ++j) {
      const int c = threadIdx.x + j * blockDim.x;
      if (c < nchunk) {
#pragma unroll
        for (int i = 0; i < VEC; ++i) v[j][i] *= inv;
        store_fp8<VEC>(qr + c * VEC, v[j]);
      }
    }
  }
}

namespace {

template <typename T>
cudaError_t quantize_t(const void* x, int64_t x_stride, int64_t rows, int K, bool gelu, uint8_t* q, float* scale,
                       cudaStream_t st) {
  constexpr int V = 16 / sizeof(T);
  const bool vec = K % V == 0 && x_stride % V == 0 && ptr_aligned(x, 16) && ptr_aligned(q, 16);
  const unsigned grid = grid_for(rows, 8);
  const T* xp = static_cast<const T*>(x);
  if (vec && K / V <= kRowChunks) {    // the row in registers: ceil(chunks / 2) threads, a multiple of 32
    const int per = (K / V + kChunksPerThread - 1) / kChunksPerThread;
    const unsigned threads = static_cast<unsigned>((per + 31) / 32 * 32);
    const unsigned blocks = grid_for(rows, 1);
    if (gelu) quantize_fp8_row_kernel<T, V, true><<<blocks, threads, 0, st>>>(xp, x_stride, rows, K, q, scale);
    else quantize_fp8_row_kernel<T, V, false><<<blocks, threads, 0, st>>>(xp, x_stride, rows, K, q, scale);
  } else if (vec) {
    if (gelu) quantize_fp8_kernel<T, V, true><<<grid, 256, 0, st>>>(xp, x_stride, rows, K, q, scale);
    else quantize_fp8_kernel<T, V, false><<<grid, 256, 0, st>>>(xp, x_stride, rows, K, q, scale);
  } else {
    if (gelu) quantize_fp8_kernel<T, 1, true><<<grid, 256, 0, st>>>(xp, x_stride, rows, K, q, scale);
    else quantize_fp8_kernel<T, 1, false><<<grid, 256, 0, st>>>(xp, x_stride, rows, K, q, scale);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t quantize_fp8_rowwise_launch(DType dtype, const void* x, int64_t x_stride, int64_t rows, int K, bool gelu,
                                        uint8_t* q, float* scale, cudaStream_t stream) {
  if (rows == 0 || K == 0) return cudaSuccess;
  switch (dtype) {
    case DType::kFloat32: return quantize_t<float>(x, x_stride, rows, K, gelu, q, scale, stream);
    case DType::kBFloat16: return quantize_t<__nv_bfloat16>(x, x_stride, rows, K, gelu, q, scale, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fourreal
