// fourreal_C::linear_residual: x + gate ⊙ (a W^T + b) in one cuBLASLt matmul a batch element. Twin:
// twins.gated_residual(x, F.linear(a, W, b), gate).
// A block's gated residual (adaLN-zero) follows the last linear of each branch (attention's proj, the MLP's fc2).
// Instead of writing that linear's output and reading it back with x in a separate pass, the GEMM's epilogue reads x
// as its C matrix (beta = 1) and adds the bias. The gate, one value per output channel and batch element, is folded
// into the weight rows, W' = diag(gate) W (one weight-sized pass, modulate_weight_kernel.cu), and the bias becomes
// gate ⊙ b. (cuBLASLt's per-channel alpha vector with beta = 1 would avoid W', but on the H100 with cuBLAS 13 its
// heuristic offers no kernel for it: measured in session 6, benchmarks/RESULTS.md.)
// fourreal_C::linear_residual_fp8 is the same with e4m3 operands and row-wise scales (an FP8Linear, ops/fp8.py): the
// GEMM's outer-vector scales multiply row i by the activation's scale and output channel j by the weight's, and
// there the gate folds into the weight's scale vector instead of the weight (cuBLAS >= 12.9).
#include <ATen/cuda/CUDAContextLight.h>  // getCurrentCUDABlasLtHandle
#include <torch/library.h>

#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "linear_residual.h"
#include "modulate_weight.h"
#include "torch_utils.h"

namespace fourreal {

namespace {

#define FOURREAL_CUBLASLT_CHECK(expr)                                                                  \
  do {                                                                                                   \
    const cublasStatus_t st_ = (expr);                                                                   \
    TORCH_CHECK(st_ == CUBLAS_STATUS_SUCCESS, "fourreal linear_residual: " #expr " failed: ",            \
                cublasLtGetStatusString(st_));                                                           \
  } while (0)

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // as PyTorch's cuBLAS on Hopper

cudaDataType_t cuda_dtype(at::ScalarType t) {
  if (t == at::kBFloat16) return CUDA_R_16BF;
  if (t == at::kFloat8_e4m3fn) return CUDA_R_8F_E4M3;
  TORCH_CHECK(t == at::kFloat, "linear_residual takes bfloat16 or float32 (or e4m3 operands), got ", t);
  return CUDA_R_32F;
}

#if CUBLAS_VERSION >= 120900
constexpr bool kOuterVecScales = true;
#else
constexpr bool kOuterVecScales = false;
#endif

// Largest power of two up to 256 dividing the address: cuBLASLt's heuristics pick kernels by alignment.
uint32_t alignment(const void* p) {
  uint32_t a = 256;
  while (a > 1 && reinterpret_cast<uintptr_t>(p) % a) a /= 2;
  return a;
}

struct Desc {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t w = nullptr, a = nullptr, cd = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Desc() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (cd) cublasLtMatrixLayoutDestroy(cd);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (w) cublasLtMatrixLayoutDestroy(w);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// Per problem, the first of the heuristic's algorithms that cuBLASLt runs (finding it costs tens of microseconds of
// host time), or none: some it offers refuse at launch (e4m3 with a C matrix on small row counts, measured on the
// H100 with cuBLAS 13), which cublasLtMatmul reports before launching anything.
std::mutex algo_mutex;
std::unordered_map<std::string, std::optional<cublasLtMatmulAlgo_t>> algo_cache;
constexpr int kAlgosTried = 8;

// out^T = W a^T + x^T + bias in cuBLASLt's column-major terms (m = output channels, n = rows): W row-major [m, k],
// a row-major [n, k], x (C) and out (D) row-major [n, m]. With e4m3 W and a (operand = e4m3), scale_w [m] and
// scale_a [n] (fp32) multiply the product's output channels and rows: out = scale_a scale_w^T ⊙ (a W^T) + bias + x.
void matmul(at::ScalarType operand, at::ScalarType dtype, int64_t m, int64_t n, int64_t k, const void* w,
            const void* a, const void* c, void* d, const void* bias, void* workspace, const float* scale_w = nullptr,
            const float* scale_a = nullptr) {
  const cudaDataType_t t_in = cuda_dtype(operand), t = cuda_dtype(dtype);
  const bool scaled = scale_w != nullptr;
  Desc desc;
  FOURREAL_CUBLASLT_CHECK(cublasLtMatmulDescCreate(&desc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_w = CUBLAS_OP_T, trans_a = CUBLAS_OP_N;  // "TN", as e4m3 operands need
  FOURREAL_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_w, sizeof(trans_w)));
  FOURREAL_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_a, sizeof(trans_a)));
  if (scaled) {
#if CUBLAS_VERSION >= 120900
    const int8_t fast_accum = 1;  // as torch._scaled_mm(use_fast_accum=True), which FP8Linear's unfused path runs
    const cublasLtMatmulMatrixScale_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    FOURREAL_CUBLASLT_CHECK(
        cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast_accum, sizeof(fast_accum)));
    FOURREAL_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof(mode)));
    FOURREAL_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof(mode)));
    FOURREAL_CUBLASLT_CHECK(
        cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &scale_w, sizeof(scale_w)));
    FOURREAL_CUBLASLT_CHECK(
        cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &scale_a, sizeof(scale_a)));
#endif
  }
  if (bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    FOURREAL_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    FOURREAL_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  FOURREAL_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&desc.w, t_in, k, m, k));  // W^T, column-major [k, m]
  FOURREAL_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&desc.a, t_in, k, n, k));  // a^T, column-major [k, n]
  FOURREAL_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&desc.cd, t, m, n, m));  // x^T, out^T: column-major [m, n]

  const uint32_t al_w = alignment(w), al_a = alignment(a), al_c = alignment(c), al_d = alignment(d),
                 al_b = bias ? alignment(bias) : 256;
  std::string key;
  for (const int64_t v : {int64_t(t_in), int64_t(t), int64_t(scaled), m, n, k, int64_t(bias != nullptr), int64_t(al_w),
                          int64_t(al_a), int64_t(al_c), int64_t(al_d), int64_t(al_b)})
    key += std::to_string(v) + ":";
  cublasLtHandle_t handle = at::cuda::getCurrentCUDABlasLtHandle();
  const float one = 1.0f;
  const auto run = [&](const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(handle, desc.op, &one, w, desc.w, a, desc.a, &one, c, desc.cd, d, desc.cd, &algo, workspace,
                          kWorkspaceBytes, current_stream());
  };
  std::optional<cublasLtMatmulAlgo_t> algo;
  {
    std::lock_guard<std::mutex> lock(algo_mutex);
    auto it = algo_cache.find(key);
    if (it == algo_cache.end()) {
      FOURREAL_CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&desc.pref));
      const size_t ws = kWorkspaceBytes;
      FOURREAL_CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
          desc.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
      const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, al_w}, {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, al_a},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, al_c}, {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, al_d}};
      for (const auto& [attr, value] : aligns)
        FOURREAL_CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.pref, attr, &value, sizeof(value)));
      cublasLtMatmulHeuristicResult_t results[kAlgosTried] = {};
      int found = 0;
      FOURREAL_CUBLASLT_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, desc.op, desc.w, desc.a, desc.cd, desc.cd,
                                                             desc.pref, kAlgosTried, results, &found));
      for (int i = 0; i < found && !algo; ++i) {  // this call's product: the first that runs
        const cublasStatus_t st = run(results[i].algo);
        if (st == CUBLAS_STATUS_SUCCESS) algo = results[i].algo;
        else TORCH_CHECK(st == CUBLAS_STATUS_NOT_SUPPORTED, "fourreal linear_residual: cublasLtMatmul failed: ",
                         cublasLtGetStatusString(st));
      }
      algo_cache.emplace(key, algo);
      TORCH_CHECK(algo, "linear_residual: cuBLASLt runs none of its ", found, " algorithms for [", n, ", ", k,
                  "] x [", k, ", ", m, "] here (not supported)");
      return;
    }
    algo = it->second;
  }
  TORCH_CHECK(algo, "linear_residual: cuBLASLt runs none of its algorithms for [", n, ", ", k, "] x [", k, ", ", m,
              "] here (not supported)");
  FOURREAL_CUBLASLT_CHECK(run(*algo));
}

}  // namespace

void linear_residual_into(const at::Tensor& x, const at::Tensor& a, const at::Tensor& weight, const at::Tensor& bias,
                          const at::Tensor& gate, at::Tensor& out) {
  const int64_t M = x.size(0), N = x.size(1), K = a.size(1);
  const int64_t B = gate.defined() ? gate.size(0) : 1, rows = M / B;
  if (M == 0 || N == 0) return;
  const at::ScalarType dtype = x.scalar_type();
  const int64_t elem = x.element_size();
  at::Tensor workspace = at::empty({static_cast<int64_t>(kWorkspaceBytes)}, x.options().dtype(at::kByte));
  at::Tensor w = weight, b = bias;  // per batch element: diag(gate) W [B, N, K] and gate ⊙ b [B, N], one launch
  if (gate.defined()) {
    w = at::empty({B, N, K}, weight.options());
    if (bias.defined()) b = at::empty({B, N}, bias.options());
    FOURREAL_CUDA_CHECK(scale_rows_launch(kernel_dtype(weight), weight.data_ptr(), gate.data_ptr<float>(), w.data_ptr(),
                                          static_cast<int>(B), N, K, bias.defined() ? bias.data_ptr() : nullptr,
                                          bias.defined() ? b.data_ptr() : nullptr, current_stream()));
  }
  for (int64_t i = 0; i < B; ++i) {
    const char* wi = static_cast<const char*>(w.data_ptr()) + (gate.defined() ? i * N * K * elem : 0);
    const char* bi = b.defined() ? static_cast<const char*>(b.data_ptr()) + (gate.defined() ? i * N * elem : 0) : nullptr;
    matmul(dtype, dtype, N, rows, K, wi, static_cast<const char*>(a.data_ptr()) + i * rows * K * elem,
           static_cast<const char*>(x.data_ptr()) + i * rows * N * elem,
           static_cast<char*>(out.data_ptr()) + i * rows * N * elem, bi, workspace.data_ptr());
  }
}

// x: [B, ..., N]; a: [B, ..., K] with as many rows; weight: [N, K]; bias: [N]; gate: [B, N] (any float dtype).
// Returns x + gate ⊙ (a W^T + bias), contiguous [B, ..., N].
at::Tensor linear_residual(const at::Tensor& x_in, const at::Tensor& a_in, const at::Tensor& weight_in,
                           const std::optional<at::Tensor>& bias_in, const std::optional<at::Tensor>& gate_in) {
  TORCH_CHECK(x_in.is_cuda() && x_in.dim() >= 2, "linear_residual: x must be a CUDA tensor [B, ..., N]");
  TORCH_CHECK(a_in.device() == x_in.device() && a_in.dim() >= 1, "linear_residual: a must be on x's device");
  TORCH_CHECK(a_in.scalar_type() == x_in.scalar_type() && weight_in.scalar_type() == x_in.scalar_type(),
              "linear_residual: x, a and weight must share a dtype");
  const int64_t B = x_in.size(0), N = x_in.size(-1), M = x_in.numel() / std::max<int64_t>(N, 1);
  const int64_t K = a_in.size(-1);
  TORCH_CHECK(K > 0, "linear_residual: a has no input features");
  TORCH_CHECK(weight_in.dim() == 2 && weight_in.size(0) == N && weight_in.size(1) == K,
              "linear_residual: weight must be [N, K] = [", N, ", ", K, "], got ", weight_in.sizes());
  TORCH_CHECK(a_in.numel() == M * K && (a_in.dim() == 1 || a_in.size(0) == B),
              "linear_residual: a must be [B, ..., K] with x's rows, got ", a_in.sizes(), " for x ", x_in.sizes());
  at::Tensor bias, gate;
  if (bias_in.has_value() && bias_in->defined()) {
    bias = bias_in->to(x_in.scalar_type()).contiguous();
    TORCH_CHECK(bias.dim() == 1 && bias.size(0) == N, "linear_residual: bias must be [N]");
  }
  if (gate_in.has_value() && gate_in->defined()) {
    gate = mod_f32(*gate_in);
    TORCH_CHECK(gate.dim() == 2 && gate.size(0) == B && gate.size(1) == N, "linear_residual: gate must be [B, N]");
  }
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous().view({M, N}), a = a_in.contiguous().view({M, K});
  const at::Tensor w = weight_in.contiguous();
  at::Tensor out = at::empty(x_in.sizes(), x_in.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor out2 = out.view({M, N});
  linear_residual_into(x, a, w, bias, gate, out2);
  return out;
}

// x: [B, ..., N] bf16; aq: [M, K] e4m3 with a_scale [M, 1] fp32 (M = x's rows); wq: [N, K] e4m3 with w_scale
// [1, N] fp32; bias: [N]; gate: [B, N]. Returns x + gate ⊙ (a_scale w_scale ⊙ (aq wq^T) + bias), contiguous.
at::Tensor linear_residual_fp8(const at::Tensor& x_in, const at::Tensor& aq, const at::Tensor& a_scale,
                               const at::Tensor& wq, const at::Tensor& w_scale, const std::optional<at::Tensor>& bias_in,
                               const std::optional<at::Tensor>& gate_in) {
  TORCH_CHECK(kOuterVecScales, "linear_residual_fp8: needs cuBLAS >= 12.9 (row-wise FP8 scales), built with ",
              CUBLAS_VERSION);
  TORCH_CHECK(x_in.is_cuda() && x_in.dim() >= 2 && x_in.scalar_type() == at::kBFloat16,
              "linear_residual_fp8: x must be a bfloat16 CUDA tensor [B, ..., N]");
  const int64_t B = x_in.size(0), N = x_in.size(-1), M = x_in.numel() / std::max<int64_t>(N, 1), K = aq.size(-1);
  TORCH_CHECK(aq.scalar_type() == at::kFloat8_e4m3fn && wq.scalar_type() == at::kFloat8_e4m3fn,
              "linear_residual_fp8: aq and wq must be float8_e4m3fn");
  TORCH_CHECK(aq.device() == x_in.device() && wq.device() == x_in.device(), "linear_residual_fp8: tensors on x's device");
  TORCH_CHECK(aq.dim() == 2 && aq.size(0) == M && K > 0 && K % 16 == 0 && N % 16 == 0 && M % B == 0,
              "linear_residual_fp8: aq must be [M, K] for x's M = ", M, " rows, K and N multiples of 16, got ",
              aq.sizes(), " for x ", x_in.sizes());
  TORCH_CHECK(wq.dim() == 2 && wq.size(0) == N && wq.size(1) == K, "linear_residual_fp8: wq must be [N, K] = [", N,
              ", ", K, "], got ", wq.sizes());
  TORCH_CHECK(a_scale.scalar_type() == at::kFloat && a_scale.numel() == M && w_scale.scalar_type() == at::kFloat &&
                  w_scale.numel() == N,
              "linear_residual_fp8: a_scale must be [M, 1] and w_scale [1, N], fp32");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor ws = w_scale.reshape({1, N});  // [1, N]
  at::Tensor gate, scale_w = ws.contiguous(), bias;
  if (gate_in.has_value() && gate_in->defined()) {
    gate = mod_f32(*gate_in);
    TORCH_CHECK(gate.dim() == 2 && gate.size(0) == B && gate.size(1) == N, "linear_residual_fp8: gate must be [B, N]");
    scale_w = gate * ws;  // [B, N]: the gate on the output channels, in the weight's scale
  }
  if (bias_in.has_value() && bias_in->defined()) {
    TORCH_CHECK(bias_in->dim() == 1 && bias_in->size(0) == N, "linear_residual_fp8: bias must be [N]");
    bias = (gate.defined() ? gate * bias_in->to(at::kFloat).view({1, N}) : bias_in->view({1, N}))
               .to(at::kBFloat16).contiguous();  // [B or 1, N]: gate ⊙ bias
  }
  const at::Tensor x = x_in.contiguous().view({M, N}), a = aq.contiguous(), w = wq.contiguous();
  const at::Tensor sa = a_scale.contiguous();
  at::Tensor out = at::empty(x_in.sizes(), x_in.options().memory_format(at::MemoryFormat::Contiguous));
  if (M == 0) return out;
  at::Tensor workspace = at::empty({static_cast<int64_t>(kWorkspaceBytes)}, x.options().dtype(at::kByte));
  const int64_t rows = M / B, per_batch = gate.defined() ? 1 : 0;
  for (int64_t i = 0; i < B; ++i) {
    matmul(at::kFloat8_e4m3fn, at::kBFloat16, N, rows, K, w.data_ptr(),
           static_cast<const char*>(a.data_ptr()) + i * rows * K,
           static_cast<const char*>(x.data_ptr()) + i * rows * N * 2, static_cast<char*>(out.data_ptr()) + i * rows * N * 2,
           bias.defined() ? static_cast<const char*>(bias.data_ptr()) + i * per_batch * N * 2 : nullptr,
           workspace.data_ptr(), scale_w.data_ptr<float>() + i * per_batch * N, sa.data_ptr<float>() + i * rows);
  }
  return out;
}

TORCH_LIBRARY_IMPL(fourreal_C, CUDA, m) {
  m.impl("linear_residual", &linear_residual);
  m.impl("linear_residual_fp8", &linear_residual_fp8);
}

}  // namespace fourreal
