// The residual taken into a cuBLASLt GEMM's epilogue (linear_residual.cpp); soft_sync.cpp uses it too.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace fourreal {

// How the gate enters the GEMM (the op's `mode` argument).
enum GateMode : int64_t {
  kGateAlphaVector = 0,   // cuBLASLt's per-row alpha vector (falls back to kGateInWeight where it has no kernel)
  kGateInWeight = 1,      // W' = diag(gate) W, computed per call
};

// out = x + gate ⊙ (a W^T + bias), one cuBLASLt matmul a batch element. x, out: [M, N] contiguous; a: [M, K]
// contiguous; weight: [N, K] contiguous; bias: [N] or undefined; gate: [B, N] fp32 or undefined (1); the M rows are
// B equal batches.
void linear_residual_into(const at::Tensor& x, const at::Tensor& a, const at::Tensor& weight, const at::Tensor& bias,
                          const at::Tensor& gate, int64_t mode, at::Tensor& out);

}  // namespace fourreal
