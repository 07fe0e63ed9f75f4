// Parameter blocks of the row-wise kernels (rowwise.cuh), visible to the host code that fills them.
// Every tensor here is a matrix of token rows by D channels, its last dim contiguous.
#pragma once

#include "types.h"

namespace fourreal {

// One stream of a modulated LayerNorm: out[r] = LN(x[r]) * (1 + scale[b]) + shift[b], b = r / rows_per_batch.
struct ModLNStream {
  const void* x;          // [rows, D] in the launch's dtype; rows addressed through x_rows
  RowIndexer x_rows;
  const float* shift;     // [B, D] fp32, row stride shift_stride
  const float* scale;     // [B, D] fp32, row stride scale_stride
  int64_t shift_stride;
  int64_t scale_stride;
  void* out;              // [rows, D] with row stride out_stride (elements)
  int64_t out_stride;
  float* row_scale;       // FP8 output only: [rows] fp32, out[r] = e4m3 bytes of LN(...)[r] / row_scale[r]
};

struct ModLNParams {
  ModLNStream s[2];       // blockIdx.y picks the stream
  int64_t rows;           // rows of each stream
  int64_t rows_per_batch; // rows / B
  int D;
  float eps;
};

// A gated residual update: out[r] = x[r] + gate[b] * y[r].
struct ResidualParams {
  const void* x;          // [rows, D]
  RowIndexer x_rows;
  const void* y;          // [rows, D]
  RowIndexer y_rows;
  const float* gate;      // [B, D] fp32
  int64_t gate_stride;
  void* out;              // [rows, D] with row stride out_stride
  int64_t out_stride;
  int64_t rows;
  int64_t rows_per_batch;
  int D;
};

}  // namespace fourreal
