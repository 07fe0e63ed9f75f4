// fourreal_C::soft_sync, eqs. 9-10: (Δy^v, Δy^t) = ModLinear(y^v, y^t; σ), x = y + Δy. Twin: twins.soft_sync.
// Memory-bound parts fused around cuBLASLt GEMMs: the modulated LayerNorm of both streams in one launch writes
// the concatenation z directly (no torch.cat); then each stream's half of the linear is one GEMM whose epilogue adds
// the bias and reads the stream's residual (linear_residual.cpp): x_v = y_v + z W_v^T + b_v, the same for t.
#include <torch/library.h>

#include "linear_residual.h"
#include "modulated_layernorm.h"
#include "torch_utils.h"

namespace fourreal {

// y_v, y_t: [B, ..., D]; mod: [B, 4D] = (shift_v, scale_v, shift_t, scale_t); weight: [2D, 2D]; bias: [2D].
// Returns (x_v, x_t), contiguous [B, ..., D] each.
std::tuple<at::Tensor, at::Tensor> soft_sync(const at::Tensor& y_v_in, const at::Tensor& y_t_in, const at::Tensor& mod,
                                             const at::Tensor& weight, const at::Tensor& bias, double eps) {
  TORCH_CHECK(y_v_in.is_cuda() && y_v_in.dim() >= 2, "soft_sync: y_v must be a CUDA tensor [B, ..., D]");
  TORCH_CHECK(y_t_in.sizes() == y_v_in.sizes() && y_t_in.scalar_type() == y_v_in.scalar_type(),
              "soft_sync: y_t must match y_v");
  const at::Tensor y_v = last_dim_contiguous(y_v_in), y_t = last_dim_contiguous(y_t_in);
  const int64_t B = y_v.size(0), D = y_v.size(-1), rows = y_v.numel() / std::max<int64_t>(D, 1);
  TORCH_CHECK(mod.dim() == 2 && mod.size(0) == B && mod.size(1) == 4 * D, "soft_sync: mod must be [B, 4D]");
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == 2 * D && weight.size(1) == 2 * D, "soft_sync: weight must be [2D, 2D]");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == 2 * D, "soft_sync: bias must be [2D]");
  const c10::cuda::CUDAGuard guard(y_v.device());
  const auto opts = y_v.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor x_v = at::empty(y_v.sizes(), opts), x_t = at::empty(y_v.sizes(), opts);  // [B, ..., D]
  if (rows == 0 || D == 0) return {x_v, x_t};
  const DType dt = kernel_dtype(y_v);
  cudaStream_t stream = current_stream();

  // z = [LN(y_v)(1 + sc_v) + sh_v | LN(y_t)(1 + sc_t) + sh_t]: [rows, 2D], both streams in one launch
  const at::Tensor m = mod_f32(mod);  // [B, 4D] fp32
  const float* mp = m.data_ptr<float>();
  at::Tensor z = at::empty({rows, 2 * D}, y_v.options());  // [rows, 2D]
  ModLNParams ln{};
  ln.s[0] = ModLNStream{y_v.data_ptr(), row_indexer(y_v), mp, mp + D, 4 * D, 4 * D, z.data_ptr(), 2 * D, nullptr};
  ln.s[1] = ModLNStream{y_t.data_ptr(), row_indexer(y_t), mp + 2 * D, mp + 3 * D, 4 * D, 4 * D,
                        static_cast<char*>(z.data_ptr()) + D * z.element_size(), 2 * D, nullptr};
  ln.rows = rows;
  ln.rows_per_batch = rows / B;
  ln.D = static_cast<int>(D);
  ln.eps = static_cast<float>(eps);
  FOURREAL_CUDA_CHECK(modulated_layernorm_launch(dt, ln, 2, stream));

  // x_v = y_v + z W[:D]^T + b[:D], x_t = y_t + z W[D:]^T + b[D:]: residual and bias in the GEMMs' epilogues
  const at::Tensor w = weight.to(y_v.scalar_type()).contiguous(), b = bias.to(y_v.scalar_type()).contiguous();
  for (int s = 0; s < 2; ++s) {
    const at::Tensor& y = s == 0 ? y_v : y_t;
    at::Tensor out = (s == 0 ? x_v : x_t).view({rows, D});
    linear_residual_into(y.contiguous().view({rows, D}), z, w.narrow(0, s * D, D), b.narrow(0, s * D, D), at::Tensor(),
                         out);
  }
  return {x_v, x_t};
}

TORCH_LIBRARY_IMPL(fourreal_C, CUDA, m) { m.impl("soft_sync", &soft_sync); }

}  // namespace fourreal
