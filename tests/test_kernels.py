"""The grid ops: twins against straightforward fp64 references (CPU), our CUDA kernels against the twins' fp64
reference with PyTorch's own bf16 error as the yardstick (GPU), and `torch.library.opcheck` on both.

GPU tests (marker `gpu`) skip without CUDA or without the compiled extension. Every test draws fresh random
inputs (the seed is in the failure message); sizes are odd or non-powers of two; inputs are strided.
"""
from __future__ import annotations

import math
import secrets

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fourreal_rt import ops
from fourreal_rt.ops import backend, custom, fp8, fused, twins  # noqa: F401  (custom registers fourreal::)

torch.set_grad_enabled(False)

HAS_GPU = torch.cuda.is_available() and backend.load() is not None


def rng(device="cpu"):
    seed = secrets.randbits(48)
    return torch.Generator(device).manual_seed(seed), seed


def randn(g, *shape, device="cpu", dtype=torch.float32, scale=1.0, shift=0.0):
    return (torch.randn(*shape, generator=g, device=device, dtype=torch.float64) * scale + shift).to(dtype)


def strided(x: torch.Tensor, pad: int = 8) -> torch.Tensor:
    """The same values as x [..., D], stored with a padded row pitch (a non-contiguous view)."""
    big = torch.zeros(*x.shape[:-1], x.shape[-1] + pad, dtype=x.dtype, device=x.device)
    big[..., :x.shape[-1]] = x
    return big[..., :x.shape[-1]]


def qkv_views(g, B, V, T, N, H, hd, device="cpu", dtype=torch.float32):
    """q, k, v: [B, V, T, N, H, hd] views into one [B, V, T, N, 3, H, hd] buffer, as the model's qkv linear gives."""
    qkv = randn(g, B, V, T, N, 3, H, hd, device=device, dtype=dtype)
    return qkv.unbind(4)


# --------------------------------------------------------------------------------------------------------------
# fp64 references, written out plainly
# --------------------------------------------------------------------------------------------------------------

def ref_modulated_layernorm(x, shift, scale, eps=1e-6):
    x = x.double()                                                        # [B, ..., D]
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    bshape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    return (x - mean) / torch.sqrt(var + eps) * (1 + scale.double().view(bshape)) + shift.double().view(bshape)


def ref_rotate(x, c, s):
    """x: [..., hd]; c, s: broadcast to [..., hd/2]; rotates channel pairs (2i, 2i+1)."""
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def ref_grid_attention(q, k, v, cos, sin, axis):
    """Loops over the sequences of `axis` explicitly. q, k, v: [B, V, T, N, H, hd]; cos, sin: [F, N, hd/2]."""
    q, k, v, cos, sin = (t.double() for t in (q, k, v, cos, sin))
    B, V, T, N, H, hd = q.shape
    out = torch.empty_like(q)
    c, s = cos[:, :, None, :], sin[:, :, None, :]                         # [F, N, 1, hd/2]
    for b in range(B):
        for i in range(V if axis == "time" else T):
            sel = (b, i) if axis == "time" else (b, slice(None), i)       # time: row (b, v); view: column (b, t)
            qs, ks, vs = q[sel], k[sel], v[sel]                           # [F, N, H, hd]
            F_ = qs.shape[0]
            qq = ref_rotate(qs, c, s).reshape(F_ * N, H, hd)
            kk = ref_rotate(ks, c, s).reshape(F_ * N, H, hd)
            att = torch.einsum("lhd,mhd->hlm", qq, kk) / math.sqrt(hd)
            o = torch.einsum("hlm,mhd->lhd", att.softmax(-1), vs.reshape(F_ * N, H, hd))
            out[sel] = o.reshape(F_, N, H, hd)
    return out


def ref_soft_sync(y_v, y_t, mod, weight, bias, eps=1e-6):
    sh_v, sc_v, sh_t, sc_t = mod.double().chunk(4, -1)
    z = torch.cat([ref_modulated_layernorm(y_v, sh_v, sc_v, eps), ref_modulated_layernorm(y_t, sh_t, sc_t, eps)], -1)
    d = z @ weight.double().t() + bias.double()
    D = y_v.shape[-1]
    return y_v.double() + d[..., :D], y_t.double() + d[..., D:]


def ref_hard_sync(y_v, y_t, mod, weight, bias):
    D = y_v.shape[-1]
    bshape = (y_v.shape[0],) + (1,) * (y_v.dim() - 2) + (D,)
    s_v, s_t = mod.double()[:, :D].view(bshape), mod.double()[:, D:].view(bshape)
    w = weight.double()
    return (y_v.double() * (1 + s_v)) @ w[:, :D].t() + (y_t.double() * (1 + s_t)) @ w[:, D:].t() + bias.double()


def maxerr(a, ref):
    return (a.double() - ref).abs().max().item()


# --------------------------------------------------------------------------------------------------------------
# CPU: the twins against the references
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 5, 7, 33), (1, 1, 4, 9, 192), (3, 2, 1, 11, 200)])
def test_modulated_layernorm_twin(shape):
    g, seed = rng()
    x = strided(randn(g, *shape, scale=2.0, shift=0.5))                   # [B, V, T, N, D], padded rows
    shift, scale = randn(g, shape[0], shape[-1]), randn(g, shape[0], shape[-1], scale=0.5)
    out = twins.modulated_layernorm(x, shift, scale)
    assert maxerr(out, ref_modulated_layernorm(x, shift, scale)) < 1e-5, seed


@pytest.mark.parametrize("shape", [(2, 3, 5, 7, 33), (1, 4, 4, 9, 192)])
def test_gated_residual_twin(shape):
    g, seed = rng()
    x, y = randn(g, *shape), strided(randn(g, *shape))
    gate = randn(g, shape[0], shape[-1])
    bshape = (shape[0], 1, 1, 1, shape[-1])
    ref = x.double() + gate.double().view(bshape) * y.double()
    assert maxerr(twins.gated_residual(x, y, gate), ref) < 1e-5, seed


def test_rope_tables_rotate_by_position_differences():
    """<R(m) q, R(n) k> depends on positions only through m - n, on each axis (frame, h, w)."""
    g, seed = rng()
    hd, hp, wp = 24, 3, 5
    cos, sin = twins.rope_tables(7, hp, wp, hd, 100.0, dtype=torch.float64)   # [F, N, hd/2]
    q, k = randn(g, hd, dtype=torch.float64), randn(g, hd, dtype=torch.float64)

    def dot(fq, nq, fk, nk):
        return (ref_rotate(q, cos[fq, nq], sin[fq, nq]) * ref_rotate(k, cos[fk, nk], sin[fk, nk])).sum()

    torch.testing.assert_close(dot(3, 0, 1, 0), dot(5, 0, 3, 0), msg=str(seed))          # frame shift
    torch.testing.assert_close(dot(0, 1 * wp + 2, 0, 0 * wp + 1), dot(0, 2 * wp + 3, 0, 1 * wp + 2), msg=str(seed))
    assert not torch.allclose(dot(3, 0, 1, 0), dot(3, 0, 2, 0))
    assert sum(twins.rope_split(hd)) == hd and all(d % 2 == 0 for d in twins.rope_split(hd))


@pytest.mark.parametrize("axis", twins.AXES)
@pytest.mark.parametrize("dims", [(2, 3, 2, 5, 2, 8), (1, 2, 3, 7, 3, 12)])
def test_grid_attention_twin(axis, dims):
    g, seed = rng()
    B, V, T, N, H, hd = dims
    q, k, v = qkv_views(g, *dims, dtype=torch.float64)                      # strided views
    hp, wp = 1, N
    cos, sin = twins.rope_tables(T if axis == "time" else V, hp, wp, hd, 100.0, dtype=torch.float64)
    out = twins.grid_attention(q, k, v, cos, sin, axis)
    # 1e-6: the twin's apply_rope rotates in fp32 even for fp64 inputs
    assert maxerr(out, ref_grid_attention(q, k, v, cos, sin, axis)) < 1e-6, seed


def test_grid_attention_axes_differ():
    g, _ = rng()
    q, k, v = qkv_views(g, 1, 3, 3, 4, 1, 8, dtype=torch.float64)
    cos, sin = twins.rope_tables(3, 2, 2, 8, 100.0, dtype=torch.float64)
    assert not torch.allclose(twins.grid_attention(q, k, v, cos, sin, "time"),
                              twins.grid_attention(q, k, v, cos, sin, "view"))


@pytest.mark.parametrize("axis", twins.AXES)
def test_grid_attention_fp8_twin(axis):
    """The e4m3 twin: within e4m3's rounding of the fp64 attention, and its scales are per tensor from the amax
    (so power-of-two rescalings of q, k, v pass through exactly, which a fixed scale would not)."""
    g, seed = rng()
    q, k, v = qkv_views(g, 2, 3, 4, 6, 2, 16)
    cos, sin = twins.rope_tables(4 if axis == "time" else 3, 2, 3, 16, 100.0)
    ref = twins.grid_attention(q.double(), k.double(), v.double(), cos.double(), sin.double(), axis)
    out = twins.grid_attention_fp8(q, k, v, cos, sin, axis)
    rel = ((out.double() - ref).norm() / ref.norm()).item()
    assert 1e-3 < rel < 0.1, (rel, seed)                   # rounded (3 mantissa bits), but not off
    assert torch.equal(twins.grid_attention_fp8(q * 8, k / 8, v * 64, cos, sin, axis), out * 64), seed
    # the amax of q and k is that of their rotated channel pairs: a value past 448 / amax would saturate
    q2 = q.clone()
    q2[0, 0, 0, 0, 0, :2] = torch.tensor([30.0, 40.0])     # pair norm 50 dominates
    o2 = twins.grid_attention_fp8(q2, k, v, cos, sin, axis)
    assert torch.isfinite(o2).all(), seed


def test_modulated_layernorm_fp8_twin():
    """e4m3 rows with a scale each from the fp32 LayerNorm: within half an e4m3 ulp (1/16) of it, scale amax / 448."""
    g, seed = rng()
    x = strided(randn(g, 2, 3, 5, 40, scale=2.0, shift=0.5))
    sh, sc = randn(g, 2, 40), randn(g, 2, 40, scale=0.5)
    q, s = fp8.modulated_layernorm_fp8_twin(x, sh, sc)
    assert q.dtype == torch.float8_e4m3fn and q.shape == (30, 40) and s.shape == (30, 1)
    ref = ref_modulated_layernorm(x, sh, sc).reshape(30, 40)
    torch.testing.assert_close(s.double(), ref.abs().amax(-1, keepdim=True) / 448, rtol=1e-5, atol=0)
    err = (q.double() * s.double() - ref).abs()
    assert (err <= ref.abs() / 16 + s.double() / 1024 + 1e-7).all(), seed


def test_fp8_block_takes_quantized_rows():
    """An FP8 block's LayerNorm outputs go to its qkv and fc1 as e4m3 rows; in fp32 that is exactly the FP8 linears
    quantizing the LayerNorm's output themselves (in bf16 it skips one bf16 rounding)."""
    from fourreal_rt.model import PRESETS, TwoStreamModel
    from fourreal_rt.model import blocks
    torch.manual_seed(0)
    model = TwoStreamModel(PRESETS["tiny"])
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    fp8.convert_to_fp8(model, attention=False)
    calls = []
    orig = ops.modulated_layernorm_fp8
    ops.modulated_layernorm_fp8 = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        blk = model.base.blocks[0]
        x = torch.randn(1, 4, 4, 6, 32)
        c = torch.randn(1, 32)
        rope = model.base.rope(4, "cpu")
        out = blk(x, c, rope, "time")
    finally:
        ops.modulated_layernorm_fp8 = orig
    assert len(calls) == 2 and torch.isfinite(out).all()
    ref = blocks.block_residuals(x, blk.ada(F.silu(c)), lambda h, x, g: blk.attn(h, rope, "time", x, g),
                                 lambda h, x, g: fused.mlp(h, blk.fc1, blk.fc2, x, g), fp8_norm=False)
    assert torch.equal(out, ref)


def test_fp8_attention_plans_fall_back_to_building(monkeypatch):
    """What the background loader does with an engine's stored plans (cuDNN mocked: runs on the CPU): a plan for a
    wanted shape is deserialized; one cuDNN refuses, an unknown name, or a file that fails its check (the error
    load_engine itself reports) leave the shape to be built; a failed build is not kept."""
    from concurrent.futures import Future

    from fourreal_rt.ops import attention_fp8 as A

    def fake_build(device, S, H, L, hd, plan=None):
        if plan == b"bad":
            raise A.Unsupported("plan could not be loaded")
        return ("plan" if plan is not None else "built", S)
    monkeypatch.setattr(A, "_build", fake_build)
    dev = torch.device("cuda", 0)
    k1, k2 = (0, 2, 2, 48, 64), (0, 3, 2, 32, 64)

    def run(plans):
        futs = {k1: Future(), k2: Future()}
        A._prepare(futs, dev, lambda: plans)
        return {k: f.result() for k, f in futs.items()}
    assert run({"sdpa_fp8_2x2x48x64": b"x", "sdpa_fp8_3x2x32x64": b"y"}) == {k1: ("plan", 2), k2: ("plan", 3)}
    with pytest.warns(UserWarning) as caught:
        got = run({"sdpa_fp8_2x2x48x64": b"bad", "note": b"", "sdpa_fp8_3x2x32x64": b"y"})
    assert got == {k1: ("built", 2), k2: ("plan", 3)}
    said = " | ".join(str(w.message) for w in caught)
    assert "ignoring 'note'" in said and "stored plan not used" in said, said

    def damaged():
        raise RuntimeError("engine file attention_fp8_plans.safetensors is damaged")
    futs = {k1: Future()}
    with pytest.warns(UserWarning, match="stored plans not used"):
        A._prepare(futs, dev, damaged)
    assert futs[k1].result() == ("built", 2)
    # _graph: a failed build raises to its caller and is not kept
    monkeypatch.setattr(A, "_build", lambda *a, **k: (_ for _ in ()).throw(A.Unsupported("declined")))
    with pytest.raises(A.Unsupported):
        A._graph(dev, 5, 2, 8, 64)
    assert (0, 5, 2, 8, 64) not in A._building and (0, 5, 2, 8, 64) not in A._graphs


def test_fp8_conversion_turns_on_fp8_attention():
    from fourreal_rt.model import PRESETS, TwoStreamModel
    model = TwoStreamModel(PRESETS["tiny"])
    assert not any(b.attn.fp8_attention for b in model.base.blocks)
    fp8.convert_to_fp8(model)
    assert all(b.attn.fp8_attention for b in model.base.blocks)
    fp8.convert_to_fp8(model, attention=False)
    assert not any(b.attn.fp8_attention for b in model.base.blocks)


@pytest.mark.parametrize("D", [16, 33])
def test_sync_twins(D):
    g, seed = rng()
    shape = (2, 3, 2, 5, D)
    y_v, y_t = strided(randn(g, *shape)), randn(g, *shape)
    mod4, w2, b2 = randn(g, 2, 4 * D, scale=0.3), randn(g, 2 * D, 2 * D, scale=D ** -0.5), randn(g, 2 * D)
    x_v, x_t = twins.soft_sync(y_v, y_t, mod4, w2, b2)
    r_v, r_t = ref_soft_sync(y_v, y_t, mod4, w2, b2)
    assert maxerr(x_v, r_v) < 1e-4 and maxerr(x_t, r_t) < 1e-4, seed
    mod2, w1, b1 = randn(g, 2, 2 * D, scale=0.3), randn(g, D, 2 * D, scale=D ** -0.5), randn(g, D)
    assert maxerr(twins.hard_sync(y_v, y_t, mod2, w1, b1), ref_hard_sync(y_v, y_t, mod2, w1, b1)) < 1e-4, seed


def test_fp8_quantize_twin_error_bound():
    g, seed = rng()
    x = randn(g, 37, 200, scale=3.0)                                       # [M, K]
    for gelu in (False, True):
        q, s = fp8.quantize_rowwise_twin(x, gelu)
        ref = F.gelu(x.double(), approximate="tanh") if gelu else x.double()
        assert q.dtype == torch.float8_e4m3fn and s.shape == (37, 1)
        # e4m3: half an ulp is 1/16 relative for normals; subnormals sit 2^-9 * scale apart
        bound = ref.abs() / 16 + s.double() / 1024 + 1e-12
        assert ((q.double() * s.double() - ref).abs() <= bound).all(), seed
        torch.testing.assert_close(s.double().squeeze(1), ref.abs().amax(-1) / 448, rtol=1e-6, atol=0)


def test_fp8_linear_emulation_and_conversion():
    g, seed = rng()
    lin = nn.Linear(64, 48)
    with torch.no_grad():
        lin.weight.copy_(randn(g, 48, 64, scale=0.125))
    x = randn(g, 3, 5, 64)                                                 # [..., K]
    y8 = fp8.FP8Linear(lin)(x)
    ref = lin(x.double().float()).double()
    rel = ((y8.double() - ref).norm() / ref.norm()).item()
    assert y8.shape == (3, 5, 48) and rel < 0.05, (rel, seed)             # two e4m3 roundings: a few percent at most

    from fourreal_rt.model import PRESETS, TwoStreamModel
    model = TwoStreamModel(PRESETS["tiny"])
    assert fp8.convert_to_fp8(model) == 3 * PRESETS["tiny"].depth                 # qkv, fc1, fc2; proj stays bf16
    assert all(type(b.fc1) is fp8.FP8Linear and type(b.attn.qkv) is fp8.FP8Linear and type(b.attn.proj) is nn.Linear
               for b in model.base.blocks)
    assert fp8.convert_to_fp8(TwoStreamModel(PRESETS["tiny"]), fp8.ALL_TARGETS) == 4 * PRESETS["tiny"].depth


def test_fused_mlp_on_cpu_is_the_plain_expression():
    g, _ = rng()
    fc1, fc2 = nn.Linear(24, 96), nn.Linear(96, 24)
    h = randn(g, 2, 3, 24)
    want = fc2(F.gelu(fc1(h), approximate="tanh"))
    with ops.use_custom_ops():
        assert torch.equal(fused.mlp(h, fc1, fc2), want)
    assert torch.equal(fused.mlp(h, fc1, fc2), want)


def test_gated_linear_on_cpu_is_the_plain_expression():
    """The branch-plus-residual helpers are exactly `gated_residual(x, linear(a), gate)` off the CUDA fast path."""
    g, _ = rng()
    fc1, fc2, proj = nn.Linear(24, 96), nn.Linear(96, 24), nn.Linear(24, 24)
    h, x, gate = randn(g, 2, 3, 24), randn(g, 2, 3, 24), randn(g, 2, 24)
    want_mlp = twins.gated_residual(x, fc2(F.gelu(fc1(h), approximate="tanh")), gate)
    want_proj = twins.gated_residual(x, proj(h), gate)
    for on in (True, False):
        with ops.use_custom_ops(on):
            assert torch.equal(fused.mlp(h, fc1, fc2, x, gate), want_mlp)
            assert torch.equal(fused.gated_linear(x, h, proj, gate), want_proj)
            assert torch.equal(fused.linear_residual(x, h, proj.weight, proj.bias, gate), want_proj)


def test_backend_without_extension_is_quiet():
    st = backend.status()
    assert set(st) >= {"present", "error"}
    if not st["present"]:
        assert backend.register_cuda_kernels() is False


def op_cases(device, dtype):
    """(op, args) for every fourreal:: op, with awkward sizes and strided inputs."""
    g, _ = rng(device)
    B, V, T, N, H, hd = 2, 3, 2, 5, 2, 16
    D = H * hd
    kw = dict(device=device, dtype=dtype)
    x, y = strided(randn(g, B, V, T, N, D, **kw)), randn(g, B, V, T, N, D, **kw)
    m = randn(g, B, D, **kw)
    q, k, v = qkv_views(g, B, V, T, N, H, hd, **kw)
    cos_t, sin_t = twins.rope_tables(T, 1, N, hd, 100.0, device=device)
    cos_v, sin_v = twins.rope_tables(V, 1, N, hd, 100.0, device=device)
    return [
        (torch.ops.fourreal.modulated_layernorm, (x, m, m * 0.5, 1e-6)),
        (torch.ops.fourreal.gated_residual, (x, y, m)),
        (torch.ops.fourreal.grid_attention, (q, k, v, cos_t, sin_t, "time")),
        (torch.ops.fourreal.grid_attention, (q, k, v, cos_v, sin_v, "view")),
        (torch.ops.fourreal.grid_attention_fp8, (q, k, v, cos_t, sin_t, "time")),
        (torch.ops.fourreal.grid_attention_fp8, (q, k, v, cos_v, sin_v, "view")),
        (torch.ops.fourreal.modulated_layernorm_fp8, (x, m, m * 0.5, 1e-6)),
        (torch.ops.fourreal.soft_sync, (x, y, randn(g, B, 4 * D, **kw), randn(g, 2 * D, 2 * D, scale=0.1, **kw),
                                        randn(g, 2 * D, **kw), 1e-6)),
        (torch.ops.fourreal.hard_sync, (x, y, randn(g, B, 2 * D, **kw), randn(g, D, 2 * D, scale=0.1, **kw),
                                        randn(g, D, **kw))),
    ]


@pytest.mark.parametrize("i", range(9))
def test_opcheck_cpu(i):
    op, args = op_cases("cpu", torch.float32)[i]
    torch.library.opcheck(op, args)


# --------------------------------------------------------------------------------------------------------------
# GPU: our kernels. err(ours) <= 2 * err(PyTorch bf16) + atol, both against the fp64 reference.
# --------------------------------------------------------------------------------------------------------------

def check_bf16(ours, torch_bf16, ref, seed, atol):
    e_ours, e_torch = maxerr(ours, ref), maxerr(torch_bf16, ref)
    assert not torch.isnan(ours).any(), seed
    assert e_ours <= 2 * e_torch + atol, f"err(ours) {e_ours:.3g} > 2 * err(torch bf16) {e_torch:.3g} + {atol} (seed {seed})"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
@pytest.mark.parametrize("shape", [(2, 3, 5, 37, 1024), (1, 8, 8, 144, 192), (3, 2, 3, 11, 200), (2, 1, 3, 7, 33)])
@pytest.mark.parametrize("pad", [0, 8])
def test_gpu_modulated_layernorm(shape, pad):
    g, seed = rng("cuda")
    x = randn(g, *shape, device="cuda", scale=2.0, shift=0.5)
    x = strided(x, pad) if pad else x
    sh, sc = randn(g, shape[0], shape[-1], device="cuda"), randn(g, shape[0], shape[-1], device="cuda", scale=0.5)
    ref = ref_modulated_layernorm(x, sh, sc)
    xb, shb, scb = x.bfloat16(), sh.bfloat16(), sc.bfloat16()
    ours = torch.ops.fourreal.modulated_layernorm(xb, shb, scb, 1e-6)
    assert ours.is_contiguous() and ours.dtype == torch.bfloat16
    check_bf16(ours, twins.modulated_layernorm(xb, shb, scb), ref_modulated_layernorm(xb, shb, scb), seed, 1e-3)
    # fp32 path: fp32 arithmetic throughout, so the error is rounding-level
    assert maxerr(torch.ops.fourreal.modulated_layernorm(x, sh, sc, 1e-6), ref) < 1e-4, seed


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
@pytest.mark.parametrize("shape", [(2, 3, 5, 37, 1024), (1, 8, 8, 144, 192), (2, 1, 3, 7, 33)])
def test_gpu_gated_residual(shape):
    g, seed = rng("cuda")
    x, y = randn(g, *shape, device="cuda").bfloat16(), strided(randn(g, *shape, device="cuda").bfloat16())
    gate = randn(g, shape[0], shape[-1], device="cuda").bfloat16()
    bshape = (shape[0], 1, 1, 1, shape[-1])
    ref = x.double() + gate.double().view(bshape) * y.double()
    ours = torch.ops.fourreal.gated_residual(x, y, gate)
    check_bf16(ours, twins.gated_residual(x, y, gate), ref, seed, 1e-3)
    x32 = randn(g, *shape, device="cuda")
    assert maxerr(torch.ops.fourreal.gated_residual(x32, x32 * 2, gate.float()),
                  x32.double() * (1 + 2 * gate.double().view(bshape))) < 1e-4, seed


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
@pytest.mark.parametrize("B,R,N,K", [(1, 8 * 8 * 37, 1024, 1024), (2, 3 * 5 * 11, 192, 768), (3, 49, 200, 72)])
def test_gpu_linear_residual(B, R, N, K):
    """x + gate ⊙ (a W^T + b) in one cuBLASLt GEMM against the twin's bf16 error; strided x; then without gate and
    bias, and in fp32 (no TF32: rounding-level error)."""
    g, seed = rng("cuda")
    x, a = randn(g, B, R, N, device="cuda"), randn(g, B, R, K, device="cuda")
    w, b = randn(g, N, K, device="cuda", scale=K ** -0.5), randn(g, N, device="cuda")
    gate = randn(g, B, N, device="cuda", scale=0.5)
    ref = lambda x, a, w, b, gate: x.double() + gate.double()[:, None] * F.linear(a.double(), w.double(), b.double())  # noqa: E731
    C = torch.ops.fourreal_C.linear_residual
    xb, ab, wb, bb, gb = strided(x.bfloat16()), a.bfloat16(), w.bfloat16(), b.bfloat16(), gate.bfloat16()
    ours = C(xb, ab, wb, bb, gb)
    assert ours.shape == x.shape and ours.is_contiguous() and ours.dtype == torch.bfloat16
    check_bf16(ours, twins.gated_residual(xb, F.linear(ab, wb, bb), gb), ref(xb, ab, wb, bb, gb), seed, 2e-3)
    ones = torch.ones(B, N, device="cuda")
    zeros = torch.zeros(N, device="cuda")
    check_bf16(C(xb, ab, wb, None, None), xb + F.linear(ab, wb), ref(xb, ab, wb, zeros, ones), seed, 2e-3)
    assert maxerr(C(strided(x), a, w, b, gate), ref(x, a, w, b, gate)) < 1e-4, seed
    with ops.use_custom_ops():                                              # the model's route takes it
        torch.testing.assert_close(fused.linear_residual(xb, ab, wb, bb, gb), ours, rtol=0, atol=0)
    torch.library.opcheck(C, (xb, ab, wb, bb, gb))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
@pytest.mark.parametrize("attn_backend", ["cudnn", "flash", "sdpa"])
@pytest.mark.parametrize("axis", twins.AXES)
@pytest.mark.parametrize("dims,grid_hw", [((1, 3, 5, 37, 2, 64), (1, 37)), ((2, 4, 3, 24, 6, 32), (4, 6)),
                                          ((1, 8, 8, 144, 1, 128), (9, 16)), ((1, 2, 3, 10, 2, 6), (2, 5)),
                                          ((1, 2, 3, 10, 2, 48), (2, 5))])   # (48: one 16-byte chunk a thread)
def test_gpu_grid_attention(dims, grid_hw, axis, attn_backend):
    g, seed = rng("cuda")
    B, V, T, N, H, hd = dims
    q, k, v = qkv_views(g, *dims, device="cuda")                            # fp32 strided views
    cos, sin = twins.rope_tables(T if axis == "time" else V, *grid_hw, hd, 100.0, device="cuda")
    ref = twins.grid_attention(q.double(), k.double(), v.double(), cos.double(), sin.double(), axis)
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    ref_b = twins.grid_attention(qb.double(), kb.double(), vb.double(), cos.double(), sin.double(), axis)
    prev = backend.settings["attention_backend"]
    backend.settings["attention_backend"] = attn_backend
    try:
        ours = torch.ops.fourreal.grid_attention(qb, kb, vb, cos, sin, axis)
    finally:
        backend.settings["attention_backend"] = prev
    assert ours.shape == q.shape and ours.is_contiguous()
    # 1e-3: bf16 output rounding of values of order 0.1-1 (softmax averages of unit-variance v)
    check_bf16(ours, twins.grid_attention(qb, kb, vb, cos, sin, axis), ref_b, seed, 1e-3)
    assert maxerr(torch.ops.fourreal.grid_attention(q, k, v, cos, sin, axis), ref) < 1e-4, seed


def has_cudnn_frontend() -> bool:
    try:
        import cudnn  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
@pytest.mark.skipif(not has_cudnn_frontend(), reason="needs nvidia-cudnn-frontend (cuDNN's FP8 attention)")
@pytest.mark.parametrize("axis", twins.AXES)
@pytest.mark.parametrize("dims,grid_hw", [((1, 3, 5, 37, 2, 64), (1, 37)), ((2, 4, 3, 24, 3, 128), (4, 6)),
                                          ((1, 8, 8, 144, 1, 128), (9, 16))])
def test_gpu_grid_attention_fp8(dims, grid_hw, axis):
    """cuDNN's FP8 core between our e4m3 pack and gather: error against fp64 at most 2x the e4m3 twin's (which
    rounds q, k, v and the output as the kernels do, but not the softmax probabilities) + 2e-3; the scalars are the
    twin's amax; a CUDA graph replays it to the same output."""
    from fourreal_rt.ops import attention_fp8
    g, seed = rng("cuda")
    B, V, T, N, H, hd = dims
    q, k, v = (t.bfloat16() for t in qkv_views(g, *dims, device="cuda"))   # bf16 strided views
    cos, sin = twins.rope_tables(T if axis == "time" else V, *grid_hw, hd, 100.0, device="cuda")
    ref = twins.grid_attention(q.double(), k.double(), v.double(), cos.double(), sin.double(), axis)
    assert attention_fp8.why_not(q) is None
    ours = attention_fp8.grid_attention_fp8(q, k, v, cos, sin, axis)
    assert ours.shape == q.shape and ours.is_contiguous() and ours.dtype == torch.bfloat16
    assert not torch.isnan(ours).any(), seed
    e_ours, e_twin = maxerr(ours, ref), maxerr(twins.grid_attention_fp8(q, k, v, cos, sin, axis), ref)
    assert e_ours <= 2 * e_twin + 2e-3, f"err(ours) {e_ours:.3g} > 2 * err(e4m3 twin) {e_twin:.3g} (seed {seed})"
    # the op routes to it; the bf16 core is a different (more exact) result
    with ops.use_custom_ops():
        torch.testing.assert_close(ops.grid_attention_fp8(q, k, v, cos, sin, axis), ours, rtol=0, atol=0)
    assert maxerr(torch.ops.fourreal.grid_attention(q, k, v, cos, sin, axis), ref) < e_ours, seed
    # the scalars: amax of the rotated pairs of q, k and of |v|; cuDNN's scales from them
    S, L = (B * V, T * N) if axis == "time" else (B * T, V * N)
    packed = [torch.empty(S, L, H, hd, dtype=torch.float8_e4m3fn, device="cuda") for _ in range(3)]
    sc = torch.full((attention_fp8.N_SCALARS,), float("nan"), device="cuda")
    torch.ops.fourreal_C.rope_pack_fp8(q, k, v, cos, sin, twins.AXES.index(axis), *packed, sc)
    rot = [twins._rope_along(t.float(), cos, sin, axis) for t in (q, k)]
    amax = [r.unflatten(-1, (-1, 2)).square().sum(-1).amax().sqrt().item() for r in rot] + [v.float().abs().amax().item()]
    torch.testing.assert_close(sc[7:].cpu(), torch.tensor(amax), rtol=1e-5, atol=0)
    o_amax = amax[2] * twins.OUTPUT_HEADROOM
    torch.testing.assert_close(sc[:7].cpu(), torch.tensor([*(a / 448 for a in amax), 1 / 448, 448, 448 / o_amax,
                                                           o_amax / 448]), rtol=1e-5, atol=0)
    # captured in a CUDA graph (cuDNN's graph built above), replayed on new inputs
    qs, ks, vs = (t.clone() for t in (q, k, v))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side), torch.cuda.graph(graph):
        static = attention_fp8.grid_attention_fp8(qs, ks, vs, cos, sin, axis)
    qs.mul_(0.5), vs.mul_(2.0)
    graph.replay()
    torch.testing.assert_close(static, attention_fp8.grid_attention_fp8(qs, ks, vs, cos, sin, axis), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
@pytest.mark.parametrize("shape,pad", [((2, 3, 5, 37, 1024), 8), ((1, 8, 8, 144, 192), 0), ((2, 1, 3, 7, 33), 0)])
def test_gpu_modulated_layernorm_fp8(shape, pad):
    """The LayerNorm written as e4m3 rows: the twin's (fp32 LayerNorm, then row-wise e4m3) to within one e4m3 step
    (fp32 sums in another order may round a value to the neighbouring e4m3 number), scales to 1e-5; bf16 and fp32 x."""
    g, seed = rng("cuda")
    x = randn(g, *shape, device="cuda", scale=2.0, shift=0.5)
    x = strided(x, pad) if pad else x
    sh, sc = randn(g, shape[0], shape[-1], device="cuda"), randn(g, shape[0], shape[-1], device="cuda", scale=0.5)
    for xx in (x.bfloat16(), x):
        q, s = torch.ops.fourreal.modulated_layernorm_fp8(xx, sh, sc, 1e-6)
        q_t, s_t = fp8.modulated_layernorm_fp8_twin(xx, sh, sc)
        torch.testing.assert_close(s, s_t, rtol=1e-5, atol=0)
        a, b = q.float() * s, q_t.float() * s_t
        assert ((a - b).abs() <= b.abs() / 8 + s / 512).all(), seed
        assert (q.view(torch.uint8) == q_t.view(torch.uint8)).float().mean() > 0.99, seed   # the same e4m3 bytes


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
@pytest.mark.skipif(not has_cudnn_frontend(), reason="needs nvidia-cudnn-frontend (cuDNN's FP8 attention)")
def test_gpu_fp8_attention_graphs_are_built_ahead():
    """`prepare` builds both axes' cuDNN graphs of a grid in the background; the first calls take them."""
    from fourreal_rt.model import GridConfig
    from fourreal_rt.ops import attention_fp8
    cfg = GridConfig(frame_h=48, frame_w=64, patch=16, views=3, times=2, dim=128, heads=2)   # hd 64, N 12
    dev = torch.device("cuda", torch.cuda.current_device())
    keys = [(dev.index, 3, 2, 2 * 12, 64), (dev.index, 2, 2, 3 * 12, 64)]
    attention_fp8.prepare(cfg, dev)
    assert all(k in attention_fp8._building or k in attention_fp8._graphs for k in keys)
    g, seed = rng("cuda")
    q, k, v = (t.bfloat16() for t in qkv_views(g, 1, 3, 2, 12, 2, 64, device="cuda"))
    for axis, frames in (("time", 2), ("view", 3)):
        cos, sin = twins.rope_tables(frames, 3, 4, 64, 100.0, device="cuda")
        assert torch.isfinite(attention_fp8.grid_attention_fp8(q, k, v, cos, sin, axis)).all(), seed
    assert all(k in attention_fp8._graphs and k not in attention_fp8._building for k in keys)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
def test_gpu_grid_attention_fp8_falls_back_to_bf16_with_a_warning():
    """A head size cuDNN's FP8 attention does not take (not a multiple of 16): the bf16 core runs, with a warning."""
    g, seed = rng("cuda")
    q, k, v = (t.bfloat16() for t in qkv_views(g, 1, 2, 3, 10, 2, 24, device="cuda"))
    cos, sin = twins.rope_tables(3, 2, 5, 24, 100.0, device="cuda")
    with pytest.warns(UserWarning, match="FP8 attention unavailable"):
        out = torch.ops.fourreal.grid_attention_fp8(q, k, v, cos, sin, "time")
    torch.testing.assert_close(out, torch.ops.fourreal.grid_attention(q, k, v, cos, sin, "time"), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
def test_gpu_grid_attention_matches_explicit_loops():
    """Independent of the twin's reshapes: the sequences written out one by one."""
    g, seed = rng("cuda")
    q, k, v = qkv_views(g, 2, 3, 4, 6, 2, 32, device="cuda")
    for axis in twins.AXES:
        cos, sin = twins.rope_tables(4 if axis == "time" else 3, 2, 3, 32, 100.0, device="cuda")
        ours = torch.ops.fourreal.grid_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), cos, sin, axis)
        assert maxerr(ours, ref_grid_attention(q, k, v, cos, sin, axis)) < 3e-2, (axis, seed)  # bf16 inputs


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
def test_gpu_rope_pack_writes_every_element():
    g, seed = rng("cuda")
    q, k, v = qkv_views(g, 1, 3, 5, 7, 2, 32, device="cuda", dtype=torch.bfloat16)
    cos, sin = twins.rope_tables(3, 1, 7, 32, 100.0, device="cuda")
    outs = [torch.full((5, 21, 2, 32), float("nan"), device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    torch.ops.fourreal_C.rope_pack(q, k, v, cos, sin, 1, *outs)              # view axis: S = (b, t), L = (v, n)
    assert not any(o.isnan().any() for o in outs), seed
    torch.testing.assert_close(outs[2], v[0].transpose(0, 1).reshape(5, 21, 2, 32), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
@pytest.mark.parametrize("shape", [(1, 8, 8, 37, 1024), (2, 3, 5, 11, 192), (2, 2, 3, 7, 200)])
def test_gpu_sync(shape):
    g, seed = rng("cuda")
    B, D = shape[0], shape[-1]
    y_v, y_t = randn(g, *shape, device="cuda").bfloat16(), strided(randn(g, *shape, device="cuda").bfloat16())
    mod4 = randn(g, B, 4 * D, device="cuda", scale=0.3).bfloat16()
    w2, b2 = randn(g, 2 * D, 2 * D, device="cuda", scale=D ** -0.5).bfloat16(), randn(g, 2 * D, device="cuda").bfloat16()
    r_v, r_t = ref_soft_sync(y_v, y_t, mod4, w2, b2)
    o_v, o_t = torch.ops.fourreal.soft_sync(y_v, y_t, mod4, w2, b2, 1e-6)
    t_v, t_t = twins.soft_sync(y_v, y_t, mod4, w2, b2)
    check_bf16(o_v, t_v, r_v, seed, 2e-3)
    check_bf16(o_t, t_t, r_t, seed, 2e-3)
    mod2 = randn(g, B, 2 * D, device="cuda", scale=0.3).bfloat16()
    w1, b1 = randn(g, D, 2 * D, device="cuda", scale=D ** -0.5).bfloat16(), randn(g, D, device="cuda").bfloat16()
    # 4e-3: hard sync folds (1 + s) into the bf16 weight instead of the bf16 tokens; one rounding either way,
    # on a sum of 2D products whose size is about 1.5
    check_bf16(torch.ops.fourreal.hard_sync(y_v, y_t, mod2, w1, b1), twins.hard_sync(y_v, y_t, mod2, w1, b1),
               ref_hard_sync(y_v, y_t, mod2, w1, b1), seed, 4e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
@pytest.mark.parametrize("MK", [(37, 1024), (300, 4096), (19, 200), (5, 16392), (11, 203)])
def test_gpu_quantize_fp8(MK):
    """Rows held in registers (K <= 16384, K % 8 == 0), longer rows (warp per row, two passes), unaligned K."""
    g, seed = rng("cuda")
    x = strided(randn(g, *MK, device="cuda", scale=3.0).bfloat16())         # [M, K], padded rows
    for gelu in (False, True):
        q, s = fp8.quantize_rowwise(x, gelu)
        qt, st = fp8.quantize_rowwise_twin(x, gelu)
        torch.testing.assert_close(s, st, rtol=1e-5, atol=0, msg=str(seed))
        deq, deqt = q.double() * s.double(), qt.double() * st.double()
        # the kernel multiplies by 448 / amax where the twin divides by amax / 448: at most one e4m3 step apart
        assert ((deq - deqt).abs() <= deqt.abs() / 8 + s.double() / 512 + 1e-12).all(), seed


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
def test_gpu_fp8_linear():
    g, seed = rng("cuda")
    lin = nn.Linear(1024, 3072).cuda().bfloat16()
    x = randn(g, 4, 333, 1024, device="cuda").bfloat16()
    ref = F.linear(x.double(), lin.weight.double(), lin.bias.double())
    rel8 = ((fp8.FP8Linear(lin)(x).double() - ref).norm() / ref.norm()).item()
    rel16 = ((lin(x).double() - ref).norm() / ref.norm()).item()
    assert rel8 < 0.05, (rel8, rel16, seed)                                 # e4m3 operands: a few percent


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
def test_gpu_fused_mlp():
    g, seed = rng("cuda")
    fc1, fc2 = nn.Linear(192, 768).cuda(), nn.Linear(768, 192).cuda()
    h = randn(g, 2, 3, 5, 192, device="cuda")
    ref = F.linear(F.gelu(F.linear(h.double(), fc1.weight.double(), fc1.bias.double()), approximate="tanh"),
                   fc2.weight.double(), fc2.bias.double())
    fc1b, fc2b, hb = fc1.bfloat16(), fc2.bfloat16(), h.bfloat16()
    with ops.use_custom_ops():
        ours = fused.mlp(hb, fc1b, fc2b)
    check_bf16(ours, fc2b(F.gelu(fc1b(hb), approximate="tanh")), ref, seed, 2e-3)
    # the epilogue's GELU is the tanh form the model uses, not erf: checked in fp32 (no TF32), on pre-activations
    # of a few units where the two forms differ by ~1e-4 while fp32 rounding is ~1e-6
    w, b, hh = fc1.weight.float(), fc1.bias.float(), 4 * h.reshape(-1, 192)
    pre = F.linear(hh.double(), w.double(), b.double())
    a = torch._addmm_activation(b, hh, w.t(), use_gelu=True).double()
    e_tanh = (a - F.gelu(pre, approximate="tanh")).abs().mean().item()
    e_erf = (a - F.gelu(pre)).abs().mean().item()
    assert e_tanh < e_erf, (e_tanh, e_erf)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("i", range(9))
def test_gpu_opcheck(i, dtype):
    op, args = op_cases("cuda", dtype)[i]
    torch.library.opcheck(op, args)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
@pytest.mark.parametrize("preset,sync", [("tiny", "soft"), ("tiny", "hard"), ("small", "soft")])
def test_gpu_model_step(preset, sync):
    """The whole denoiser: ours (custom ops, bf16) vs the twins (bf16), both against the fp32 twins; then a CUDA
    graph of ours replays to the same output."""
    from fourreal_rt.model import PRESETS, TwoStreamModel
    g, seed = rng("cuda")
    cfg = PRESETS[preset].replace(sync=sync)
    torch.manual_seed(seed)
    model = TwoStreamModel(cfg).cuda().eval()
    for name, p in model.named_parameters():                               # non-zero everywhere, syncs included
        p.copy_(torch.randn_like(p) * (0.3 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.05))
    B = 2
    shape = (B, cfg.views, cfg.times, cfg.frame_h, cfg.frame_w, 3)
    x, known = randn(g, *shape, device="cuda"), randn(g, *shape, device="cuda")
    mask = torch.zeros(B, cfg.views, cfg.times, dtype=torch.bool, device="cuda")
    mask[:, 0] = mask[:, :, 0] = True
    sigma = torch.tensor([0.3, 0.8], device="cuda")
    ref = model(x, known, mask, sigma).double()
    mb = model.bfloat16()
    xb, kb = x.bfloat16(), known.bfloat16()
    twin_b = mb(xb, kb, mask, sigma)
    with ops.use_custom_ops():
        ours = mb(xb, kb, mask, sigma)
    rel = lambda a: ((a.double() - ref).norm() / ref.norm()).item()  # noqa: E731
    assert rel(ours) <= 2 * rel(twin_b) + 1e-3, (rel(ours), rel(twin_b), seed)
    with ops.use_custom_ops():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            mb(xb, kb, mask, sigma)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out_g = mb(xb, kb, mask, sigma)
    graph.replay()
    torch.cuda.synchronize()
    # replays the same kernels; cuBLAS may pick other algorithms under capture, so not bit-exact
    assert ((out_g.double() - ours.double()).norm() / ours.double().norm()).item() < 1e-2, seed


def test_custom_op_step_does_not_import_dynamo():
    """A fresh process runs the model through the fourreal:: ops without importing torch._dynamo (the 4–8 s
    that custom_op's own kernel registry cost the first denoising step of every `generate` on the GPU box)."""
    import subprocess
    import sys
    code = """
import sys, torch
from fourreal_rt.model import PRESETS, TwoStreamModel
from fourreal_rt.ops import use_custom_ops
cfg = PRESETS["tiny"]
m = TwoStreamModel(cfg).eval()
x = torch.randn(1, cfg.views, cfg.times, cfg.frame_h, cfg.frame_w, 3)
mask = torch.zeros(1, cfg.views, cfg.times, dtype=torch.bool)
with torch.no_grad(), use_custom_ops():
    m(x, x, mask, torch.full((1,), 0.5))
print("torch._dynamo" in sys.modules)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
def test_engine_graphed_step_first_call_and_replays():
    """The engine's CUDA-graph step: the first call returns the warm-up's (eager) result exactly; later calls
    replay the graph on new inputs and match the eager step (within bf16 noise: capture may pick other GEMMs)."""
    from fourreal_rt.export.engine import EngineDenoiser
    from fourreal_rt.export.onnx_export import example_inputs
    from fourreal_rt.export.step import FoldedStep, sigma_tables
    from fourreal_rt.model import PRESETS, TwoStreamModel
    from fourreal_rt.sampler.flow import sigma_schedule

    g, seed = rng()
    model = TwoStreamModel(PRESETS["tiny"].replace(views=3, times=5)).eval()
    for p in model.parameters():
        p.copy_(randn(g, *p.shape, scale=0.2))
    model = model.cuda().to(torch.bfloat16)
    sig = sigma_schedule(4)[:-1]
    step = FoldedStep(model, sigma_tables(model, sig.cuda(), torch.bfloat16), dtype=torch.bfloat16)
    graphed = EngineDenoiser(step, custom_ops=True, sdpa=None, cuda_graph=True)
    eager = EngineDenoiser(step, custom_ops=True, sdpa=None, cuda_graph=False)
    for i, s in enumerate(sig):
        x, known, mask, _ = example_inputs(model.cfg, seed=seed + i, dtype=torch.bfloat16, device="cuda")
        sigma = s.reshape(1).cuda().to(torch.bfloat16)
        got, ref = graphed(x, known, mask, sigma).double(), eager(x, known, mask, sigma).double()
        if i == 0:
            assert torch.equal(got, ref), seed
        else:
            assert ((got - ref).norm() / ref.norm()).item() < 1e-2, (seed, i)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_gpu_warm_up_libraries(preset):
    """The engine loader's warm-up (a thread beside the weight load, errors swallowed there) runs as written."""
    from fourreal_rt.export.step import warm_up_libraries
    from fourreal_rt.model import PRESETS, TwoStreamModel
    warm_up_libraries(TwoStreamModel(PRESETS[preset]).base, torch.device("cuda"), torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
@pytest.mark.parametrize("use_fp8", [False, pytest.param(True, marks=pytest.mark.skipif(
    not has_cudnn_frontend(), reason="needs nvidia-cudnn-frontend (cuDNN's FP8 attention)"))])
def test_gpu_two_streams_match_one_stream(use_fp8):
    """The view and time blocks on two CUDA streams (ops/streams.py) give the one-stream output bit for bit, eagerly
    and as a CUDA graph (both graphs captured, so cuBLAS chooses alike), on the model and on the engine's step; with
    FP8 both streams run cuDNN's FP8 attention at once (its buffers are per call)."""
    from fourreal_rt.export.step import FoldedStep, sigma_tables
    from fourreal_rt.model import PRESETS, TwoStreamModel
    from fourreal_rt.sampler.flow import sigma_schedule

    g, seed = rng("cuda")
    cfg = PRESETS["small"].replace(depth=3)            # big enough that the two streams' kernels overlap
    model = TwoStreamModel(cfg).eval()
    for p in model.parameters():
        p.copy_(randn(g, *p.shape, device="cuda", scale=0.3 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.05))
    model = model.cuda().to(torch.bfloat16)
    if use_fp8:
        fp8.convert_to_fp8(model)
    sig = sigma_schedule(4)[:1]
    step = FoldedStep(model, sigma_tables(model, sig.cuda(), torch.bfloat16), dtype=torch.bfloat16)
    shape = (1, cfg.views, cfg.times, cfg.frame_h, cfg.frame_w, 3)
    x, known = randn(g, *shape, device="cuda", dtype=torch.bfloat16), randn(g, *shape, device="cuda", dtype=torch.bfloat16)
    mask = torch.zeros(shape[:3], dtype=torch.bool, device="cuda")
    mask[:, 0] = mask[:, :, 0] = True
    sigma = sig.reshape(1).cuda().to(torch.bfloat16)

    def run(two: bool, fn, graph: bool):
        prev, backend.settings["two_streams"] = backend.settings["two_streams"], two
        try:
            with ops.use_custom_ops():
                out = fn(x, known, mask, sigma)                                  # eager (and the capture's warm-up)
                if graph:
                    cg = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(cg):
                        out = fn(x, known, mask, sigma)
                    cg.replay()
            torch.cuda.synchronize()
            return out.clone()
        finally:
            backend.settings["two_streams"] = prev
    for fn in (model, step):
        for graph in (False, True):
            one, two = run(False, fn, graph), run(True, fn, graph)
            assert torch.isfinite(one).all(), seed
            assert torch.equal(one, two), (type(fn).__name__, graph, seed)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs CUDA and the compiled fourreal_rt._C")
@pytest.mark.skipif(not has_cudnn_frontend(), reason="needs nvidia-cudnn-frontend (cuDNN's FP8 attention)")
def test_gpu_fp8_engine_stores_and_loads_attention_plans(tmp_path):
    """An fp8 engine built on the GPU stores cuDNN's compiled FP8 attention plans (checksummed in its manifest);
    loading it takes them instead of building; a damaged plans file is refused before any of it is loaded."""
    import json

    from safetensors.torch import load_file

    from fourreal_rt.export import engine as E
    from fourreal_rt.model import GridConfig, TwoStreamModel
    from fourreal_rt.model.weights import save_model
    from fourreal_rt.ops import attention_fp8
    cfg = GridConfig(frame_h=32, frame_w=32, patch=8, views=2, times=3, dim=128, heads=2, depth=1)   # hd 64, N 16
    torch.manual_seed(0)
    model = TwoStreamModel(cfg)
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    save_model(model, tmp_path / "m")
    E.build_engine(str(tmp_path / "m"), tmp_path / "E8", steps=2, dtype="fp8", device="cuda", onnx=False,
                   log=lambda *a: None)
    m = json.loads((tmp_path / "E8" / "manifest.json").read_text())
    assert E.ATTENTION_PLANS_FILE in m["files"] and "cuDNN FP8" in m["runtime"]["attention"], m["runtime"]
    assert set(load_file(str(tmp_path / "E8" / E.ATTENTION_PLANS_FILE))) == {"sdpa_fp8_2x2x48x64", "sdpa_fp8_3x2x32x64"}
    attention_fp8._graphs.clear()
    attention_fp8.loaded.clear()
    E.load_engine(tmp_path / "E8", "cuda")
    dev = torch.device("cuda", torch.cuda.current_device())
    keys = {(dev.index, 2, 2, 3 * 16, 64), (dev.index, 3, 2, 2 * 16, 64)}
    for key in keys:
        attention_fp8._graph(dev, *key[1:])                      # waits for the background load
    assert attention_fp8.loaded == keys
    plans = tmp_path / "E8" / E.ATTENTION_PLANS_FILE
    data = bytearray(plans.read_bytes())
    data[-1] ^= 0xFF
    plans.write_bytes(bytes(data))
    attention_fp8._graphs.clear()
    attention_fp8.loaded.clear()
    with pytest.raises(E.EngineError, match="damaged"):
        E.load_engine(tmp_path / "E8", "cuda")
    for key in keys:                                             # nothing of the damaged file was kept: built anew
        assert attention_fp8._graph(dev, *key[1:]) is not None
        assert key not in attention_fp8.loaded
