// fourreal_C::linear_residual: x + gate ⊙ (a W^T + b) in one cuBLASLt matmul a batch element. Twin:
// twins.gated_residual(x, F.linear(a, W, b), gate).
// A block's gated residual (adaLN-zero) follows the last linear of each branch (attention's proj, the MLP's fc2).
// Instead of writing that linear's output and reading it back with x in a separate pass, the GEMM's epilogue reads x
// as its C matrix (beta = 1) and adds the bias. The gate, one value per output channel and batch element, is folded
// into the weight rows, W' = diag(gate) W (one weight-sized pass, modulate_weight_kernel.cu), and the bias becomes
// gate ⊙ b. (cuBLASLt's per-channel alpha vector with beta = 1 would avoid W', but on the H100 with cuBLAS 13 its
// heuristic offers no kernel for it: measured in session 6, benchmarks/RESULTS.md.)
#include <ATen/cuda/CUDAContextLight.h>  // getCurrentCUDABlasLtHandle
#include <torch/library.h>

#include <mutex>
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
  TORCH_CHECK(t == at::kFloat, "linear_residual takes bfloat16 or float32, got ", t);
  return CUDA_R_32F;
}

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

// The heuristic's first choice per problem (it costs tens of microseconds of host time a call).
std::mutex algo_mutex;
std::unordered_map<std::string, cublasLtMatmulAlgo_t> algo_cache;

// out^T = W a^T + x^T + bias in cuBLASLt's column-major terms (m = output channels, n = rows): W row-major [m, k],
// a row-major [n, k], x (C) and out (D) row-major [n, m].
void matmul(at::ScalarType dtype, int64_t m, int64_t n, int64_t k, const void* w, const void* a, const void* c,
            void* d, const void* bias, void* workspace) {
  const cudaDataType_t t = cuda_dtype(dtype);
  Desc desc;
  FOURREAL_CUBLASLT_CHECK(cublasLtMatmulDescCreate(&desc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_w = CUBLAS_OP_T, trans_a = CUBLAS_OP_N;
  FOURREAL_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_w, sizeof(trans_w)));
  FOURREAL_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_a, sizeof(trans_a)));
  if (bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    FOURREAL_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    FOURREAL_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  FOURREAL_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&desc.w, t, k, m, k));   // W^T, column-major [k, m]
  FOURREAL_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&desc.a, t, k, n, k));   // a^T, column-major [k, n]
  FOURREAL_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&desc.cd, t, m, n, m));  // x^T, out^T: column-major [m, n]

  const uint32_t al_w = alignment(w), al_a = alignment(a), al_c = alignment(c), al_d = alignment(d),
                 al_b = bias ? alignment(bias) : 256;
  std::string key;
  for (const int64_t v : {int64_t(t), m, n, k, int64_t(bias != nullptr), int64_t(al_w), int64_t(al_a), int64_t(al_c),
                          int64_t(al_d), int64_t(al_b)})
    key += std::to_string(v) + ":";
  cublasLtHandle_t handle = at::cuda::getCurrentCUDABlasLtHandle();
  cublasLtMatmulAlgo_t algo;
  {
    std::lock_guard<std::mutex> lock(algo_mutex);
    auto it = algo_cache.find(key);
    if (it != algo_cache.end()) {
      algo = it->second;
    } else {
      FOURREAL_CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&desc.pref));
      const size_t ws = kWorkspaceBytes;
      FOURREAL_CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
          desc.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
      const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, al_w}, {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, al_a},
          {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, al_c}, {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, al_d}};
      for (const auto& [attr, value] : aligns)
        FOURREAL_CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.pref, attr, &value, sizeof(value)));
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      FOURREAL_CUBLASLT_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, desc.op, desc.w, desc.a, desc.cd, desc.cd,
                                                             desc.pref, 1, &result, &found));
      TORCH_CHECK(found > 0, "linear_residual: cuBLASLt has no algorithm for [", n, ", ", k, "] x [", k, ", ", m, "]");
      algo = result.algo;
      algo_cache.emplace(key, algo);
    }
  }
  const float one = 1.0f;
  FOURREAL_CUBLASLT_CHECK(cublasLtMatmul(handle, desc.op, &one, w, desc.w, a, desc.a, &one, c, desc.cd, d, desc.cd,
                                         &algo, workspace, kWorkspaceBytes, current_stream()));
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
    matmul(dtype, N, rows, K, wi, static_cast<const char*>(a.data_ptr()) + i * rows * K * elem,
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

TORCH_LIBRARY_IMPL(fourreal_C, CUDA, m) { m.impl("linear_residual", &linear_residual); }

}  // namespace fourreal
