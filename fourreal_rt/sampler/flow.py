"""Rectified flow: x_σ = (1 - σ) x_0 + σ ε, velocity v = ε - x_0; σ = 1 is noise, σ = 0 data.

Euler steps from σ = 1 to 0. Known frames are never noised: they enter the model clean and are
written back after every step, so they come out exactly as given.
"""
from __future__ import annotations

from typing import Callable

import torch


def sigma_schedule(steps: int, shift: float = 1.0) -> torch.Tensor:
    """[steps + 1] decreasing from 1 to 0; shift > 1 spends more steps at high noise (SD3 time shift)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * t / (1 + (shift - 1) * t)).float()


def initial_noise(shape, seed: int) -> torch.Tensor:
    """Noise drawn on the CPU from `seed`, so a seed gives the same start on every device."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g)


@torch.no_grad()
def sample(denoiser: Callable, known: torch.Tensor, mask: torch.Tensor, *, steps: int, seed: int,
           shift: float = 1.0, dtype=None, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Generate a grid.

    denoiser(x_noisy, known, mask, sigma [B]) -> velocity. known: [B, V, T, H, W, 3] in [-1, 1]
    (zeros where unknown); mask: [B, V, T] bool. Returns x_0 [B, V, T, H, W, 3] (float32, CPU
    or the known tensor's device) with known frames equal to `known`.
    """
    device = known.device
    dtype = dtype or known.dtype
    m = mask[..., None, None, None]                                  # [B, V, T, 1, 1, 1]
    x = initial_noise(known.shape, seed).to(device)
    x = torch.where(m, known.float(), x)
    sigmas = sigma_schedule(steps, shift).to(device)
    known_d = known.to(dtype)
    for i in range(steps):
        s, s_next = sigmas[i], sigmas[i + 1]
        v = denoiser(x.to(dtype), known_d, mask, s.expand(x.shape[0]).to(dtype)).float()
        x = x + (s_next - s) * v
        x = torch.where(m, known.float(), x)
        if progress is not None:
            progress(i + 1)
    return x
