// Probe: how fast is each algorithm cuBLASLt offers for the step's e4m3 GEMMs (paper preset, 8x8 grid: 36,864 token
// rows), against the one its heuristic ranks first (the one torch._scaled_mm runs, FP8Linear's GEMM)?
// Row-wise (outer-vector) fp32 scales, fast accumulation, bf16 bias epilogue, bf16 output; fc2 and proj also with a
// gated residual as C (beta = 1), which would save the residual pass after them (cuBLAS 13 runs it at these row
// counts and refuses it at small ones: benchmarks/RESULTS.md, issue 4, session 10); then
// whether the GEMM can also write its output's amax (AMAX_D_POINTER), what an FP8 attention's per-tensor scales need.
// CUDA-event timing, median of 20 after 3 warm-ups.
//   GEMM_PROBE=1 bash benchmarks/gpu_engine.sh (links the cuBLASLt that torch loads), or with the toolkit's:
//   nvcc -O2 -std=c++17 -arch=sm_90a benchmarks/probe_fp8_gemm.cu -lcublasLt -o /tmp/probe_fp8_gemm && /tmp/probe_fp8_gemm
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); std::exit(1); } } while (0)
#define LK(x) do { cublasStatus_t s_ = (x); if (s_ != CUBLAS_STATUS_SUCCESS) { \
  std::printf("cuBLASLt error %d at %s:%d\n", int(s_), __FILE__, __LINE__); std::exit(1); } } while (0)

__global__ void fill_bytes(uint8_t* p, size_t n, uint32_t seed, uint8_t mask) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 13; h *= 0x5bd1e995u; h ^= h >> 15;
    p[i] = uint8_t(h) & mask;   // e4m3 bytes with exponent bits 3 and 0 clear (|x| < 1): finite, no NaN
  }
}

struct Shape { const char* name; int64_t n_out, k; bool residual, amax; };

int main() {
  const int64_t rows = 36864;
  const Shape shapes[] = {{"qkv", 3072, 1024, false, false}, {"fc1", 4096, 1024, false, false},
                          {"fc2 + C", 1024, 4096, true, false}, {"fc2", 1024, 4096, false, false},
                          {"proj + C", 1024, 1024, true, false}, {"qkv + amax", 3072, 1024, false, true},
                          {"q alone + amax", 1024, 1024, false, true}};
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, cuBLASLt %zu\n", prop.name, cublasLtGetVersion());
  cublasLtHandle_t lt;
  LK(cublasLtCreate(&lt));
  const size_t ws_bytes = size_t(32) << 20;
  void* ws;
  CK(cudaMalloc(&ws, ws_bytes));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (const Shape& s : shapes) {
    const int64_t m = s.n_out, n = rows, k = s.k;
    uint8_t *w, *a;
    void *c, *d, *bias;
    float *sw, *sa, *amax;
    CK(cudaMalloc(&w, m * k));
    CK(cudaMalloc(&a, n * k));
    CK(cudaMalloc(&c, m * n * 2));
    CK(cudaMalloc(&d, m * n * 2));
    CK(cudaMalloc(&bias, m * 2));
    CK(cudaMalloc(&sw, m * 4));
    CK(cudaMalloc(&sa, n * 4));
    CK(cudaMalloc(&amax, 4));
    fill_bytes<<<1024, 256>>>(w, m * k, 1, 0xb7);
    fill_bytes<<<1024, 256>>>(a, n * k, 2, 0xb7);
    CK(cudaMemset(c, 0, m * n * 2));
    CK(cudaMemset(bias, 0, m * 2));
    std::vector<float> ones(std::max(m, n), 1.0f);
    CK(cudaMemcpy(sw, ones.data(), m * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(sa, ones.data(), n * 4, cudaMemcpyHostToDevice));

    cublasLtMatmulDesc_t op;
    LK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t tw = CUBLAS_OP_T, ta = CUBLAS_OP_N;
    LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tw, sizeof(tw)));
    LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &ta, sizeof(ta)));
    const int8_t fast = 1;
    const cublasLtMatmulMatrixScale_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof(fast)));
    LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof(mode)));
    LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof(mode)));
    LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sw, sizeof(sw)));
    LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sa, sizeof(sa)));
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    if (s.amax) LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_AMAX_D_POINTER, &amax, sizeof(amax)));
    cublasLtMatrixLayout_t lw, la, lcd;
    LK(cublasLtMatrixLayoutCreate(&lw, CUDA_R_8F_E4M3, k, m, k));
    LK(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, k, n, k));
    LK(cublasLtMatrixLayoutCreate(&lcd, CUDA_R_16BF, m, n, m));
    cublasLtMatmulPreference_t pref;
    LK(cublasLtMatmulPreferenceCreate(&pref));
    LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes)));
    const float one = 1.0f, zero = 0.0f;
    const float* beta = s.residual ? &one : &zero;
    cublasLtMatmulHeuristicResult_t res[32];
    int found = 0;
    const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(lt, op, lw, la, lcd, lcd, pref, 32, res, &found);
    if (hs != CUBLAS_STATUS_SUCCESS) std::printf("%s: heuristic refused (status %d)\n", s.name, int(hs));
    const double flop = 2.0 * m * n * k;
    std::printf("%s: [%lld x %lld] x [%lld x %lld]^T%s, %d algorithms\n", s.name, (long long)n, (long long)k,
                (long long)m, (long long)k, s.residual ? " + C" : "", found);
    double best = 1e30, first = 0;
    int best_i = -1;
    for (int i = 0; i < found; ++i) {
      if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
      cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
      for (int r = 0; r < 3 && st == CUBLAS_STATUS_SUCCESS; ++r)
        st = cublasLtMatmul(lt, op, &one, w, lw, a, la, beta, c, lcd, d, lcd, &res[i].algo, ws, ws_bytes, 0);
      if (st != CUBLAS_STATUS_SUCCESS || cudaDeviceSynchronize() != cudaSuccess) {
        std::printf("  algo %2d: cublasLtMatmul refused it: %s\n", i, cublasLtGetStatusString(st));
        continue;
      }
      std::vector<float> t;
      for (int r = 0; r < 20; ++r) {
        CK(cudaEventRecord(e0));
        LK(cublasLtMatmul(lt, op, &one, w, lw, a, la, beta, c, lcd, d, lcd, &res[i].algo, ws, ws_bytes, 0));
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        t.push_back(ms);
      }
      std::sort(t.begin(), t.end());
      const double ms = t[t.size() / 2];
      if (best_i < 0) first = ms;   // the first algorithm that runs: what a caller taking the heuristic's order gets
      if (ms < best) { best = ms; best_i = i; }
      std::printf("  algo %2d: %.4f ms  %7.1f TFLOP/s  (workspace %zu B)\n", i, ms, flop / ms / 1e9,
                  res[i].workspaceSize);
    }
    if (best_i >= 0)
      std::printf("  => heuristic's first that runs %.4f ms, best algo %d %.4f ms (%.1f%% less)\n", first, best_i, best,
                  100.0 * (first - best) / first);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(lw);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lcd);
    cublasLtMatmulDescDestroy(op);
    if (s.amax && best_i >= 0) {
      float h;
      CK(cudaMemcpy(&h, amax, 4, cudaMemcpyDeviceToHost));
      std::printf("  amax written: %g\n", h);
    }
    cudaFree(w); cudaFree(a); cudaFree(c); cudaFree(d); cudaFree(bias); cudaFree(sw); cudaFree(sa); cudaFree(amax);
  }
  return 0;
}
