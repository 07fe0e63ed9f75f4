// Host-side helpers shared by the op files (.cpp): torch dtype -> kernel dtype, row indexers of strided
// tensors, the current stream, error checks. Only the .cpp files include this (never the kernels).
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "types.h"

namespace fourreal {

inline DType kernel_dtype(const at::Tensor& t) {
  if (t.scalar_type() == at::kBFloat16) return DType::kBFloat16;
  if (t.scalar_type() == at::kFloat) return DType::kFloat32;
  TORCH_CHECK(false, "fourreal kernels take bfloat16 or float32, got ", t.scalar_type());
}

// Indexer of t's rows (all dims but the last); t's last dim must be contiguous.
inline RowIndexer row_indexer(const at::Tensor& t) {
  TORCH_CHECK(t.dim() >= 1 && t.dim() - 1 <= kMaxRowDims, "row_indexer: rank ", t.dim(), " not supported");
  TORCH_CHECK(t.size(-1) <= 1 || t.stride(-1) == 1, "fourreal kernels need the last dim contiguous");
  return make_row_indexer(static_cast<int>(t.dim() - 1), t.sizes().data(), t.strides().data());
}

// t itself if its last dim is contiguous, else a contiguous copy.
inline at::Tensor last_dim_contiguous(const at::Tensor& t) {
  return (t.size(-1) <= 1 || t.stride(-1) == 1) ? t : t.contiguous();
}

// A [B, D] modulation vector as contiguous fp32 (tiny: B x D).
inline at::Tensor mod_f32(const at::Tensor& m) { return m.to(at::kFloat).contiguous(); }

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

#define FOURREAL_CUDA_CHECK(expr)                                                       \
  do {                                                                                   \
    const cudaError_t err_ = (expr);                                                     \
    TORCH_CHECK(err_ == cudaSuccess, "fourreal kernel launch failed: ", cudaGetErrorString(err_)); \
  } while (0)

}  // namespace fourreal
