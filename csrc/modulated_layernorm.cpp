// fourreal_C::modulated_layernorm(_fp8): checks, allocation, launch. Twins: twins.modulated_layernorm,
// fp8.modulated_layernorm_fp8_twin.
#include <torch/library.h>

#include "modulated_layernorm.h"
#include "torch_utils.h"

namespace fourreal {

namespace {

// Checks x [B, ..., D] (last dim made contiguous) and shift, scale [B, D]; returns x.
at::Tensor checked_input(const at::Tensor& x_in, const at::Tensor& shift, const at::Tensor& scale, const char* op) {
  TORCH_CHECK(x_in.is_cuda() && x_in.dim() >= 2, op, ": x must be a CUDA tensor [B, ..., D]");
  at::Tensor x = last_dim_contiguous(x_in);
  const int64_t B = x.size(0), D = x.size(-1);
  TORCH_CHECK(shift.dim() == 2 && shift.size(0) == B && shift.size(1) == D, "shift must be [B, D]");
  TORCH_CHECK(scale.sizes() == shift.sizes(), "scale must be [B, D]");
  return x;
}

// One stream: x's rows into out [rows, D] (and their scales into row_scale when it is not null). sh, sc: fp32 [B, D].
ModLNParams one_stream(const at::Tensor& x, const at::Tensor& sh, const at::Tensor& sc, void* out, float* row_scale,
                       int64_t rows, double eps) {
  const int64_t D = x.size(-1);
  ModLNParams p{};
  p.s[0] = ModLNStream{x.data_ptr(), row_indexer(x), sh.data_ptr<float>(), sc.data_ptr<float>(), D, D, out, D,
                       row_scale};
  p.rows = rows;
  p.rows_per_batch = rows / x.size(0);
  p.D = static_cast<int>(D);
  p.eps = static_cast<float>(eps);
  return p;
}

}  // namespace

// x: [B, ..., D] (any strides, last dim contiguous); shift, scale: [B, D]. Returns contiguous [B, ..., D].
at::Tensor modulated_layernorm(const at::Tensor& x_in, const at::Tensor& shift, const at::Tensor& scale, double eps) {
  const at::Tensor x = checked_input(x_in, shift, scale, "modulated_layernorm");
  const int64_t D = x.size(-1);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));  // [B, ..., D]
  const int64_t rows = x.numel() / std::max<int64_t>(D, 1);
  if (rows == 0 || D == 0) return out;
  const at::Tensor sh = mod_f32(shift), sc = mod_f32(scale);  // [B, D] fp32
  FOURREAL_CUDA_CHECK(modulated_layernorm_launch(kernel_dtype(x), one_stream(x, sh, sc, out.data_ptr(), nullptr, rows,
                                                                             eps), 1, current_stream()));
  return out;
}

// As modulated_layernorm, written as the input of an FP8 linear: q: [rows, D] float8_e4m3fn contiguous and
// row_scale: [rows, 1] fp32 with LN(x) * (1 + scale) + shift ≈ q * row_scale (rows = x.numel() / D).
void modulated_layernorm_fp8(const at::Tensor& x_in, const at::Tensor& shift, const at::Tensor& scale, double eps,
                             at::Tensor& q, at::Tensor& row_scale) {
  const at::Tensor x = checked_input(x_in, shift, scale, "modulated_layernorm_fp8");
  const int64_t D = x.size(-1);
  const int64_t rows = x.numel() / std::max<int64_t>(D, 1);
  TORCH_CHECK(q.scalar_type() == at::kFloat8_e4m3fn && q.is_contiguous() && q.numel() == rows * D && q.device() == x.device(),
              "modulated_layernorm_fp8: q must be contiguous float8_e4m3fn with x's size");
  TORCH_CHECK(row_scale.scalar_type() == at::kFloat && row_scale.is_contiguous() && row_scale.numel() == rows &&
                  row_scale.device() == x.device(),
              "modulated_layernorm_fp8: row_scale must be contiguous fp32 [rows, 1]");
  if (rows == 0 || D == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor sh = mod_f32(shift), sc = mod_f32(scale);  // [B, D] fp32
  FOURREAL_CUDA_CHECK(modulated_layernorm_fp8_launch(
      kernel_dtype(x), one_stream(x, sh, sc, q.data_ptr(), row_scale.data_ptr<float>(), rows, eps), current_stream()));
}

TORCH_LIBRARY_IMPL(fourreal_C, CUDA, m) {
  m.impl("modulated_layernorm", &modulated_layernorm);
  m.impl("modulated_layernorm_fp8", &modulated_layernorm_fp8);
}

}  // namespace fourreal
