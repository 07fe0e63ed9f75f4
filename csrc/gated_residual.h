// Gate + residual: out[r] = x[r] + gate[b] * y[r] over token rows (gate may be absent: plain sum), one or two
// streams in one launch. Kernel: gated_residual_kernel.cu.
#pragma once

#include "rowwise_params.h"

namespace fourreal {

cudaError_t gated_residual_launch(DType dtype, const ResidualParams& p, int nstreams, cudaStream_t stream);

}  // namespace fourreal
