// fourreal_C::hard_sync, eq. 8: x = W^v (y^v ⊙ (1 + s^v)) + W^t (y^t ⊙ (1 + s^t)) + b. Twin: twins.hard_sync.
// The modulation is folded into the weight columns (a D x 2D table per batch, modulate_weight_kernel.cu), and the two
// streams' tokens side by side make one GEMM of K = 2D per batch: x is rounded once, as in the twin. (Two GEMMs, the
// second adding into the first's bf16 output, rounded x twice: up to twice the twin's error on large outputs.)
#include <torch/library.h>

#include "modulate_weight.h"
#include "torch_utils.h"

namespace fourreal {

// y_v, y_t: [B, ..., D]; mod: [B, 2D] = (s^v, s^t); weight: [D, 2D] = [W^v | W^t]; bias: [D].
// Returns the merged stream [B, ..., D], contiguous.
at::Tensor hard_sync(const at::Tensor& y_v, const at::Tensor& y_t, const at::Tensor& mod, const at::Tensor& weight,
                     const at::Tensor& bias) {
  TORCH_CHECK(y_v.is_cuda() && y_v.dim() >= 2, "hard_sync: y_v must be a CUDA tensor [B, ..., D]");
  TORCH_CHECK(y_t.sizes() == y_v.sizes() && y_t.scalar_type() == y_v.scalar_type(), "hard_sync: y_t must match y_v");
  const int64_t B = y_v.size(0), D = y_v.size(-1), R = y_v.numel() / std::max<int64_t>(B * D, 1);
  TORCH_CHECK(mod.dim() == 2 && mod.size(0) == B && mod.size(1) == 2 * D, "hard_sync: mod must be [B, 2D]");
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == D && weight.size(1) == 2 * D, "hard_sync: weight must be [D, 2D]");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == D, "hard_sync: bias must be [D]");
  const c10::cuda::CUDAGuard guard(y_v.device());
  at::Tensor out = at::empty({B, R, D}, y_v.options());  // [B, R, D]
  if (out.numel() == 0) return out.view(y_v.sizes());

  // W'[b] = W diag(1 + mod[b]): [B, D, 2D]
  const at::Tensor w = weight.to(y_v.scalar_type()).contiguous();  // [D, 2D]
  const at::Tensor m = mod_f32(mod);                                 // [B, 2D]
  at::Tensor w_mod = at::empty({B, D, 2 * D}, y_v.options());        // [B, D, 2D]
  FOURREAL_CUDA_CHECK(modulate_columns_launch(kernel_dtype(y_v), w.data_ptr(), m.data_ptr<float>(), w_mod.data_ptr(),
                                              static_cast<int>(B), D, 2 * D, current_stream()));
  const at::Tensor b = bias.to(y_v.scalar_type());
  const at::Tensor z = at::cat({y_v, y_t}, -1).reshape({B, R, 2 * D});   // [B, R, 2D]: one copy of each stream
  for (int64_t i = 0; i < B; ++i) {
    at::Tensor o = out[i];                                                       // [R, D]
    at::addmm_out(o, b, z[i], w_mod[i].t());                                     // [y^v | y^t] W'^T + b
  }
  return out.view(y_v.sizes());
}

TORCH_LIBRARY_IMPL(fourreal_C, CUDA, m) { m.impl("hard_sync", &hard_sync); }

}  // namespace fourreal
