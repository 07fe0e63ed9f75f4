// Hard sync, eq. 8: x = W^v (y^v ⊙ (1 + s^v)) + W^t (y^t ⊙ (1 + s^t)) + b. The σ-modulation is folded into the
// weight (W' = W diag(1 + s), per batch: a D x 2D table), so the tokens take one pass: two accumulating GEMMs
// over y^v and y^t in place (hard_sync.cpp) and no elementwise pass. Kernel: hard_sync_kernel.cu.
#pragma once

#include "types.h"

namespace fourreal {

// w_out[b, i, j] = w[i, j] * (1 + mod[b, j]);  w: [rows, cols] contiguous, mod: [B, cols] fp32 contiguous,
// w_out: [B, rows, cols] contiguous, all in `dtype` except mod.
cudaError_t modulate_columns_launch(DType dtype, const void* w, const float* mod, void* w_out, int B, int64_t rows,
                                    int64_t cols, cudaStream_t stream);

}  // namespace fourreal
