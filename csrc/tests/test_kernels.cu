// ctest: the kernel launchers against fp32 CPU references, torch-free. Fresh random inputs each run (seed printed),
// awkward sizes (odd channel counts, non-power-of-two token counts), strided inputs, outputs poisoned with NaN
// first so that an unwritten element fails. Exit code 0 only if every case passes.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gated_residual.h"
#include "grid_attention.h"
#include "modulate_weight.h"
#include "modulated_layernorm.h"
#include "quantize_fp8.h"

using namespace fourreal;

#define CK(x)                                                                                \
  do {                                                                                       \
    cudaError_t e_ = (x);                                                                    \
    if (e_ != cudaSuccess) {                                                                 \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__);  \
      std::exit(2);                                                                          \
    }                                                                                        \
  } while (0)

static std::mt19937_64 rng;
static int failures = 0;

static std::vector<float> randn(size_t n, float scale = 1.f, float mean = 0.f) {
  std::normal_distribution<float> d(mean, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Host buffer of dtype T mirrored on the device; `f` holds the values as the device sees them (after rounding).
template <typename T>
struct Buf {
  std::vector<float> f;
  T* d = nullptr;
  size_t n = 0;
  explicit Buf(size_t n_) : f(n_), n(n_) { CK(cudaMalloc(&d, n * sizeof(T) + 16)); }
  Buf(const std::vector<float>& v) : Buf(v.size()) { upload(v); }
  ~Buf() { cudaFree(d); }
  void upload(const std::vector<float>& v) {
    std::vector<T> h(n);
    for (size_t i = 0; i < n; ++i) {
      h[i] = static_cast<T>(v[i]);
      f[i] = static_cast<float>(h[i]);
    }
    CK(cudaMemcpy(d, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  void poison() { CK(cudaMemset(d, 0xff, n * sizeof(T))); }  // NaN in fp32 and bf16
  std::vector<float> download() const {
    std::vector<T> h(n);
    CK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    std::vector<float> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(h[i]);
    return out;
  }
};

// Compares out[idx] with ref over the listed positions; tolerance rtol * |ref| + atol (bf16 output rounding).
static void expect_close(const char* name, const std::vector<float>& out, const std::vector<float>& ref,
                         const std::vector<size_t>& idx, float rtol, float atol) {
  double worst = 0;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < idx.size(); ++i) {
    const float o = out[idx[i]], r = ref[i];
    const double err = std::fabs(static_cast<double>(o) - r);
    if (!(err <= rtol * std::fabs(r) + atol)) {  // NaN fails too
      if (!bad) first = i;
      ++bad;
    }
    if (err > worst || std::isnan(err)) worst = err;
  }
  std::printf("%-44s %s  max|err| %.3g  (%zu values)\n", name, bad ? "FAIL" : "ok  ", worst, idx.size());
  if (bad) {
    std::printf("    %zu bad, first at %zu: got %g want %g\n", bad, first, out[idx[first]], ref[first]);
    ++failures;
  }
}

template <typename T>
constexpr float out_rtol() { return sizeof(T) == 2 ? 1.f / 128 : 1e-5f; }  // bf16 keeps 8 significant bits

// --- modulated LayerNorm, one and two streams, strided rows ------------------------------------------------------
template <typename T>
static void test_modln(int B, int R, int D, int pitch, const char* name) {
  // x: B*R rows of D channels, row r at r * pitch (pitch >= D: strided rows)
  const int rows = B * R;
  Buf<T> x(randn(static_cast<size_t>(rows) * pitch, 1.5f, 0.3f));
  Buf<float> sh(randn(static_cast<size_t>(B) * D, 0.5f)), sc(randn(static_cast<size_t>(B) * D, 0.5f));
  Buf<T> out(static_cast<size_t>(rows) * D * 2);  // two streams side by side: row stride 2D
  out.poison();
  ModLNParams p{};
  const int64_t sizes[1] = {rows}, strides[1] = {pitch};
  p.s[0] = ModLNStream{x.d, make_row_indexer(1, sizes, strides), sh.d, sc.d, D, D, out.d, 2 * D, nullptr};
  p.s[1] = ModLNStream{x.d, make_row_indexer(1, sizes, strides), sc.d, sh.d, D, D, out.d + D, 2 * D, nullptr};  // swapped
  p.rows = rows;
  p.rows_per_batch = R;
  p.D = D;
  p.eps = 1e-6f;
  CK(modulated_layernorm_launch(sizeof(T) == 2 ? DType::kBFloat16 : DType::kFloat32, p, 2, 0));
  CK(cudaDeviceSynchronize());
  const auto o = out.download();
  std::vector<float> ref;
  std::vector<size_t> idx;
  for (int s = 0; s < 2; ++s)
    for (int r = 0; r < rows; ++r) {
      const float* xr = &x.f[static_cast<size_t>(r) * pitch];
      double mean = 0, var = 0;
      for (int j = 0; j < D; ++j) mean += xr[j];
      mean /= D;
      for (int j = 0; j < D; ++j) var += (xr[j] - mean) * (xr[j] - mean);
      const double rstd = 1.0 / std::sqrt(var / D + 1e-6);
      const int b = r / R;
      for (int j = 0; j < D; ++j) {
        const float shv = (s == 0 ? sh : sc).f[b * D + j], scv = (s == 0 ? sc : sh).f[b * D + j];
        ref.push_back(static_cast<float>((xr[j] - mean) * rstd * (1 + scv) + shv));
        idx.push_back(static_cast<size_t>(r) * 2 * D + s * D + j);
      }
    }
  expect_close(name, o, ref, idx, out_rtol<T>(), 1e-4f);

  // stream 0 as an FP8 linear's input: e4m3 rows [rows, D] with a scale each (amax / 448)
  uint8_t* q;
  float* rs;
  CK(cudaMalloc(&q, static_cast<size_t>(rows) * D));
  CK(cudaMalloc(&rs, rows * sizeof(float)));
  CK(cudaMemset(q, 0x7f, static_cast<size_t>(rows) * D));  // NaN in e4m3
  CK(cudaMemset(rs, 0xff, rows * sizeof(float)));
  p.s[0].out = q;
  p.s[0].out_stride = D;
  p.s[0].row_scale = rs;
  CK(modulated_layernorm_fp8_launch(sizeof(T) == 2 ? DType::kBFloat16 : DType::kFloat32, p, 0));
  CK(cudaDeviceSynchronize());
  std::vector<uint8_t> hq(static_cast<size_t>(rows) * D);
  std::vector<float> hs(rows), deq(hq.size()), ref8;
  std::vector<size_t> idx8;
  CK(cudaMemcpy(hq.data(), q, hq.size(), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(hs.data(), rs, rows * sizeof(float), cudaMemcpyDeviceToHost));
  cudaFree(q);
  cudaFree(rs);
  float max_scale = 0;
  bool scales_ok = true;
  for (int r = 0; r < rows; ++r) {
    float amax = 0;
    for (int j = 0; j < D; ++j) amax = std::fmax(amax, std::fabs(ref[static_cast<size_t>(r) * D + j]));
    scales_ok = scales_ok && std::fabs(hs[r] - amax / 448.f) <= 1e-4f * amax / 448.f;
    max_scale = std::fmax(max_scale, hs[r]);
    for (int j = 0; j < D; ++j) {
      __nv_fp8_e4m3 e;
      e.__x = hq[static_cast<size_t>(r) * D + j];
      deq[static_cast<size_t>(r) * D + j] = static_cast<float>(e) * hs[r];
      ref8.push_back(ref[static_cast<size_t>(r) * D + j]);
      idx8.push_back(static_cast<size_t>(r) * D + j);
    }
  }
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%s fp8 out", name);
  expect_close(buf, deq, ref8, idx8, 1.f / 16 + 1e-3f, max_scale / 1024.f);
  if (!scales_ok) {
    std::printf("    %s: a row scale is not amax / 448\n", buf);
    ++failures;
  }
}

// --- gated residual, permuted (two-dim) row layout for y --------------------------------------------------------
template <typename T>
static void test_residual(int B, int R1, int R2, int D, const char* name) {
  // logical rows (b, i, j) with i < R1, j < R2; x contiguous, y stored as [B, R2, R1, D] (transposed row dims)
  const int rows = B * R1 * R2;
  Buf<T> x(randn(static_cast<size_t>(rows) * D)), y(randn(static_cast<size_t>(rows) * D));
  Buf<float> g(randn(static_cast<size_t>(B) * D, 0.7f));
  Buf<T> out(static_cast<size_t>(rows) * D);
  out.poison();
  const int64_t xs[1] = {rows}, xst[1] = {D};
  const int64_t ys[3] = {B, R1, R2}, yst[3] = {int64_t(R1) * R2 * D, D, int64_t(R1) * D};
  ResidualParams p{x.d, make_row_indexer(1, xs, xst), y.d, make_row_indexer(3, ys, yst), g.d, D, out.d, D};
  p.rows = rows;
  p.rows_per_batch = R1 * R2;
  p.D = D;
  CK(gated_residual_launch(sizeof(T) == 2 ? DType::kBFloat16 : DType::kFloat32, p, 0));
  CK(cudaDeviceSynchronize());
  const auto o = out.download();
  std::vector<float> ref;
  std::vector<size_t> idx;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < R1; ++i)
      for (int j = 0; j < R2; ++j)
        for (int c = 0; c < D; ++c) {
          const size_t r = (static_cast<size_t>(b) * R1 + i) * R2 + j;
          const size_t yo = ((static_cast<size_t>(b) * R2 + j) * R1 + i) * D + c;
          ref.push_back(x.f[r * D + c] + g.f[b * D + c] * y.f[yo]);
          idx.push_back(r * D + c);
        }
  expect_close(name, o, ref, idx, out_rtol<T>(), 1e-5f);
}

// --- RoPE + pack along time / view, then the gather back to the grid layout -------------------------------------
template <typename T>
static void test_rope_pack(int B, int V, int T_, int N, int H, int hd, int axis, const char* name) {
  // q, k, v: views into one [B, V, T, N, 3, H, hd] buffer, as the model's qkv projection produces them
  const size_t tokens = static_cast<size_t>(B) * V * T_ * N;
  const int64_t per = int64_t(H) * hd;
  Buf<T> qkv(randn(tokens * 3 * per));
  const int F = axis == kAxisTime ? T_ : V;
  std::vector<float> cs(static_cast<size_t>(F) * N * hd / 2), sn(cs.size());
  for (size_t i = 0; i < cs.size(); ++i) {
    const float a = std::uniform_real_distribution<float>(-3.f, 3.f)(rng);
    cs[i] = std::cos(a);
    sn[i] = std::sin(a);
  }
  Buf<float> cosb(cs), sinb(sn);
  Buf<T> packed0(tokens * per), packed1(tokens * per), packed2(tokens * per), back(tokens * per);
  packed0.poison(); packed1.poison(); packed2.poison(); back.poison();
  RopePackParams p{};
  const int64_t st[5] = {int64_t(V) * T_ * N * 3 * per, int64_t(T_) * N * 3 * per, int64_t(N) * 3 * per, 3 * int64_t(per), hd};
  for (int w = 0; w < 3; ++w) {
    p.src[w] = qkv.d + w * per;
    std::memcpy(p.src_strides[w], st, sizeof(st));
  }
  p.dst[0] = packed0.d; p.dst[1] = packed1.d; p.dst[2] = packed2.d;
  p.cos = cosb.d; p.sin = sinb.d;
  p.B = B; p.V = V; p.T = T_; p.N = N; p.H = H; p.hd = hd;
  p.axis = axis; p.nrot = 2; p.ntensors = 3;
  const DType dt = sizeof(T) == 2 ? DType::kBFloat16 : DType::kFloat32;
  CK(rope_pack_launch(dt, p, 0));
  // gather the packed v back to [B, V, T, N, H, hd]: must reproduce v exactly
  const int64_t L = int64_t(N) * (axis == kAxisTime ? T_ : V), sS = L * per, sL = per, sH = hd;
  GridGatherParams g{};
  g.src = packed2.d;
  const int64_t gt[5] = {axis == kAxisTime ? V * sS : T_ * sS, axis == kAxisTime ? sS : N * sL,
                         axis == kAxisTime ? N * sL : sS, sL, sH};
  std::memcpy(g.src_strides, gt, sizeof(gt));
  g.dst = back.d;
  g.B = B; g.V = V; g.T = T_; g.N = N; g.H = H; g.hd = hd;
  CK(grid_gather_launch(dt, g, 0));
  CK(cudaDeviceSynchronize());
  const auto q_out = packed0.download(), k_out = packed1.download(), v_back = back.download();
  std::vector<float> refq, refk, refv;
  std::vector<size_t> idx, idxv;
  for (int b = 0; b < B; ++b)
    for (int v = 0; v < V; ++v)
      for (int t = 0; t < T_; ++t)
        for (int n = 0; n < N; ++n)
          for (int h = 0; h < H; ++h) {
            const size_t tok = ((static_cast<size_t>(b) * V + v) * T_ + t) * N + n;
            const size_t seq_tok = axis == kAxisTime ? tok : ((static_cast<size_t>(b) * T_ + t) * V + v) * N + n;
            const int f = axis == kAxisTime ? t : v;
            for (int i = 0; i < hd / 2; ++i) {
              const float c = cosb.f[(static_cast<size_t>(f) * N + n) * hd / 2 + i];
              const float s = sinb.f[(static_cast<size_t>(f) * N + n) * hd / 2 + i];
              for (int w = 0; w < 2; ++w) {
                const float a = qkv.f[tok * 3 * per + w * per + h * hd + 2 * i];
                const float bb = qkv.f[tok * 3 * per + w * per + h * hd + 2 * i + 1];
                auto& ref = w == 0 ? refq : refk;
                ref.push_back(a * c - bb * s);
                ref.push_back(a * s + bb * c);
              }
              for (int e = 0; e < 2; ++e) {
                idx.push_back(seq_tok * per + h * hd + 2 * i + e);
                refv.push_back(qkv.f[tok * 3 * per + 2 * per + h * hd + 2 * i + e]);
                idxv.push_back(tok * per + h * hd + 2 * i + e);
              }
            }
          }
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%s q", name);
  expect_close(buf, q_out, refq, idx, out_rtol<T>(), 1e-5f);
  std::snprintf(buf, sizeof(buf), "%s k", name);
  expect_close(buf, k_out, refk, idx, out_rtol<T>(), 1e-5f);
  std::snprintf(buf, sizeof(buf), "%s v packed+gathered", name);
  expect_close(buf, v_back, refv, idxv, 0.f, 0.f);  // a pure copy: exact

  // FP8: the same pack as e4m3 scaled by each tensor's amax (q, k: largest pair norm; v: largest |v|), then v's
  // gather back with its descale; e4m3 keeps 3 mantissa bits (half an ulp: 1/16 relative), subnormals are spaced
  // 2^-9 of the scale
  uint8_t* p8[3];
  float* scal;
  for (auto& d : p8) {
    CK(cudaMalloc(&d, tokens * per));
    CK(cudaMemset(d, 0x7f, tokens * per));  // NaN in e4m3
  }
  CK(cudaMalloc(&scal, kFp8AttentionScalars * sizeof(float)));
  CK(cudaMemset(scal, 0xff, kFp8AttentionScalars * sizeof(float)));
  for (int w = 0; w < 3; ++w) p.dst[w] = p8[w];
  CK(rope_pack_fp8_launch(dt, p, scal, 0));
  back.poison();
  g.src = p8[2];
  CK(grid_gather_fp8_launch(dt, g, scal + kDescaleV, 0));  // v packed at its own scale
  CK(cudaDeviceSynchronize());
  std::vector<float> sc(kFp8AttentionScalars);
  CK(cudaMemcpy(sc.data(), scal, sc.size() * sizeof(float), cudaMemcpyDeviceToHost));
  float amax[3] = {0.f, 0.f, 0.f};
  for (size_t i = 0; i + 1 < refq.size(); i += 2) {
    amax[0] = std::fmax(amax[0], std::sqrt(refq[i] * refq[i] + refq[i + 1] * refq[i + 1]));
    amax[1] = std::fmax(amax[1], std::sqrt(refk[i] * refk[i] + refk[i + 1] * refk[i + 1]));
  }
  for (float x : refv) amax[2] = std::fmax(amax[2], std::fabs(x));
  bool ok = true;
  for (int w = 0; w < 3; ++w) {
    ok = ok && std::fabs(sc[kAmaxQ + w] - amax[w]) <= 1e-5f * amax[w] + 1e-6f;
    ok = ok && std::fabs(sc[kDescaleQ + w] - sc[kAmaxQ + w] / kFp8E4m3Max) <= 1e-6f * sc[kDescaleQ + w];
  }
  ok = ok && sc[kDescaleS] == 1.f / kFp8E4m3Max && sc[kScaleS] == kFp8E4m3Max &&
       std::fabs(sc[kScaleO] * sc[kDescaleO] - 1.f) < 1e-6f &&
       std::fabs(sc[kDescaleO] - amax[2] * kOutputHeadroom / kFp8E4m3Max) <= 1e-5f * sc[kDescaleO];
  std::printf("%-52s %s  amax q %.4f (ref %.4f), k %.4f (ref %.4f), v %.4f (ref %.4f)\n", (std::string(name) + " fp8 scalars").c_str(),
              ok ? "ok  " : "FAIL", sc[kAmaxQ], amax[0], sc[kAmaxK], amax[1], sc[kAmaxV], amax[2]);
  failures += !ok;
  for (int w = 0; w < 3; ++w) {
    std::vector<uint8_t> raw(tokens * per);
    CK(cudaMemcpy(raw.data(), p8[w], raw.size(), cudaMemcpyDeviceToHost));
    std::vector<float> deq(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      __nv_fp8_e4m3 e;
      e.__x = raw[i];
      deq[i] = static_cast<float>(e) * sc[kDescaleQ + w];
    }
    const auto& ref = w == 0 ? refq : w == 1 ? refk : refv;
    std::snprintf(buf, sizeof(buf), "%s fp8 %c packed", name, "qkv"[w]);
    expect_close(buf, deq, ref, idx, 1.f / 16 + 1e-5f, std::ldexp(sc[kDescaleQ + w], -10));
  }
  std::snprintf(buf, sizeof(buf), "%s fp8 v gathered", name);
  expect_close(buf, back.download(), refv, idxv, 1.f / 16 + 1e-5f, std::ldexp(sc[kDescaleV], -10));
  for (auto d : p8) cudaFree(d);
  cudaFree(scal);
}

// --- hard sync's weight modulation -------------------------------------------------------------------------------
template <typename T>
static void test_modulate_columns(int B, int rows, int cols, const char* name) {
  Buf<T> w(randn(static_cast<size_t>(rows) * cols));
  Buf<float> m(randn(static_cast<size_t>(B) * cols, 0.3f));
  Buf<T> out(static_cast<size_t>(B) * rows * cols);
  out.poison();
  CK(modulate_columns_launch(sizeof(T) == 2 ? DType::kBFloat16 : DType::kFloat32, w.d, m.d, out.d, B, rows, cols, 0));
  CK(cudaDeviceSynchronize());
  const auto o = out.download();
  std::vector<float> ref;
  std::vector<size_t> idx;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < rows; ++i)
      for (int j = 0; j < cols; ++j) {
        ref.push_back(w.f[static_cast<size_t>(i) * cols + j] * (1 + m.f[static_cast<size_t>(b) * cols + j]));
        idx.push_back((static_cast<size_t>(b) * rows + i) * cols + j);
      }
  expect_close(name, o, ref, idx, out_rtol<T>(), 1e-6f);
}

// --- a gated residual's gate folded into the weight rows ------------------------------------------------------------
template <typename T>
static void test_scale_rows(int B, int rows, int cols, const char* name) {
  Buf<T> w(randn(static_cast<size_t>(rows) * cols));
  Buf<float> g(randn(static_cast<size_t>(B) * rows, 0.5f));
  Buf<T> bias(randn(static_cast<size_t>(rows)));
  Buf<T> out(static_cast<size_t>(B) * rows * cols), bias_out(static_cast<size_t>(B) * rows);
  out.poison();
  bias_out.poison();
  CK(scale_rows_launch(sizeof(T) == 2 ? DType::kBFloat16 : DType::kFloat32, w.d, g.d, out.d, B, rows, cols, bias.d,
                       bias_out.d, 0));
  CK(cudaDeviceSynchronize());
  const auto o = out.download(), ob = bias_out.download();
  std::vector<float> ref, ref_b;
  std::vector<size_t> idx, idx_b;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < rows; ++i) {
      const float gi = g.f[static_cast<size_t>(b) * rows + i];
      for (int j = 0; j < cols; ++j) {
        ref.push_back(w.f[static_cast<size_t>(i) * cols + j] * gi);
        idx.push_back((static_cast<size_t>(b) * rows + i) * cols + j);
      }
      ref_b.push_back(bias.f[i] * gi);
      idx_b.push_back(static_cast<size_t>(b) * rows + i);
    }
  expect_close(name, o, ref, idx, out_rtol<T>(), 1e-6f);
  expect_close(name, ob, ref_b, idx_b, out_rtol<T>(), 1e-6f);
}

// --- row-wise fp8 quantization -------------------------------------------------------------------------------------
template <typename T>
static void test_quantize(int rows, int K, int pitch, bool gelu, const char* name) {
  Buf<T> x(randn(static_cast<size_t>(rows) * pitch, 2.f));
  uint8_t* q;
  float* s;
  CK(cudaMalloc(&q, static_cast<size_t>(rows) * K));
  CK(cudaMalloc(&s, rows * sizeof(float)));
  CK(cudaMemset(s, 0xff, rows * sizeof(float)));
  CK(quantize_fp8_rowwise_launch(sizeof(T) == 2 ? DType::kBFloat16 : DType::kFloat32, x.d, pitch, rows, K, gelu, q, s, 0));
  CK(cudaDeviceSynchronize());
  std::vector<uint8_t> hq(static_cast<size_t>(rows) * K);
  std::vector<float> hs(rows);
  CK(cudaMemcpy(hq.data(), q, hq.size(), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(hs.data(), s, rows * sizeof(float), cudaMemcpyDeviceToHost));
  cudaFree(q);
  cudaFree(s);
  std::vector<float> deq(hq.size()), ref;
  std::vector<size_t> idx;
  double worst_scale = 0;
  float max_scale = 0;
  for (int r = 0; r < rows; ++r) {
    float amax = 0;
    std::vector<float> v(K);
    for (int j = 0; j < K; ++j) {
      float a = x.f[static_cast<size_t>(r) * pitch + j];
      if (gelu) a = 0.5f * a * (1.f + std::tanh(0.7978845608f * (a + 0.044715f * a * a * a)));
      v[j] = a;
      amax = std::fmax(amax, std::fabs(a));
    }
    worst_scale = std::fmax(worst_scale, std::fabs(hs[r] - amax / 448.f) / (amax / 448.f));
    max_scale = std::fmax(max_scale, hs[r]);
    for (int j = 0; j < K; ++j) {
      __nv_fp8_e4m3 e;
      e.__x = hq[static_cast<size_t>(r) * K + j];
      deq[static_cast<size_t>(r) * K + j] = static_cast<float>(e) * hs[r];
      ref.push_back(v[j]);
      idx.push_back(static_cast<size_t>(r) * K + j);
    }
  }
  // e4m3 keeps 3 mantissa bits: half an ulp is 1/16 relative; subnormals (|x| < 2^-6 scale) are spaced
  // 2^-9 scale apart, so they may be off by 2^-10 scale
  expect_close(name, deq, ref, idx, 1.f / 16 + 1e-3f, max_scale / 1024.f);
  if (worst_scale > 1e-3) {
    std::printf("    %s: scale off by %.3g relative\n", name, worst_scale);
    ++failures;
  }
}

int main() {
  const uint64_t seed = std::chrono::high_resolution_clock::now().time_since_epoch().count();
  rng.seed(seed);
  int dev;
  cudaDeviceProp prop;
  CK(cudaGetDevice(&dev));
  CK(cudaGetDeviceProperties(&prop, dev));
  std::printf("device %s (sm_%d%d), seed %llu\n", prop.name, prop.major, prop.minor, static_cast<unsigned long long>(seed));

  test_modln<__nv_bfloat16>(2, 37, 200, 200, "modln bf16 D=200");
  test_modln<__nv_bfloat16>(3, 11, 1024, 1032, "modln bf16 D=1024 strided rows");
  test_modln<__nv_bfloat16>(2, 9, 33, 35, "modln bf16 D=33 (scalar path)");
  test_modln<float>(2, 13, 192, 196, "modln fp32 D=192 strided rows");
  test_residual<__nv_bfloat16>(2, 5, 7, 192, "residual bf16, permuted y");
  test_residual<__nv_bfloat16>(1, 3, 9, 1024, "residual bf16 D=1024");
  test_residual<float>(2, 3, 5, 37, "residual fp32 D=37 (scalar path)");
  test_rope_pack<__nv_bfloat16>(2, 3, 5, 7, 2, 32, kAxisTime, "rope_pack bf16 time hd=32");
  test_rope_pack<__nv_bfloat16>(1, 4, 3, 9, 3, 64, kAxisView, "rope_pack bf16 view hd=64");
  test_rope_pack<__nv_bfloat16>(2, 3, 2, 5, 2, 6, kAxisView, "rope_pack bf16 view hd=6 (pairs)");
  test_rope_pack<float>(1, 2, 3, 11, 2, 128, kAxisView, "rope_pack fp32 view hd=128");
  test_modulate_columns<__nv_bfloat16>(2, 24, 48, "modulate_columns bf16");
  test_modulate_columns<float>(3, 7, 10, "modulate_columns fp32 cols=10");
  test_scale_rows<__nv_bfloat16>(2, 24, 72, "scale_rows bf16");
  test_scale_rows<float>(3, 7, 10, "scale_rows fp32 cols=10 (scalar path)");
  test_quantize<__nv_bfloat16>(37, 1024, 1024, false, "quantize_fp8 bf16 K=1024");
  test_quantize<__nv_bfloat16>(19, 4096, 4104, true, "quantize_fp8 bf16 gelu K=4096 strided");
  test_quantize<float>(7, 33, 40, false, "quantize_fp8 fp32 K=33 (scalar path)");

  std::printf("%s: %d failing case(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
