// Types shared by the host side (.cpp, compiled without nvcc) and the kernels (.cu): element types and the
// row indexer that lets kernels read strided tensors in place. Plain C++ plus CUDA's host/device qualifiers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fourreal {

// Element types a launcher accepts (the .cpp maps torch dtypes onto these).
enum class DType : int { kFloat32 = 0, kBFloat16 = 1 };

constexpr int kMaxRowDims = 6;

constexpr float kFp8E4m3Max = 448.f;  // largest finite float8_e4m3fn

// Maps a logical row index (row-major over the tensor's leading dims) to an element offset, for a tensor
// whose last dim is contiguous. Dims are stored innermost first; adjacent dims that are contiguous with each
// other are coalesced on the host, so the usual contiguous tensor has ndim == 1 and costs one multiply.
struct RowIndexer {
  int ndim;
  int64_t sizes[kMaxRowDims];    // innermost first
  int64_t strides[kMaxRowDims];  // elements, innermost first

  __host__ __device__ __forceinline__ int64_t offset(int64_t r) const {
    if (ndim == 1) return r * strides[0];
    int64_t off = 0;
#pragma unroll
    for (int d = 0; d < kMaxRowDims; ++d) {
      if (d < ndim) {
        const int64_t i = r % sizes[d];
        r /= sizes[d];
        off += i * strides[d];
      }
    }
    return off;
  }
};

// Builds the indexer of a tensor's row dims (its leading dims: sizes and strides in elements, outermost
// first), dropping size-1 dims and coalescing dims that are contiguous with each other. n <= kMaxRowDims.
inline RowIndexer make_row_indexer(int n, const int64_t* sizes, const int64_t* strides) {
  RowIndexer ri{};
  ri.ndim = 0;
  for (int d = n - 1; d >= 0; --d) {
    if (sizes[d] == 1) continue;
    if (ri.ndim > 0 && strides[d] == ri.sizes[ri.ndim - 1] * ri.strides[ri.ndim - 1]) {
      ri.sizes[ri.ndim - 1] *= sizes[d];
    } else {
      ri.sizes[ri.ndim] = sizes[d];
      ri.strides[ri.ndim] = strides[d];
      ri.ndim++;
    }
  }
  if (ri.ndim == 0) {
    ri.ndim = 1;
    ri.sizes[0] = 1;
    ri.strides[0] = 0;
  }
  return ri;
}

// True if every row of the indexer starts a multiple of `elems` elements from the base.
inline bool rows_aligned(const RowIndexer& ri, int64_t elems) {
  for (int d = 0; d < ri.ndim; ++d)
    if (ri.sizes[d] > 1 && ri.strides[d] % elems != 0) return false;
  return true;
}

inline bool ptr_aligned(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

}  // namespace fourreal
