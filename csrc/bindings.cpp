// All schemas of the compiled ops (namespace fourreal_C), one comment each; outputs written in place are marked
// Tensor!. The CUDA implementations are registered next to each op (csrc/<op>.cpp). The public ops are the
// Python-defined fourreal::* (fourreal_rt/ops/custom.py, which CPU-only installs have too); their CUDA kernels,
// registered by fourreal_rt/ops/backend.py, call these.
#include <torch/library.h>

#ifndef FOURREAL_NO_PYTHON
#include <Python.h>
#endif

TORCH_LIBRARY(fourreal_C, m) {
  // adaLN: LayerNorm(x) * (1 + scale) + shift. x: [B, ..., D] (any strides); shift, scale: [B, D].
  m.def("modulated_layernorm(Tensor x, Tensor shift, Tensor scale, float eps) -> Tensor");
  // The same, written as an FP8 linear's input: q [rows, D] e4m3 and row_scale [rows, 1] fp32, q * row_scale ≈ out.
  m.def("modulated_layernorm_fp8(Tensor x, Tensor shift, Tensor scale, float eps, Tensor! q, Tensor! row_scale) -> ()");
  // x + gate * y. x, y: [B, ..., D] (any strides); gate: [B, D].
  m.def("gated_residual(Tensor x, Tensor y, Tensor gate) -> Tensor");
  // 3D RoPE on q and k fused with packing each sequence of `axis` (0: time, 1: view) into [S, L, H, hd].
  m.def("rope_pack(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin, int axis, Tensor! q_out, Tensor! k_out, "
        "Tensor! v_out) -> ()");
  // Attention along a grid axis with RoPE: [B, V, T, N, H, hd] -> same; backend 0 cuDNN, 1 flash, 2 SDPA default,
  // 3 memory-efficient.
  m.def("grid_attention(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin, int axis, int backend) -> Tensor");
  // rope_pack with e4m3 outputs scaled per tensor for cuDNN's FP8 attention; scalars: fp32 [10] (descale q, k, v,
  // descale s, scale s, scale o, descale o, amax q, k, v), written.
  m.def("rope_pack_fp8(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin, int axis, Tensor! q_out, "
        "Tensor! k_out, Tensor! v_out, Tensor! scalars) -> ()");
  // The e4m3 attention output on packed sequences [S, L, H, hd], times the device scalar `scale`, back to the grid
  // layout: writes out [B, V, T, N, H, hd] (bf16 or fp32).
  m.def("grid_gather_fp8(Tensor o8, Tensor scale, int axis, Tensor! out) -> ()");
  // x + gate * (a W^T + bias) in one cuBLASLt GEMM (residual and bias in its epilogue, gate folded into W).
  // x: [B, ..., N]; a: [B, ..., K]; weight: [N, K]; bias: [N]; gate: [B, N].
  m.def("linear_residual(Tensor x, Tensor a, Tensor weight, Tensor? bias, Tensor? gate) -> Tensor");
  // Soft sync (eqs. 9-10): returns (y_v + Δy_v, y_t + Δy_t). mod: [B, 4D]; weight: [2D, 2D]; bias: [2D].
  m.def("soft_sync(Tensor y_v, Tensor y_t, Tensor mod, Tensor weight, Tensor bias, float eps) -> (Tensor, Tensor)");
  // Hard sync (eq. 8): the merged stream. mod: [B, 2D]; weight: [D, 2D]; bias: [D].
  m.def("hard_sync(Tensor y_v, Tensor y_t, Tensor mod, Tensor weight, Tensor bias) -> Tensor");
  // Row-wise e4m3 quantization (optionally of tanh-GELU(x)): writes q [M, K] and scale [M, 1] with x ≈ q * scale.
  m.def("quantize_fp8_rowwise(Tensor x, bool gelu, Tensor! q, Tensor! scale) -> ()");
}

#ifndef FOURREAL_NO_PYTHON
// `import fourreal_rt._C` loads this library, whose static initializers register the ops above.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "fourreal_rt compiled kernels (torch.ops.fourreal_C)",
                                          -1, nullptr};
  return PyModule_Create(&module_def);
}
#endif
