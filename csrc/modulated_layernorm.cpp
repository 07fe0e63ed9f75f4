// fourreal_C::modulated_layernorm: checks, allocation, launch. Twin: twins.modulated_layernorm.
#include <torch/library.h>

#include "modulated_layernorm.h"
#include "torch_utils.h"

namespace fourreal {

// x: [B, ..., D] (any strides, last dim contiguous); shift, scale: [B, D]. Returns contiguous [B, ..., D].
at::Tensor modulated_layernorm(const at::Tensor& x_in, const at::Tensor& shift, const at::Tensor& scale, double eps) {
  TORCH_CHECK(x_in.is_cuda() && x_in.dim() >= 2, "modulated_layernorm: x must be a CUDA tensor [B, ..., D]");
  const at::Tensor x = last_dim_contiguous(x_in);
  const int64_t B = x.size(0), D = x.size(-1);
  TORCH_CHECK(shift.dim() == 2 && shift.size(0) == B && shift.size(1) == D, "shift must be [B, D]");
  TORCH_CHECK(scale.sizes() == shift.sizes(), "scale must be [B, D]");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));  // [B, ..., D]
  const int64_t rows = x.numel() / std::max<int64_t>(D, 1);
  if (rows == 0 || D == 0) return out;
  const at::Tensor sh = mod_f32(shift), sc = mod_f32(scale);  // [B, D] fp32
  ModLNParams p{};
  p.s[0] = ModLNStream{x.data_ptr(), row_indexer(x), sh.data_ptr<float>(), sc.data_ptr<float>(), D, D,
                       out.data_ptr(), D};
  p.rows = rows;
  p.rows_per_batch = rows / B;
  p.D = static_cast<int>(D);
  p.eps = static_cast<float>(eps);
  FOURREAL_CUDA_CHECK(modulated_layernorm_launch(kernel_dtype(x), p, 1, current_stream()));
  return out;
}

TORCH_LIBRARY_IMPL(fourreal_C, CUDA, m) { m.impl("modulated_layernorm", &modulated_layernorm); }

}  // namespace fourreal
