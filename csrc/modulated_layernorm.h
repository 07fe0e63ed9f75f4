// adaLN modulate + LayerNorm: out[r] = LN(x[r]) * (1 + scale[b]) + shift[b] over token rows, one or two
// streams in one launch (soft_sync uses two); or one stream as e4m3 with row scales for the FP8 linears.
// Kernel: modulated_layernorm_kernel.cu.
#pragma once

#include "rowwise_params.h"

namespace fourreal {

cudaError_t modulated_layernorm_launch(DType dtype, const ModLNParams& p, int nstreams, cudaStream_t stream);
// One stream, written as e4m3 bytes (p.s[0].out, row stride out_stride bytes) with a scale per row
// (p.s[0].row_scale): the input of an FP8 linear, quantized as quantize_fp8_rowwise does.
cudaError_t modulated_layernorm_fp8_launch(DType dtype, const ModLNParams& p, cudaStream_t stream);

}  // namespace fourreal
