"""The base video model: pixel-space DiT blocks φ_l with adaLN-zero and 3D RoPE (paper §3.1).

All tokens stay in the grid layout `[B, V, T, N, D]`. A fixed-view video (a row) is a grid with
V = 1 attended along "time"; a freeze-time video (a column) is a grid with T = 1 attended along
"view". Everything but attention is token-wise, so the same block serves both streams unchanged.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from ..ops.fp8 import FP8Linear
from ..ops.fused import gated_linear, mlp
from .config import GridConfig

DYNAMIC, FREEZE_TIME = 0, 1   # context ids: c^t ("dynamic video") and c^v ("freeze-time video")
AXIS_OF_CONTEXT = {DYNAMIC: "time", FREEZE_TIME: "view"}
IN_CHANNELS = 7               # noisy RGB + clean known RGB + known mask (masked conditioning)


SIGMA_MIN_X = 0.05            # x-prediction: velocity = (x_σ - x̂_0) / max(σ, this)


def velocity(model_out: torch.Tensor, x_noisy: torch.Tensor, known: torch.Tensor, mask: torch.Tensor,
             sigma: torch.Tensor, prediction: str) -> torch.Tensor:
    """The velocity ε - x_0 from the head's output; for x-prediction (x_in - x̂_0) / σ with x_in the model's masked
    input. model_out, x_noisy, known: [B, V, T, H, W, 3]; mask: [B, V, T]; sigma: [B]."""
    if prediction == "v":
        return model_out
    x_in = masked_input(x_noisy, known, mask)
    s = sigma.float().clamp(min=SIGMA_MIN_X).view(-1, 1, 1, 1, 1, 1)
    return ((x_in.float() - model_out.float()) / s).to(model_out.dtype)


def timestep_embedding(sigma: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """Sinusoidal embedding of the flow time σ ∈ [0, 1]. sigma: [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=sigma.device) / half)
    ang = 1000.0 * sigma.float()[:, None] * freqs[None]
    return torch.cat([ang.cos(), ang.sin()], -1)


def masked_input(x_noisy: torch.Tensor, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Known frames replace the noisy input. x_noisy, known: [B, V, T, H, W, 3]; mask: [B, V, T]."""
    return torch.where(mask[..., None, None, None], known, x_noisy)


def input_features(x_noisy: torch.Tensor, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The patch embedding's input: the masked input, the known frames and the mask channel.
    x_noisy, known: [B, V, T, H, W, 3]; mask: [B, V, T] bool. Returns [B, V, T, H, W, IN_CHANNELS]."""
    m = mask[..., None, None, None].to(x_noisy.dtype)                          # [B, V, T, 1, 1, 1]
    return torch.cat([masked_input(x_noisy, known, mask), known * m, m.expand(*x_noisy.shape[:-1], 1)], -1)


class Attention(nn.Module):
    def __init__(self, cfg: GridConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.fp8_attention = False   # the core in e4m3 (ops.grid_attention_fp8); set by ops.fp8.convert_to_fp8

    def forward(self, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], axis: str, x: torch.Tensor,
                gate: torch.Tensor) -> torch.Tensor:
        """x + gate ⊙ Attn(h): the gated residual rides on the output projection (ops/fused.py).
        h, x: [B, V, T, N, D] (h may be an FP8 block's fp8.Quantized rows); gate: [B, D]."""
        B, V, T, N, D = h.shape
        q, k, v = self.qkv(h).view(B, V, T, N, 3, self.heads, D // self.heads).unbind(4)  # [B, V, T, N, H, hd]
        attend = ops.grid_attention_fp8 if self.fp8_attention else ops.grid_attention
        o = attend(q, k, v, rope[0], rope[1], axis)                           # [B, V, T, N, H, hd]
        return gated_linear(x, o.flatten(-2), self.proj, gate)                # [B, V, T, N, D]


def block_residuals(x: torch.Tensor, mod: torch.Tensor, attend, feed_forward, fp8_norm: bool = False) -> torch.Tensor:
    """φ_l's two gated residual branches with its adaLN vector given (shared by `Block` and the engine's
    functional layer, export/step.py). x: [B, V, T, N, D]; mod: [B, 6D]; attend(h, x, g) = x + g ⊙ Attn(h) and
    feed_forward(h, x, g) = x + g ⊙ MLP(h), each residual taken in its branch's last GEMM where a kernel allows.
    fp8_norm: h comes as the e4m3 rows the FP8 qkv and fc1 take (ops.modulated_layernorm_fp8)."""
    # fp32 once (exact: every consumer computes in fp32 or rounds back to x's dtype), so that the kernels take its
    # slices as they are instead of each converting its own
    sh1, sc1, g1, sh2, sc2, g2 = mod.float().chunk(6, -1)                    # [B, D] each
    norm = ops.modulated_layernorm_fp8 if fp8_norm else ops.modulated_layernorm
    x = attend(norm(x, sh1, sc1), x, g1)
    return feed_forward(norm(x, sh2, sc2), x, g2)


class Block(nn.Module):
    """φ_l: adaLN-zero DiT block. y = x + φ_l(x; c) (eq. 1), attention along one grid axis."""

    def __init__(self, cfg: GridConfig):
        super().__init__()
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.ada = nn.Linear(cfg.dim, 6 * cfg.dim)
        self.attn = Attention(cfg)
        self.fc1 = nn.Linear(cfg.dim, hidden)
        self.fc2 = nn.Linear(hidden, cfg.dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope, axis: str, attn: Attention | None = None):
        # x: [B, V, T, N, D]; c: [B, D] (σ + context embedding)
        attn = attn or self.attn
        fp8_norm = isinstance(attn.qkv, FP8Linear) and isinstance(self.fc1, FP8Linear)   # their inputs come as e4m3
        return block_residuals(x, self.ada(F.silu(c)), lambda h, x, g: attn(h, rope, axis, x, g),
                               lambda h, x, g: mlp(h, self.fc1, self.fc2, x, g), fp8_norm)  # fc2(GELU_tanh(fc1(h)))


class BaseVideoModel(nn.Module):
    """Stage-1 model: a masked-conditioning video DiT for fixed-view and freeze-time videos."""

    def __init__(self, cfg: GridConfig):
        super().__init__()
        self.cfg = cfg
        D, p = cfg.dim, cfg.patch
        self.patch_embed = nn.Linear(IN_CHANNELS * p * p, D)
        self.sigma_embed = nn.Sequential(nn.Linear(256, D), nn.SiLU(), nn.Linear(D, D))
        self.context_embed = nn.Embedding(2, D)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.final_ada = nn.Linear(D, 2 * D)
        self.final = nn.Linear(D, 3 * p * p)
        for m in (self.final_ada, self.final):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        self._rope_cache: dict = {}

    # -- pixels <-> tokens -------------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, V, T, H, W, C] -> [B, V, T, N, p*p*C]."""
        B, V, T, H, W, C = x.shape
        p = self.cfg.patch
        x = x.view(B, V, T, H // p, p, W // p, p, C).permute(0, 1, 2, 3, 5, 4, 6, 7)
        return x.reshape(B, V, T, (H // p) * (W // p), p * p * C)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, V, T, N, p*p*3] -> [B, V, T, H, W, 3]."""
        B, V, T, N, _ = x.shape
        p, (hp, wp) = self.cfg.patch, self.cfg.grid_hw
        x = x.view(B, V, T, hp, wp, p, p, 3).permute(0, 1, 2, 3, 5, 4, 6, 7)
        return x.reshape(B, V, T, hp * p, wp * p, 3)

    def embed_input(self, x_noisy, known, mask) -> torch.Tensor:
        """Masked conditioning. x_noisy, known: [B, V, T, H, W, 3]; mask: [B, V, T] bool.

        Known frames enter clean (replacing the noisy input) and through their own channels
        plus a mask channel. Returns tokens [B, V, T, N, D].
        """
        return self.patch_embed(self.patchify(input_features(x_noisy, known, mask)))

    def conditioning(self, sigma: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (σ embedding [B, D], c = σ embedding + context embedding [B, D])."""
        s = self.sigma_embed(timestep_embedding(sigma).to(self.patch_embed.weight.dtype))
        return s, s + self.context_embed.weight[context]

    def rope(self, frames: int, device, dtype=torch.float32):
        key = (frames, str(device), dtype)
        if key not in self._rope_cache:
            hp, wp = self.cfg.grid_hw
            self._rope_cache[key] = ops.rope_tables(frames, hp, wp, self.cfg.head_dim, self.cfg.rope_theta,
                                                    device=device, dtype=dtype)
        return self._rope_cache[key]

    def head(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Final adaLN + linear to pixel velocity. x: [B, V, T, N, D] -> [B, V, T, H, W, 3]."""
        sh, sc = self.final_ada(F.silu(c)).chunk(2, -1)
        return self.unpatchify(self.final(ops.modulated_layernorm(x, sh, sc)))

    def forward(self, x_noisy, known, mask, sigma, context: int) -> torch.Tensor:
        """One video: a row (context DYNAMIC, V = 1) or a column (FREEZE_TIME, T = 1).

        x_noisy, known: [B, V, T, H, W, 3]; mask: [B, V, T]; sigma: [B]. Returns velocity, same shape.
        """
        axis = AXIS_OF_CONTEXT[context]
        frames = x_noisy.shape[2] if axis == "time" else x_noisy.shape[1]
        x = self.embed_input(x_noisy, known, mask)
        _, c = self.conditioning(sigma, context)
        rope = self.rope(frames, x.device)
        for blk in self.blocks:
            x = blk(x, c, rope, axis)
        return velocity(self.head(x, c), x_noisy, known, mask, sigma, self.cfg.prediction)
