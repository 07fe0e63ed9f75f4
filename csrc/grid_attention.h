// Grid attention along "time" (each (b, v) row's T*N tokens) or "view" (each (b, t) column's V*N tokens) on the
// [B, V, T, N, H, hd] token layout. The kernels here do the memory-bound half: 3D RoPE on q and k fused with the
// gather of each sequence into one contiguous [S, L, H, hd] buffer (rope_pack), and the scatter of the attention
// output back to the grid layout (grid_gather). The attention core between them runs on packed sequences
// (cuDNN SDPA by default; grid_attention.cpp). Kernels: grid_attention_kernel.cu.
#pragma once

#include "types.h"

namespace fourreal {

enum GridAxis : int { kAxisTime = 0, kAxisView = 1 };

struct RopePackParams {
  const void* src[3];          // q, k, v: [B, V, T, N, H, hd], last dim contiguous
  int64_t src_strides[3][5];   // their strides (elements) along b, v, t, n, h
  void* dst[3];                // [S, L, H, hd] contiguous. time: S = (b, v), L = (t, n); view: S = (b, t), L = (v, n)
  const float* cos;            // [F, N, hd / 2] fp32 contiguous; F = T (time) or V (view)
  const float* sin;
  int B, V, T, N, H, hd;
  int axis;                    // GridAxis
  int nrot;                    // tensors 0 .. nrot-1 are rotated (2: q and k), the rest only packed
  int ntensors;                // how many of src/dst are used (1..3)
};

struct GridGatherParams {
  const void* src;             // any layout; element (b, v, t, n, h, :) at the strides below, last dim contiguous
  int64_t src_strides[5];      // along b, v, t, n, h
  void* dst;                   // [B, V, T, N, H, hd] contiguous
  int B, V, T, N, H, hd;
};

cudaError_t rope_pack_launch(DType dtype, const RopePackParams& p, cudaStream_t stream);
cudaError_t grid_gather_launch(DType dtype, const GridGatherParams& p, cudaStream_t stream);

}  // namespace fourreal
