// RoPE + pack and the output gather of grid attention: one thread per VEC-channel chunk of one (token, head),
// 16-byte loads and stores, output written in its own (contiguous) order so that writes coalesce.
#include "common.cuh"
#include "grid_attention.h"

namespace fourreal {

template <typename T, int VEC, typename Idx>
__global__ void __launch_bounds__(256) rope_pack_kernel(const RopePackParams p) {
  const int which = blockIdx.y;  // 0: q, 1: k, 2: v
  const int nchunk = p.hd / VEC;
  const Idx total = static_cast<Idx>(p.B) * p.V * p.T * p.N * p.H * nchunk;
  const int64_t* st = p.src_strides[which];
  const T* __restrict__ src = static_cast<const T*>(p.src[which]);
  T* __restrict__ dst = static_cast<T*>(p.dst[which]);
  const bool rotate = which < p.nrot;
  const int half = p.hd / 2;
  for (Idx i = static_cast<Idx>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<Idx>(gridDim.x) * blockDim.x) {
    // i runs over the output [S, L, H, hd / VEC]: decompose into (chunk, h, n, then the two grid axes)
    Idx r = i;
    const int c = static_cast<int>(r % nchunk); r /= nchunk;
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
    float x[VEC];
    load_vec<T, VEC>(s, x);
    if (rotate) {
      const int f = p.axis == kAxisTime ? t : v;  // frame index along the attended axis
      const int64_t tab = (static_cast<int64_t>(f) * p.N + n) * half + c * (VEC / 2);
      float cs[VEC / 2], sn[VEC / 2];
      load_f32<VEC / 2>(p.cos + tab, cs);
      load_f32<VEC / 2>(p.sin + tab, sn);
#pragma unroll
      for (int j = 0; j < VEC / 2; ++j) {
        const float a = x[2 * j], bb = x[2 * j + 1];
        x[2 * j] = a * cs[j] - bb * sn[j];
        x[2 * j + 1] = a * sn[j] + bb * cs[j];
      }
    }
    store_vec<T, VEC>(dst + static_cast<int64_t>(i) * VEC, x);
  }
}

template <typename T, int VEC, typename Idx>
__global__ void __launch_bounds__(256) grid_gather_kernel(const GridGatherParams p) {
  const int nchunk = p.hd / VEC;
  const Idx total = static_cast<Idx>(p.B) * p.V * p.T * p.N * p.H * nchunk;
  const T* __restrict__ src = static_cast<const T*>(p.src);
  T* __restrict__ dst = static_cast<T*>(p.dst);
  const int64_t* st = p.src_strides;
  for (Idx i = static_cast<Idx>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<Idx>(gridDim.x) * blockDim.x) {
    Idx r = i;  // output [B, V, T, N, H, hd / VEC]
    const int c = static_cast<int>(r % nchunk); r /= nchunk;
    const int h = static_cast<int>(r % p.H); r /= p.H;
    const int n = static_cast<int>(r % p.N); r /= p.N;
    const int t = static_cast<int>(r % p.T); r /= p.T;
    const int v = static_cast<int>(r % p.V);
    const int b = static_cast<int>(r / p.V);
    float x[VEC];
    load_vec<T, VEC>(src + b * st[0] + v * st[1] + t * st[2] + n * st[3] + h * st[4] + c * VEC, x);
    store_vec<T, VEC>(dst + static_cast<int64_t>(i) * VEC, x);
  }
}

namespace {

constexpr int kThreads = 256;

bool strides_aligned(const int64_t* st, int n, int elems) {
  for (int i = 0; i < n; ++i)
    if (st[i] % elems) return false;
  return true;
}

template <typename T>
cudaError_t rope_pack_t(const RopePackParams& p, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  bool vec = p.hd % V == 0 && ptr_aligned(p.cos, 16) && ptr_aligned(p.sin, 16);
  for (int w = 0; w < p.ntensors; ++w)
    vec = vec && ptr_aligned(p.src[w], 16) && ptr_aligned(p.dst[w], 16) && strides_aligned(p.src_strides[w], 5, V);
  const int vec_elems = vec ? V : 2;
  const int64_t total = static_cast<int64_t>(p.B) * p.V * p.T * p.N * p.H * (p.hd / vec_elems);
  if (total == 0) return cudaSuccess;
  const dim3 grid(grid_for(total, kThreads), p.ntensors);
  const bool small = total < (int64_t(1) << 31);
  if (vec) {
    if (small) rope_pack_kernel<T, V, uint32_t><<<grid, kThreads, 0, stream>>>(p);
    else rope_pack_kernel<T, V, uint64_t><<<grid, kThreads, 0, stream>>>(p);
  } else {
    if (small) rope_pack_kernel<T, 2, uint32_t><<<grid, kThreads, 0, stream>>>(p);
    else rope_pack_kernel<T, 2, uint64_t><<<grid, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t grid_gather_t(const GridGatherParams& p, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const bool vec = p.hd % V == 0 && ptr_aligned(p.src, 16) && ptr_aligned(p.dst, 16) && strides_aligned(p.src_strides, 5, V);
  const int vec_elems = vec ? V : 1;
  const int64_t total = static_cast<int64_t>(p.B) * p.V * p.T * p.N * p.H * (p.hd / vec_elems);
  if (total == 0) return cudaSuccess;
  const dim3 grid(grid_for(total, kThreads));
  const bool small = total < (int64_t(1) << 31);
  if (vec) {
    if (small) grid_gather_kernel<T, V, uint32_t><<<grid, kThreads, 0, stream>>>(p);
    else grid_gather_kernel<T, V, uint64_t><<<grid, kThreads, 0, stream>>>(p);
  } else {
    if (small) grid_gather_kernel<T, 1, uint32_t><<<grid, kThreads, 0, stream>>>(p);
    else grid_gather_kernel<T, 1, uint64_t><<<grid, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t rope_pack_launch(DType dtype, const RopePackParams& p, cudaStream_t stream) {
  if (p.hd % 2 || p.ntensors < 1 || p.ntensors > 3) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat32: return rope_pack_t<float>(p, stream);
    case DType::kBFloat16: return rope_pack_t<__nv_bfloat16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t grid_gather_launch(DType dtype, const GridGatherParams& p, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32: return grid_gather_t<float>(p, stream);
    case DType::kBFloat16: return grid_gather_t<__nv_bfloat16>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fourreal
