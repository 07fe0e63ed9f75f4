// Modulation folded into a weight instead of into the tokens, once per batch element (a weight-sized table, far
// smaller than the tokens): hard sync's σ-modulation of the input columns (eq. 8, hard_sync.cpp), and the adaLN gate
// of a gated residual on the output rows (linear_residual.cpp). Kernels: modulate_weight_kernel.cu.
#pragma once

#include "types.h"

namespace fourreal {

// w_out[b, i, j] = w[i, j] * (1 + mod[b, j]);  w: [rows, cols] contiguous, mod: [B, cols] fp32 contiguous,
// w_out: [B, rows, cols] contiguous, all in `dtype` except mod.
cudaError_t modulate_columns_launch(DType dtype, const void* w, const float* mod, void* w_out, int B, int64_t rows,
                                    int64_t cols, cudaStream_t stream);

// w_out[b, i, j] = w[i, j] * gate[b, i], and with a bias [rows] given, bias_out[b, i] = bias[i] * gate[b, i];
// gate: [B, rows] fp32 contiguous; otherwise as modulate_columns_launch.
cudaError_t scale_rows_launch(DType dtype, const void* w, const float* gate, void* w_out, int B, int64_t rows,
                              int64_t cols, const void* bias, void* bias_out, cudaStream_t stream);

}  // namespace fourreal
