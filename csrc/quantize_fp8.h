// Row-wise FP8 (e4m3) quantization for the FP8 linears: q[r] = x[r] / s[r], s[r] = amax(|x[r]|) / 448, saturating;
// optionally applies tanh-GELU first (the MLP's hidden activation, fused so it takes no pass of its own).
// Kernel: quantize_fp8_kernel.cu.
#pragma once

#include "types.h"

namespace fourreal {

// x: [rows, K] in dtype with row stride x_stride (elements); q: [rows, K] e4m3 bytes, contiguous; scale: [rows] fp32.
cudaError_t quantize_fp8_rowwise_launch(DType dtype, const void* x, int64_t x_stride, int64_t rows, int K, bool gelu,
                                        uint8_t* q, float* scale, cudaStream_t stream);

}  // namespace fourreal
