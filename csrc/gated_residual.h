// Gate + residual: out[r] = x[r] + gate[b] * y[r] over token rows (rows of any strides). Where the residual
// follows a linear layer it rides in that GEMM instead (linear_residual.cpp). Kernel: gated_residual_kernel.cu.
#pragma once

#include "rowwise_params.h"

namespace fourreal {

cudaError_t gated_residual_launch(DType dtype, const ResidualParams& p, cudaStream_t stream);

}  // namespace fourreal
