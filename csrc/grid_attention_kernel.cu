// RoPE + pack and the output gather of grid attention: one thread per VEC-channel chunk of one (token, head) (RoPE +
// pack and its amax pass: K consecutive chunks), 16-byte loads and stores, output written in its own (contiguous)
// order so that writes coalesce. The FP8 variants (TO / TI = uint8_t: e4m3 bytes) scale by the per-tensor amax of an
// amax pass over the same inputs. K = 4 where a head's chunks allow (else 1) shares the index arithmetic (six
// divisions) among K chunks: at one chunk a thread it took most of the SMs' issue slots, and the paper step's FP8
// pack went 8.76 -> 7.28 ms, its amax 5.30 -> 4.35 ms (H100, session 10). The gather got slower with K = 4 (3.34 ->
// 4.07 ms: its stores then cover each 16-byte sector over several instructions), so it keeps one chunk a thread.
#include <algorithm>
#include <type_traits>

#include "common.cuh"
#include "fp8.cuh"
#include "grid_attention.h"

namespace fourreal {

// Element offset of chunk i of a walk over [B, V, T, N, H, hd / VEC] in grid order, in a tensor with strides st
// along (b, v, t, n, h) and a contiguous last dim.
template <int VEC, typename Idx>
__device__ __forceinline__ int64_t grid_offset(Idx i, int nchunk, int H, int N, int T, int V, const int64_t* st) {
  const int c = static_cast<int>(i % nchunk); i /= nchunk;
  const int h = static_cast<int>(i % H); i /= H;
  const int n = static_cast<int>(i % N); i /= N;
  const int t = static_cast<int>(i % T); i /= T;
  const int v = static_cast<int>(i % V);
  const int b = static_cast<int>(i / V);
  return b * st[0] + v * st[1] + t * st[2] + n * st[3] + h * st[4] + c * VEC;
}

// TO = T: plain pack; TO = uint8_t: e4m3 output, each tensor scaled by 448 / its amax (scalars[kAmaxQ + which], from
// rope_amax_kernel), and the first thread writes cuDNN's FP8 scalars.
template <typename T, typename TO, int VEC, int K, typename Idx>
__global__ void __launch_bounds__(256) rope_pack_kernel(const RopePackParams p, float* __restrict__ scalars) {
  constexpr bool kFp8 = std::is_same_v<TO, uint8_t>;
  const int which = blockIdx.y;  // 0: q, 1: k, 2: v
  const int nchunk = p.hd / (VEC * K);  // groups of K chunks a head
  const Idx total = static_cast<Idx>(p.B) * p.V * p.T * p.N * p.H * nchunk;
  const int64_t* st = p.src_strides[which];
  const T* __restrict__ src = static_cast<const T*>(p.src[which]);
  TO* __restrict__ dst = static_cast<TO*>(p.dst[which]);
  const bool rotate = which < p.nrot;
  const int half = p.hd / 2;
  float mul = 1.f;
  if constexpr (kFp8) {
    const float amax = fmaxf(scalars[kAmaxQ + which], 1e-30f);
    mul = kFp8E4m3Max / amax;
    if (blockIdx.x == 0 && threadIdx.x == 0) {
      scalars[kDescaleQ + which] = amax / kFp8E4m3Max;
      if (which == 2) {
        scalars[kDescaleS] = 1.f / kFp8E4m3Max;
        scalars[kScaleS] = kFp8E4m3Max;
        scalars[kScaleO] = kFp8E4m3Max / (amax * kOutputHeadroom);
        scalars[kDescaleO] = amax * kOutputHeadroom / kFp8E4m3Max;
      }
    }
  }
  for (Idx i = static_cast<Idx>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<Idx>(gridDim.x) * blockDim.x) {
    // i runs over the output [S, L, H, hd / (VEC K)]: decompose into (group, h, n, then the two grid axes)
    Idx r = i;
    const int c = static_cast<int>(r % nchunk) * K; r /= nchunk;  // its first chunk
    const int h = static_cast<int>(r % p.H); r /= p.H;
    const int n = static_cast<int>(r % p.N); r /= p.N;
    int b, v, t;
    if (p.axis == kAxisTime) {  // output token order (b, v, t, n)
      t = static_cast<int>(r % p.T); r /= p.T;
      v = static_cast<int>(r % p.V); b = static_cast<int>(r / p.V);
    } else {                    // output token order (b, t, v, n)
      v = static_cast<int>(r % p.V); r /= p.V;
      t = static_cast<int>(r % p.T); b = static_cast<int>(r / p.T);
    }
    const T* s = src + b * st[0] + v * st[1] + t * st[2] + n * st[3] + h * st[4] + c * VEC;
    float x[K][VEC];
#pragma unroll
    for (int k = 0; k < K; ++k) load_vec<T, VEC>(s + k * VEC, x[k]);
    if (rotate) {
      const int f = p.axis == kAxisTime ? t : v;  // frame index along the attended axis
      const int64_t tab = (static_cast<int64_t>(f) * p.N + n) * half + c * (VEC / 2);
#pragma unroll
      for (int k = 0; k < K; ++k) {
        float cs[VEC / 2], sn[VEC / 2];
        load_f32<VEC / 2>(p.cos + tab + k * (VEC / 2), cs);
        load_f32<VEC / 2>(p.sin + tab + k * (VEC / 2), sn);
#pragma unroll
        for (int j = 0; j < VEC / 2; ++j) {
          const float a = x[k][2 * j], bb = x[k][2 * j + 1];
          x[k][2 * j] = a * cs[j] - bb * sn[j];
          x[k][2 * j + 1] = a * sn[j] + bb * cs[j];
        }
      }
    }
    TO* d = dst + static_cast<int64_t>(i) * (K * VEC);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if constexpr (kFp8) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) x[k][j] *= mul;
        store_fp8<VEC>(d + k * VEC, x[k]);
      } else {
        store_vec<TO, VEC>(d + k * VEC, x[k]);
      }
    }
  }
}

// Per-tensor amax for rope_pack_kernel's FP8 output: for rotated tensors (q, k) the largest channel-pair norm, for
// the others the largest |x|; block maxima combined with atomicMax on the float bits (non-negative floats order
// as their bit patterns), into amax[which], zeroed before the launch.
template <typename T, int VEC, int K, typename Idx>
__global__ void __launch_bounds__(256) rope_amax_kernel(const RopePackParams p, float* __restrict__ amax) {
  const int which = blockIdx.y;
  const int nchunk = p.hd / (VEC * K);  // groups of K chunks a head
  const Idx total = static_cast<Idx>(p.B) * p.V * p.T * p.N * p.H * nchunk;
  const int64_t* st = p.src_strides[which];
  const T* __restrict__ src = static_cast<const T*>(p.src[which]);
  const bool pairs = which < p.nrot;
  float m = 0.f;  // max of squared pair norms (pairs) or of |x|
  for (Idx i = static_cast<Idx>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<Idx>(gridDim.x) * blockDim.x) {
    const T* s = src + grid_offset<VEC * K>(i, nchunk, p.H, p.N, p.T, p.V, st);   // the source's own order
    float x[K][VEC];
#pragma unroll
    for (int k = 0; k < K; ++k) load_vec<T, VEC>(s + k * VEC, x[k]);
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (pairs) {
#pragma unroll
        for (int j = 0; j < VEC / 2; ++j) m = fmaxf(m, x[k][2 * j] * x[k][2 * j] + x[k][2 * j + 1] * x[k][2 * j + 1]);
      } else {
#pragma unroll
        for (int j = 0; j < VEC; ++j) m = fmaxf(m, fabsf(x[k][j]));
      }
    }
  }
  __shared__ float smem[32];
  m = block_max(m, smem);
  if (threadIdx.x == 0) atomicMax(reinterpret_cast<unsigned*>(amax) + which, __float_as_uint(pairs ? sqrtf(m) : m));
}

// TI = uint8_t: e4m3 input, each value times *scale on the way out.
template <typename TI, typename TO, int VEC, typename Idx>
__global__ void __launch_bounds__(256) grid_gather_kernel(const GridGatherParams p, const float* __restrict__ scale) {
  const int nchunk = p.hd / VEC;
  const Idx total = static_cast<Idx>(p.B) * p.V * p.T * p.N * p.H * nchunk;
  const TI* __restrict__ src = static_cast<const TI*>(p.src);
  TO* __restrict__ dst = static_cast<TO*>(p.dst);
  const float mul = scale ? *scale : 1.f;
  const int64_t* st = p.src_strides;
  for (Idx i = static_cast<Idx>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<Idx>(gridDim.x) * blockDim.x) {
    const TI* s = src + grid_offset<VEC>(i, nchunk, p.H, p.N, p.T, p.V, st);   // output order: the grid's
    float x[VEC];
    if constexpr (std::is_same_v<TI, uint8_t>) {
      load_fp8<VEC>(s, x);
#pragma unroll
      for (int j = 0; j < VEC; ++j) x[j] *= mul;
    } else {
      load_vec<TI, VEC>(s, x);
    }
    store_vec<TO, VEC>(dst + static_cast<int64_t>(i) * VEC, x);
  }
}

namespace {

constexpr int kThreads = 256;

bool strides_aligned(const int64_t* st, int n, int elems) {
  for (int i = 0; i < n; ++i)
    if (st[i] % elems) return false;
  return true;
}

// Chunks a thread: 4 where each head's vectorized chunks divide into fours, else 1.
constexpr int kGroup = 4;

// TO = T (plain) or uint8_t (e4m3, after the amax pass into scalars[kAmaxQ..kAmaxV]).
template <typename T, typename TO, int VEC, int K>
cudaError_t rope_pack_k(const RopePackParams& p, float* scalars, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(p.B) * p.V * p.T * p.N * p.H * (p.hd / (VEC * K));
  if (total == 0) return cudaSuccess;
  const dim3 grid(grid_for(total, kThreads), p.ntensors);
  const bool small = total * K < (int64_t(1) << 31);
  if constexpr (std::is_same_v<TO, uint8_t>) {
    float* amax = scalars + kAmaxQ;
    const cudaError_t err = cudaMemsetAsync(amax, 0, 3 * sizeof(float), stream);
    if (err != cudaSuccess) return err;
    const dim3 agrid(std::min(grid.x, 1024u), p.ntensors);  // grid-stride: fewer blocks, fewer atomics
    if (small) rope_amax_kernel<T, VEC, K, uint32_t><<<agrid, kThreads, 0, stream>>>(p, amax);
    else rope_amax_kernel<T, VEC, K, uint64_t><<<agrid, kThreads, 0, stream>>>(p, amax);
  }
  if (small) rope_pack_kernel<T, TO, VEC, K, uint32_t><<<grid, kThreads, 0, stream>>>(p, scalars);
  else rope_pack_kernel<T, TO, VEC, K, uint64_t><<<grid, kThreads, 0, stream>>>(p, scalars);
  return cudaGetLastError();
}

template <typename T, typename TO>
cudaError_t rope_pack_t(const RopePackParams& p, float* scalars, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  bool vec = p.hd % V == 0 && ptr_aligned(p.cos, 16) && ptr_aligned(p.sin, 16);
  for (int w = 0; w < p.ntensors; ++w)
    vec = vec && ptr_aligned(p.src[w], 16) && ptr_aligned(p.dst[w], 16) && strides_aligned(p.src_strides[w], 5, V);
  if (!vec) return rope_pack_k<T, TO, 2, 1>(p, scalars, stream);
  if (p.hd % (V * kGroup) == 0) return rope_pack_k<T, TO, V, kGroup>(p, scalars, stream);
  return rope_pack_k<T, TO, V, 1>(p, scalars, stream);
}

// TI = TO (plain) or uint8_t (e4m3 input times *scale). Vector width: 16-byte loads of TI, at most 8 elements.
template <typename TI, typename TO>
cudaError_t grid_gather_t(const GridGatherParams& p, const float* scale, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(TI) > 8 ? 8 : 16 / sizeof(TI);
  const bool vec = p.hd % V == 0 && ptr_aligned(p.src, V * sizeof(TI)) && ptr_aligned(p.dst, V * sizeof(TO)) &&
                   strides_aligned(p.src_strides, 5, V);
  const int vec_elems = vec ? V : 1;
  const int64_t total = static_cast<int64_t>(p.B) * p.V * p.T * p.N * p.H * (p.hd / vec_elems);
  if (total == 0) return cudaSuccess;
  const dim3 grid(grid_for(total, kThreads));
  const bool small = total < (int64_t(1) << 31);
  if (vec) {
    if (small) grid_gather_kernel<TI, TO, V, uint32_t><<<grid, kThreads, 0, stream>>>(p, scale);
    else grid_gather_kernel<TI, TO, V, uint64_t><<<grid, kThreads, 0, stream>>>(p, scale);
  } else {
    if (small) grid_gather_kernel<TI, TO, 1, uint32_t><<<grid, kThreads, 0, stream>>>(p, scale);
    else grid_gather_kernel<TI, TO, 1, uint64_t><<<grid, kThreads, 0, stream>>>(p, scale);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t rope_pack_launch(DType dtype, const RopePackParams& p, cudaStream_t stream) {
  if (p.hd % 2 || p.ntensors < 1 || p.ntensors > 3) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32: return rope_pack_t<float, float>(p, nullptr, stream);
    case DType::kBFloat16: return rope_pack_t<__nv_bfloat16, __nv_bfloat16>(p, nullptr, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t grid_gather_launch(DType dtype, const GridGatherParams& p, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32: return grid_gather_t<float, float>(p, nullptr, stream);
    case DType::kBFloat16: return grid_gather_t<__nv_bfloat16, __nv_bfloat16>(p, nullptr, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t rope_pack_fp8_launch(DType dtype, const RopePackParams& p, float* scalars, cudaStream_t stream) {
  if (p.hd % 2 || p.ntensors != 3 || scalars == nullptr) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32: return rope_pack_t<float, uint8_t>(p, scalars, stream);
    case DType::kBFloat16: return rope_pack_t<__nv_bfloat16, uint8_t>(p, scalars, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t grid_gather_fp8_launch(DType out_dtype, const GridGatherParams& p, const float* scale, cudaStream_t stream) {
  if (scale == nullptr) return cudaErrorInvalidValue;
  switch (out_dtype) {
    case DType::kFloat32: return grid_gather_t<uint8_t, float>(p, scale, stream);
    case DType::kBFloat16: return grid_gather_t<uint8_t, __nv_bfloat16>(p, scale, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fourreal
