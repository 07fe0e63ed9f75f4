// The residual taken into a cuBLASLt GEMM's epilogue (linear_residual.cpp); soft_sync.cpp uses it too.
#pragma once

#include <ATen/ATen.h>

namespace fourreal {

// out = x + gate ⊙ (a W^T + bias), one cuBLASLt matmul a batch element. x, out: [M, N] contiguous; a: [M, K]
// contiguous; weight: [N, K] contiguous; bias: [N] (x's dtype) or undefined; gate: [B, N] fp32 contiguous or
// undefined (1); the M rows are B equal batches.
void linear_residual_into(const at::Tensor& x, const at::Tensor& a, const at::Tensor& weight, const at::Tensor& bias,
                          const at::Tensor& gate, at::Tensor& out);

}  // namespace fourreal
