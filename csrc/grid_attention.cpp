// fourreal_C::grid_attention and fourreal_C::rope_pack: checks, allocation, the RoPE + pack kernel, the attention
// core on packed sequences, the gather back to the grid layout. Twin: twins.grid_attention.
// fourreal_C::rope_pack_fp8 and fourreal_C::grid_gather_fp8: the two halves around cuDNN's FP8 attention, which
// fourreal_rt/ops/attention_fp8.py calls between them. Twin: twins.grid_attention_fp8.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "grid_attention.h"
#include "torch_utils.h"

namespace fourreal {

namespace {

// Attention cores (the `backend` argument). Measured in benchmarks/bench_kernels.py; cuDNN is the default.
enum Backend : int64_t { kCudnn = 0, kFlash = 1, kSdpaDefault = 2, kEfficient = 3 };

// cuDNN's fused attention (aten::_scaled_dot_product_cudnn_attention), looked up through the dispatcher so that a
// signature change in another torch release degrades to PyTorch's own SDPA choice at run time instead of failing
// the build. q, k, v: [S, H, L, hd] (any strides). Returns an undefined tensor if cuDNN declines.
at::Tensor cudnn_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  using Sig = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, c10::SymInt, c10::SymInt, at::Tensor, at::Tensor,
                         at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const std::optional<at::Tensor>&, bool, double, bool, bool, std::optional<double>);
  try {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("aten::_scaled_dot_product_cudnn_attention", "")
                               .typed<Sig>();
    return std::get<0>(op.call(q, k, v, std::nullopt, false, 0.0, false, false, std::nullopt));
  } catch (const c10::OutOfMemoryError&) {
    throw;  // out of memory is the caller's to see, not a reason to try another core
  } catch (const c10::Error& e) {
    TORCH_WARN_ONCE("fourreal grid_attention: cuDNN attention unavailable, using PyTorch's SDPA choice: ",
                    e.what_without_backtrace());
    return at::Tensor();
  }
}

void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.is_cuda() && q.dim() == 6, "grid_attention: q must be a CUDA tensor [B, V, T, N, H, hd]");
  TORCH_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes(), "grid_attention: q, k, v shapes differ");
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), "grid_attention: dtypes differ");
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(), "grid_attention: devices differ");
  TORCH_CHECK(q.size(5) % 2 == 0, "grid_attention: head_dim must be even for RoPE");
}

// Packs q, k (rotated) and v into out[0..2]: [S, L, H, hd] contiguous each; in q's dtype, or as e4m3 scaled by
// the amax of each tensor when scalars (fp32 [kFp8AttentionScalars]) is given.
void rope_pack_into(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos_in,
                    const at::Tensor& sin_in, int64_t axis, const at::Tensor* out, float* scalars = nullptr) {
  const int64_t B = q.size(0), V = q.size(1), T = q.size(2), N = q.size(3), hd = q.size(5);
  const int64_t F = axis == kAxisTime ? T : V;
  TORCH_CHECK(axis == kAxisTime || axis == kAxisView, "grid_attention: axis must be 0 (time) or 1 (view)");
  TORCH_CHECK(cos_in.dim() == 3 && cos_in.size(0) == F && cos_in.size(1) == N && cos_in.size(2) == hd / 2,
              "grid_attention: cos must be [F, N, hd/2] with F = ", F, ", got ", cos_in.sizes());
  TORCH_CHECK(sin_in.sizes() == cos_in.sizes(), "grid_attention: sin must match cos");
  const at::Tensor cos = cos_in.to(q.device(), at::kFloat).contiguous();  // [F, N, hd/2]
  const at::Tensor sin = sin_in.to(q.device(), at::kFloat).contiguous();
  // the kernel moves at least one (even, odd) channel pair per access: strides and base must keep pairs aligned
  auto pair_ready = [](const at::Tensor& t) {
    const at::Tensor u = last_dim_contiguous(t);
    bool ok = fourreal::ptr_aligned(u.data_ptr(), 2 * u.element_size());
    for (int d = 0; d < 5; ++d) ok = ok && (u.size(d) == 1 || u.stride(d) % 2 == 0);
    return ok ? u : u.contiguous();
  };
  const at::Tensor src[3] = {pair_ready(q), pair_ready(k), pair_ready(v)};
  RopePackParams p{};
  for (int w = 0; w < 3; ++w) {
    TORCH_CHECK(out[w].is_contiguous() && out[w].numel() == q.numel() &&
                    out[w].scalar_type() == (scalars ? at::kFloat8_e4m3fn : q.scalar_type()),
                "rope_pack: outputs must be contiguous, of q's size and of q's dtype (float8_e4m3fn for rope_pack_fp8)");
    p.src[w] = src[w].data_ptr();
    for (int d = 0; d < 5; ++d) p.src_strides[w][d] = src[w].stride(d);
    p.dst[w] = out[w].data_ptr();
  }
  p.cos = cos.data_ptr<float>();
  p.sin = sin.data_ptr<float>();
  p.B = B; p.V = V; p.T = T; p.N = N; p.H = q.size(4); p.hd = hd;
  p.axis = static_cast<int>(axis);
  p.nrot = 2;
  p.ntensors = 3;
  FOURREAL_CUDA_CHECK(scalars ? rope_pack_fp8_launch(kernel_dtype(q), p, scalars, current_stream())
                              : rope_pack_launch(kernel_dtype(q), p, current_stream()));
}

// Gather of an attention output on packed sequences o_seq: [S, L, H, hd] (any strides, hd contiguous) back to
// the grid layout [B, V, T, N, H, hd].
GridGatherParams gather_params(const at::Tensor& o_seq, int64_t axis, const at::Tensor& out) {
  GridGatherParams g{};
  TORCH_CHECK(o_seq.stride(3) == 1, "grid_attention: attention output has a strided head dim");
  TORCH_CHECK(out.is_contiguous() && out.dim() == 6 && out.numel() == o_seq.numel(),
              "grid_attention: output must be contiguous [B, V, T, N, H, hd]");
  const int64_t V = out.size(1), T = out.size(2), N = out.size(3);
  const int64_t sS = o_seq.stride(0), sL = o_seq.stride(1), sH = o_seq.stride(2);
  if (axis == kAxisTime) {  // S = b * V + v, L = t * N + n
    const int64_t st[5] = {V * sS, sS, N * sL, sL, sH};
    std::copy(st, st + 5, g.src_strides);
  } else {                  // S = b * T + t, L = v * N + n
    const int64_t st[5] = {T * sS, N * sL, sS, sL, sH};
    std::copy(st, st + 5, g.src_strides);
  }
  g.src = o_seq.data_ptr();
  g.dst = out.data_ptr();
  g.B = out.size(0); g.V = V; g.T = T; g.N = N; g.H = out.size(4); g.hd = out.size(5);
  return g;
}

}  // namespace

// q, k, v: [B, V, T, N, H, hd]; cos, sin: [F, N, hd/2]; writes q_out, k_out, v_out: [S, L, H, hd] (the sequences
// of `axis` packed, q and k rotated).
void rope_pack(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
               const at::Tensor& sin, int64_t axis, at::Tensor& q_out, at::Tensor& k_out, at::Tensor& v_out) {
  check_qkv(q, k, v);
  const c10::cuda::CUDAGuard guard(q.device());
  const at::Tensor outs[3] = {q_out, k_out, v_out};
  rope_pack_into(q, k, v, cos, sin, axis, outs);
}

// q, k, v: [B, V, T, N, H, hd] (any strides, hd contiguous: the model passes views into its qkv projection).
// Returns the attention output [B, V, T, N, H, hd], contiguous.
at::Tensor grid_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                          const at::Tensor& sin, int64_t axis, int64_t backend) {
  check_qkv(q, k, v);
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t B = q.size(0), V = q.size(1), T = q.size(2), N = q.size(3), H = q.size(4), hd = q.size(5);
  const int64_t S = B * (axis == kAxisTime ? V : T), L = N * (axis == kAxisTime ? T : V);
  at::Tensor packed[3];
  for (auto& t : packed) t = at::empty({S, L, H, hd}, q.options());  // [S, L, H, hd]
  rope_pack_into(q, k, v, cos, sin, axis, packed);
  const at::Tensor qs = packed[0].transpose(1, 2), ks = packed[1].transpose(1, 2), vs = packed[2].transpose(1, 2);  // [S, H, L, hd]

  at::Tensor o;  // [S, H, L, hd]
  const bool half = q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf;
  if (!half) backend = kSdpaDefault;                       // cuDNN and flash take 16-bit inputs only
  if (backend == kFlash && hd % 8 != 0) backend = kSdpaDefault;  // flash takes head_dim % 8 == 0; SDPA's own choice pads
  if (backend == kCudnn) {
    o = cudnn_attention(qs, ks, vs);  // undefined if cuDNN declines: PyTorch's own choice below
  } else if (backend == kFlash || backend == kEfficient) {
    try {
      o = backend == kFlash
              ? std::get<0>(at::_scaled_dot_product_flash_attention(qs, ks, vs, 0.0, false, false, std::nullopt))
              : std::get<0>(at::_scaled_dot_product_efficient_attention(qs, ks, vs, std::nullopt, false, 0.0, false,
                                                                         std::nullopt));
    } catch (const c10::OutOfMemoryError&) {
      throw;  // out of memory is the caller's to see, not a reason to try another core
    } catch (const c10::Error& e) {  // a limit other than the one checked above (head_dim > 256, alignment, GPU)
      TORCH_WARN_ONCE("fourreal grid_attention: attention core ", backend, " declined (", e.what_without_backtrace(),
                      "), using PyTorch's SDPA choice");
      o = at::Tensor();
    }
  }
  if (!o.defined()) o = at::scaled_dot_product_attention(qs, ks, vs);

  // time: sequence (b, v) over (t, n), so [S, L, H, hd] is already the grid layout when o is stored that way
  const at::Tensor o_seq = o.transpose(1, 2);  // [S, L, H, hd]
  if (axis == kAxisTime && o_seq.is_contiguous()) return o_seq.view({B, V, T, N, H, hd});
  at::Tensor out = at::empty({B, V, T, N, H, hd}, q.options());
  FOURREAL_CUDA_CHECK(grid_gather_launch(kernel_dtype(q), gather_params(o_seq, axis, out), current_stream()));
  return out;
}

// As rope_pack, with e4m3 outputs [S, L, H, hd] scaled per tensor for cuDNN's FP8 attention; writes scalars
// (fp32 [kFp8AttentionScalars]: descale q, k, v, descale s, scale s, scale o, descale o, then the three amax values).
void rope_pack_fp8(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& cos,
                   const at::Tensor& sin, int64_t axis, at::Tensor& q_out, at::Tensor& k_out, at::Tensor& v_out,
                   at::Tensor& scalars) {
  check_qkv(q, k, v);
  TORCH_CHECK(scalars.is_cuda() && scalars.scalar_type() == at::kFloat && scalars.is_contiguous() &&
                  scalars.numel() == kFp8AttentionScalars && scalars.device() == q.device(),
              "rope_pack_fp8: scalars must be a contiguous fp32 CUDA tensor of ", int(kFp8AttentionScalars));
  const c10::cuda::CUDAGuard guard(q.device());
  const at::Tensor outs[3] = {q_out, k_out, v_out};
  rope_pack_into(q, k, v, cos, sin, axis, outs, scalars.data_ptr<float>());
}

// o8: the e4m3 attention output on the packed sequences of `axis`, [S, L, H, hd] (any strides, hd contiguous);
// scale: fp32 device scalar (o ≈ o8 * scale); writes out: [B, V, T, N, H, hd] contiguous bf16 or fp32.
void grid_gather_fp8(const at::Tensor& o8, const at::Tensor& scale, int64_t axis, at::Tensor& out) {
  TORCH_CHECK(o8.is_cuda() && o8.dim() == 4 && o8.scalar_type() == at::kFloat8_e4m3fn,
              "grid_gather_fp8: o8 must be a float8_e4m3fn CUDA tensor [S, L, H, hd]");
  TORCH_CHECK(axis == kAxisTime || axis == kAxisView, "grid_gather_fp8: axis must be 0 (time) or 1 (view)");
  TORCH_CHECK(scale.is_cuda() && scale.scalar_type() == at::kFloat && scale.numel() == 1 && scale.device() == o8.device(),
              "grid_gather_fp8: scale must be one fp32 value on o8's device");
  TORCH_CHECK(out.device() == o8.device() && out.dim() == 6 && out.size(4) == o8.size(2) && out.size(5) == o8.size(3) &&
                  out.size(0) * (axis == kAxisTime ? out.size(1) : out.size(2)) == o8.size(0),
              "grid_gather_fp8: out [B, V, T, N, H, hd] does not match o8 ", o8.sizes());
  const c10::cuda::CUDAGuard guard(o8.device());
  FOURREAL_CUDA_CHECK(grid_gather_fp8_launch(kernel_dtype(out), gather_params(o8, axis, out), scale.data_ptr<float>(),
                                             current_stream()));
}

TORCH_LIBRARY_IMPL(fourreal_C, CUDA, m) {
  m.impl("rope_pack", &rope_pack);
  m.impl("grid_attention", &grid_attention);
  m.impl("rope_pack_fp8", &rope_pack_fp8);
  m.impl("grid_gather_fp8", &grid_gather_fp8);
}

}  // namespace fourreal
