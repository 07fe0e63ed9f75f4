"""Pure-PyTorch twins of the compiled kernels.

Each function here is the reference semantics of one op in `csrc/`: the CPU implementation, the
export path, and the baseline the kernel tests compare against. Tokens live in the grid layout
`[B, V, T, N, D]` (or `[B, V, T, N, H, hd]` split into heads) in both streams; only attention
knows which axis a sequence runs along.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AXES = ("time", "view")


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels of one head given to (frame index, h, w) rotations; each is even."""
    d_hw = 2 * ((head_dim * 3 // 8) // 2)
    return head_dim - 2 * d_hw, d_hw, d_hw


def rope_tables(frames: int, hp: int, wp: int, head_dim: int, theta: float,
                device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """3D RoPE tables over (frame index f, patch row h, patch column w).

    Returns cos, sin: [F, N, head_dim / 2] with N = hp * wp; pair i of a head rotates
    channels (2i, 2i+1) by angle pos_axis(i) * freq(i).
    """
    d_f, d_h, d_w = rope_split(head_dim)

    def freqs(d):  # [d / 2]
        return 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)

    f = torch.arange(frames, dtype=torch.float64)
    h = torch.arange(hp, dtype=torch.float64)
    w = torch.arange(wp, dtype=torch.float64)
    ang_f = (f[:, None] * freqs(d_f))[:, None, :].expand(frames, hp * wp, d_f // 2)     # [F, N, d_f/2]
    ang_h = (h[:, None] * freqs(d_h)).repeat_interleave(wp, 0)[None].expand(frames, -1, -1)  # [F, N, d_h/2]
    ang_w = (w[:, None] * freqs(d_w)).repeat(hp, 1)[None].expand(frames, -1, -1)          # [F, N, d_w/2]
    ang = torch.cat([ang_f, ang_h, ang_w], -1)                                           # [F, N, hd/2]
    return ang.cos().to(device=device, dtype=dtype), ang.sin().to(device=device, dtype=dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs. x: [..., hd]; cos, sin broadcast to [..., hd/2]."""
    x2 = x.float().unflatten(-1, (-1, 2))          # [..., hd/2, 2]
    a, b = x2[..., 0], x2[..., 1]
    out = torch.stack([a * cos - b * sin, a * sin + b * cos], -1)
    return out.flatten(-2).to(x.dtype)


def _rope_along(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, axis: str) -> torch.Tensor:
    """RoPE with the frame index of `axis`. x: [B, V, T, N, H, hd]; cos, sin: [F, N, hd/2]."""
    if axis == "time":
        c, s = cos[None, None, :, :, None], sin[None, None, :, :, None]   # [1, 1, T, N, 1, hd/2]
    elif axis == "view":
        c, s = cos[None, :, None, :, None], sin[None, :, None, :, None]   # [1, V, 1, N, 1, hd/2]
    else:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    return apply_rope(x, c, s)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, axis: str) -> torch.Tensor:
    """SDPA over the sequences of `axis`. q, k, v: [B, V, T, N, H, hd] -> [B, V, T, N, H, hd]."""
    B, V, T, N, H, hd = q.shape

    def seqs(x):  # [B, V, T, N, H, hd] -> [S, H, L, hd]
        if axis == "view":
            x = x.transpose(1, 2)                  # [B, T, V, N, H, hd]
        return x.flatten(3, 3).reshape(x.shape[0] * x.shape[1], x.shape[2] * N, H, hd).transpose(1, 2)

    o = F.scaled_dot_product_attention(seqs(q), seqs(k), seqs(v))     # [S, H, L, hd]
    o = o.transpose(1, 2)                                              # [S, L, H, hd]
    if axis == "time":
        return o.reshape(B, V, T, N, H, hd)
    return o.reshape(B, T, V, N, H, hd).transpose(1, 2)


def grid_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   cos: torch.Tensor, sin: torch.Tensor, axis: str) -> torch.Tensor:
    """Self-attention along one grid axis with 3D RoPE applied to q and k.

    q, k, v: [B, V, T, N, H, hd]. axis="time": each (b, v) row attends over its T*N tokens
    (frame index = t); axis="view": each (b, t) column attends over its V*N tokens (frame index = v).
    cos, sin: [F, N, hd/2], F = T for "time", V for "view". Returns [B, V, T, N, H, hd].
    """
    return _attend(_rope_along(q, cos, sin, axis), _rope_along(k, cos, sin, axis), v, axis)


E4M3_MAX = 448.0
OUTPUT_HEADROOM = 1.125   # FP8 attention's output scale: max |v| times this (csrc kOutputHeadroom)


def to_e4m3(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """x as float8_e4m3fn at the scale amax / 448 (amax broadcasts: per tensor or per row), saturating; scaled by
    448 / amax as the kernels do. x ≈ result * amax / 448."""
    return (x.float() * (E4M3_MAX / amax)).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def e4m3_round(x: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """x rounded to e4m3 at the per-tensor scale amax / 448, back in fp32."""
    amax = amax.float().clamp(min=1e-30)
    return to_e4m3(x, amax).float() * (amax / E4M3_MAX)


def grid_attention_fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       cos: torch.Tensor, sin: torch.Tensor, axis: str) -> torch.Tensor:
    """`grid_attention` with an e4m3 core, as our FP8 path runs it (csrc/grid_attention.h, cuDNN's FP8 SDPA): q and
    k after RoPE and v rounded to e4m3 with one scale per tensor (amax / 448; for q and k the amax is the largest
    channel-pair norm, which rotation keeps), softmax and products in fp32, the output rounded to e4m3 at max |v|
    times OUTPUT_HEADROOM (a convex combination of v's rows, up to the probabilities' rounding). The kernel also
    stores the softmax probabilities as e4m3 (scaled by 448); that rounding, inside the fused kernel's online softmax,
    is not emulated. Shapes as `grid_attention`; returns q's dtype."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    pair_amax = lambda x: x.float().unflatten(-1, (-1, 2)).square().sum(-1).amax().sqrt()   # noqa: E731
    qr, kr = _rope_along(q.float(), cos, sin, axis), _rope_along(k.float(), cos, sin, axis)
    amax_v = v.float().abs().amax()
    # fp32 inputs: lift a caller's restriction to 16-bit SDPA backends (an engine pins cuDNN)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        o = _attend(e4m3_round(qr, pair_amax(q)), e4m3_round(kr, pair_amax(k)), e4m3_round(v, amax_v), axis)
    return e4m3_round(o, amax_v * OUTPUT_HEADROOM).to(q.dtype)


def modulated_layernorm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
                        eps: float = 1e-6) -> torch.Tensor:
    """adaLN: LayerNorm(x) * (1 + scale) + shift. x: [B, ..., D]; shift, scale: [B, D]."""
    bshape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    h = F.layer_norm(x.float(), x.shape[-1:], eps=eps)
    return (h * (1 + scale.float().view(bshape)) + shift.float().view(bshape)).to(x.dtype)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """x + gate * y. x, y: [B, ..., D]; gate: [B, D]."""
    bshape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    return x + gate.view(bshape).to(x.dtype) * y


def soft_sync(y_v: torch.Tensor, y_t: torch.Tensor, mod: torch.Tensor,
              weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6):
    """Soft synchronisation, eqs. 9-10: (Δy^v, Δy^t) = ModLinear(y^v, y^t; σ); x = y + Δy.

    y_v, y_t: [B, V, T, N, D]; mod: [B, 4D] = (shift_v, scale_v, shift_t, scale_t) from σ;
    weight: [2D, 2D], bias: [2D]. ModLinear = modulated LayerNorm of each stream, then one
    linear map of the concatenation. Returns (x_v, x_t).
    """
    sh_v, sc_v, sh_t, sc_t = mod.chunk(4, -1)
    z = torch.cat([modulated_layernorm(y_v, sh_v, sc_v, eps),
                   modulated_layernorm(y_t, sh_t, sc_t, eps)], -1)       # [B, V, T, N, 2D]
    d_v, d_t = F.linear(z, weight, bias).chunk(2, -1)                     # [B, V, T, N, D] each
    return y_v + d_v, y_t + d_t


def hard_sync(y_v: torch.Tensor, y_t: torch.Tensor, mod: torch.Tensor,
              weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Hard synchronisation, eq. 8: x = W^v (y^v ⊙ (1 + s^v)) + W^t (y^t ⊙ (1 + s^t)).

    y_v, y_t: [B, V, T, N, D]; mod: [B, 2D] = (s^v, s^t) from σ; weight: [D, 2D] = [W^v | W^t]
    (initialised to [½I | ½I]); bias: [D]. Returns the one merged stream [B, V, T, N, D].
    """
    s_v, s_t = mod.chunk(2, -1)
    bshape = (y_v.shape[0],) + (1,) * (y_v.dim() - 2) + (y_v.shape[-1],)
    z = torch.cat([y_v * (1 + s_v.view(bshape).to(y_v.dtype)),
                   y_t * (1 + s_t.view(bshape).to(y_t.dtype))], -1)        # [B, V, T, N, 2D]
    return F.linear(z, weight, bias)
