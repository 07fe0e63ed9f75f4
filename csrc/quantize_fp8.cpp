// fourreal_C::quantize_fp8_rowwise: checks and launch. Twin: fourreal_rt.ops.fp8.quantize_rowwise_twin.
#include <torch/library.h>

#include "quantize_fp8.h"
#include "torch_utils.h"

namespace fourreal {

// x: [M, K] (rows may be strided, last dim contiguous); writes q: [M, K] float8_e4m3fn and scale: [M, 1] fp32 with
// x ≈ q * scale (after tanh-GELU when gelu is set).
void quantize_fp8_rowwise(const at::Tensor& x_in, bool gelu, at::Tensor& q, at::Tensor& scale) {
  TORCH_CHECK(x_in.is_cuda() && x_in.dim() == 2, "quantize_fp8_rowwise: x must be a CUDA matrix [M, K]");
  const at::Tensor x = last_dim_contiguous(x_in);
  const int64_t M = x.size(0), K = x.size(1);
  TORCH_CHECK(q.scalar_type() == at::kFloat8_e4m3fn && q.is_contiguous() && q.size(0) == M && q.size(1) == K,
              "quantize_fp8_rowwise: q must be contiguous float8_e4m3fn [M, K]");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.is_contiguous() && scale.numel() == M,
              "quantize_fp8_rowwise: scale must be contiguous fp32 [M, 1]");
  const c10::cuda::CUDAGuard guard(x.device());
  FOURREAL_CUDA_CHECK(quantize_fp8_rowwise_launch(kernel_dtype(x), x.data_ptr(), M > 1 ? x.stride(0) : K, M,
                                                  static_cast<int>(K), gelu, static_cast<uint8_t*>(q.data_ptr()),
                                                  scale.data_ptr<float>(), current_stream()));
}

TORCH_LIBRARY_IMPL(fourreal_C, CUDA, m) { m.impl("quantize_fp8_rowwise", &quantize_fp8_rowwise); }

}  // namespace fourreal
