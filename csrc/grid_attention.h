// Grid attention along "time" (each (b, v) row's T*N tokens) or "view" (each (b, t) column's V*N tokens) on the
// [B, V, T, N, H, hd] token layout. The kernels here do the memory-bound half: 3D RoPE on q and k fused with the
// gather of each sequence into one contiguous [S, L, H, hd] buffer (rope_pack), and the scatter of the attention
// output back to the grid layout (grid_gather). The attention core between them runs on packed sequences
// (cuDNN SDPA by default; grid_attention.cpp). Kernels: grid_attention_kernel.cu.
//
// FP8 attention (fourreal_rt/ops/attention_fp8.py) packs q, k, v as e4m3 with one scale per tensor (rope_pack_fp8:
// an amax pass, then RoPE + pack + scale + convert) for cuDNN's FP8 SDPA, and gathers its e4m3 output back as
// bf16/fp32 (grid_gather_fp8). The scales come from the amax of this very call: for q and k the largest norm of a
// rotated channel pair (rotation keeps pair norms, so it bounds every rotated value), for v the largest |v|. Each
// output row is a convex combination of v's rows, up to the e4m3 rounding of the probabilities (at most 1/16 each),
// so the output is stored at v's scale with kOutputHeadroom to spare and cannot saturate.
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

constexpr float kOutputHeadroom = 1.125f;  // the output's scale: max |v| times this (> 1 + 1/16)

// The 6 fp32 scalars of cuDNN's FP8 SDPA, in this order, then the output's descale and the 3 amax values, in one buffer.
enum Fp8AttentionScalar : int {
  kDescaleQ = 0, kDescaleK, kDescaleV,  // amax / 448 of q, k, v: a stored e4m3 value times this is the real value
  kDescaleS, kScaleS,                   // 1 / 448 and 448: softmax probabilities (<= 1) stored as p * 448
  kScaleO,                              // 448 / (amax_v * kOutputHeadroom): the output's e4m3 scale
  kDescaleO,                            // its inverse, for grid_gather_fp8
  kAmaxQ, kAmaxK, kAmaxV,
  kFp8AttentionScalars
};

cudaError_t rope_pack_launch(DType dtype, const RopePackParams& p, cudaStream_t stream);
cudaError_t grid_gather_launch(DType dtype, const GridGatherParams& p, cudaStream_t stream);
// q, k, v (dtype) -> p.dst[0..2] as e4m3 bytes scaled by 448 / amax; scalars: [kFp8AttentionScalars] fp32, written
// whole (the amax pass first, then the pack, whose first thread writes the cuDNN scalars). p.ntensors must be 3.
cudaError_t rope_pack_fp8_launch(DType dtype, const RopePackParams& p, float* scalars, cudaStream_t stream);
// p.src holds e4m3 bytes; writes p.dst in out_dtype, each value times *scale (a device scalar).
cudaError_t grid_gather_fp8_launch(DType out_dtype, const GridGatherParams& p, const float* scale, cudaStream_t stream);

}  // namespace fourreal
