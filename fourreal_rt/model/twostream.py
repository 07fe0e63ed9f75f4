"""The two-stream grid model (paper §3.2, eq. 4) and its synchronisation layers (eqs. 5, 8-10).

time stream x^t: φ_l on each row (a fixed-view video of T frames), batched over views, context c^t;
view stream x^v: φ_l on each column (a freeze-time video of V frames), batched over times, context c^v.
Both run the same block weights; a sync layer after every block exchanges information.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from ..ops.streams import both
from .blocks import DYNAMIC, FREEZE_TIME, BaseVideoModel, velocity
from .config import GridConfig


class SoftSync(nn.Module):
    """Eqs. 9-10: (Δy^v, Δy^t) = ModLinear(y^v, y^t; σ), x^v = y^v + Δy^v, x^t = y^t + Δy^t.

    Zero-initialised, so an untrained soft sync leaves the two streams independent.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.ada = nn.Linear(dim, 4 * dim)       # σ -> (shift_v, scale_v, shift_t, scale_t)
        self.linear = nn.Linear(2 * dim, 2 * dim)
        for m in (self.ada, self.linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, y_v, y_t, s):              # y_*: [B, V, T, N, D]; s: σ embedding [B, D]
        return ops.soft_sync(y_v, y_t, self.ada(F.silu(s)), self.linear.weight, self.linear.bias)


class HardSync(nn.Module):
    """Eq. 8: x = W^v y^v + W^t y^t, W initialised to ½I and modulated by σ; both streams get x."""

    def __init__(self, dim: int):
        super().__init__()
        self.ada = nn.Linear(dim, 2 * dim)       # σ -> (s^v, s^t), zero-init: modulation starts at 1
        self.linear = nn.Linear(2 * dim, dim)    # [W^v | W^t]
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)
        with torch.no_grad():
            eye = torch.eye(dim)
            self.linear.weight.copy_(torch.cat([eye, eye], 1) / 2)
            self.linear.bias.zero_()

    def forward(self, y_v, y_t, s):
        x = ops.hard_sync(y_v, y_t, self.ada(F.silu(s)), self.linear.weight, self.linear.bias)
        return x, x


class AverageSync(nn.Module):
    """Supplement eq. 1 (training-free hard sync): x = ½ (y^v + y^t)."""

    def forward(self, y_v, y_t, s):
        x = (y_v + y_t) / 2
        return x, x


class WeightedSync(nn.Module):
    """Supplement eq. 2 (training-free soft sync): exchange with w_l = 0.1 + 0.4 l / L (l from 0)."""

    def __init__(self, layer: int, depth: int):
        super().__init__()
        self.w = 0.1 + 0.4 * layer / depth

    def forward(self, y_v, y_t, s):
        w = self.w
        return (1 - w) * y_v + w * y_t, (1 - w) * y_t + w * y_v


class TwoStreamModel(nn.Module):
    """Denoiser of a whole V x T grid: velocity = model(x_noisy, known, mask, σ)."""

    def __init__(self, cfg: GridConfig, base: BaseVideoModel | None = None):
        super().__init__()
        self.cfg = cfg
        self.base = base if base is not None else BaseVideoModel(cfg)
        D, L = cfg.dim, cfg.depth
        if cfg.sync == "soft":
            self.syncs = nn.ModuleList(SoftSync(D) for _ in range(L))
        elif cfg.sync == "hard":
            self.syncs = nn.ModuleList(HardSync(D) for _ in range(L))
        elif cfg.sync == "average":
            self.syncs = nn.ModuleList(AverageSync() for _ in range(L))
        elif cfg.sync == "weighted":
            self.syncs = nn.ModuleList(WeightedSync(l, L) for l in range(L))
        else:  # "sequential", eq. 5: the time pass gets its own (fine-tuned) copy of each attention
            self.syncs = nn.ModuleList()
            self.time_attn = nn.ModuleList(copy.deepcopy(b.attn) for b in self.base.blocks)

    def sync_parameters(self):
        """What stage 2 trains: the sync layers (or, for `sequential`, the time-pass attention)."""
        return list(self.time_attn.parameters()) if self.cfg.sync == "sequential" else list(self.syncs.parameters())

    def streams(self, x_noisy, known, mask, sigma):
        """Runs every block and sync. Returns (x^v, x^t) [B, V, T, N, D] and (c^v, c^t) [B, D]."""
        base = self.base
        B, V, T = x_noisy.shape[:3]
        x = base.embed_input(x_noisy, known, mask)                       # [B, V, T, N, D]
        s, c_t = base.conditioning(sigma, DYNAMIC)
        c_v = s + base.context_embed.weight[FREEZE_TIME]
        rope_t, rope_v = base.rope(T, x.device), base.rope(V, x.device)
        x_v = x_t = x
        for l, blk in enumerate(base.blocks):
            if self.cfg.sync == "sequential":
                y = blk(x_v, c_v, rope_v, "view")                        # y_l = x_l + φ^v(x_l; c^v)
                x_v = x_t = blk(y, c_t, rope_t, "time", attn=self.time_attn[l])  # x_l+1 = y_l + φ^t(y_l; c^t)
                continue
            y_v, y_t = both(x.device, lambda: blk(x_v, c_v, rope_v, "view"),   # view stream: columns
                            lambda: blk(x_t, c_t, rope_t, "time"))              # time stream: rows (concurrently on CUDA)
            x_v, x_t = self.syncs[l](y_v, y_t, s)
        return (x_v, x_t), (c_v, c_t)

    def forward(self, x_noisy, known, mask, sigma) -> torch.Tensor:
        """x_noisy, known: [B, V, T, H, W, 3] in [-1, 1]; mask: [B, V, T] bool; sigma: [B].

        Returns the velocity [B, V, T, H, W, 3]: the mean of the two streams' heads, each with its
        own context (so an untrained soft sync is the mean of the base model on rows and columns).
        """
        (x_v, x_t), (c_v, c_t) = self.streams(x_noisy, known, mask, sigma)
        out = (self.base.head(x_v, c_v) + self.base.head(x_t, c_t)) / 2
        return velocity(out, x_noisy, known, mask, sigma, self.cfg.prediction)


def build_model(cfg: GridConfig) -> TwoStreamModel:
    return TwoStreamModel(cfg)
