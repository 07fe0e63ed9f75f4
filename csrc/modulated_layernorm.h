// adaLN modulate + LayerNorm: out[r] = LN(x[r]) * (1 + scale[b]) + shift[b] over token rows, one or two
// streams in one launch (soft_sync uses two). Kernel: modulated_layernorm_kernel.cu.
#pragma once

#include "rowwise_params.h"

namespace fourreal {

cudaError_t modulated_layernorm_launch(DType dtype, const ModLNParams& p, int nstreams, cudaStream_t stream);

}  // namespace fourreal
