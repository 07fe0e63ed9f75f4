// fourreal_C::gated_residual: checks, allocation, launch. Twin: twins.gated_residual.
#include <torch/library.h>

#include "gated_residual.h"
#include "torch_utils.h"

namespace fourreal {

// x, y: [B, ..., D] (same shape, any strides, last dim contiguous); gate: [B, D]. Returns contiguous x + gate*y.
at::Tensor gated_residual(const at::Tensor& x_in, const at::Tensor& y_in, const at::Tensor& gate) {
  TORCH_CHECK(x_in.is_cuda() && x_in.dim() >= 2, "gated_residual: x must be a CUDA tensor [B, ..., D]");
  TORCH_CHECK(y_in.sizes() == x_in.sizes() && y_in.scalar_type() == x_in.scalar_type(),
              "gated_residual: y must match x in shape and dtype");
  const at::Tensor x = last_dim_contiguous(x_in), y = last_dim_contiguous(y_in);
  const int64_t B = x.size(0), D = x.size(-1);
  TORCH_CHECK(gate.dim() == 2 && gate.size(0) == B && gate.size(1) == D, "gate must be [B, D]");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));  // [B, ..., D]
  const int64_t rows = x.numel() / std::max<int64_t>(D, 1);
  if (rows == 0 || D == 0) return out;
  const at::Tensor g = mod_f32(gate);  // [B, D] fp32
  ResidualParams p{x.data_ptr(), row_indexer(x), y.data_ptr(), row_indexer(y), g.data_ptr<float>(), D,
                   out.data_ptr(), D};
  p.rows = rows;
  p.rows_per_batch = rows / B;
  p.D = static_cast<int>(D);
  FOURREAL_CUDA_CHECK(gated_residual_launch(kernel_dtype(x), p, current_stream()));
  return out;
}

TORCH_LIBRARY_IMPL(fourreal_C, CUDA, m) { m.impl("gated_residual", &gated_residual); }

}  // namespace fourreal
