"""Rectified flow: x_σ = (1 - σ) x_0 + σ ε, velocity v = ε - x_0; σ = 1 is noise, σ = 0 data.

Euler steps from σ = 1 to 0. Known frames are never noised: they enter the model clean and are
written back after every step, so they come out exactly as given.
"""
from __future__ import annotations

import threading
from typing import Callable

import torch

DEFAULT_SHIFT = 60.0  # σ time shift of the schedule (SD3) that `generate` uses: chosen on 32 VALIDATION grids, 16 steps,
                      # for the shipped model from 30, 40, 60 (25.85, 25.93, 26.05 dB; benchmarks/RESULTS.md)


def sigma_schedule(steps: int, shift: float = 1.0) -> torch.Tensor:
    """[steps + 1] decreasing from 1 to 0; shift > 1 spends more steps at high noise (SD3 time shift)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return (shift * t / (1 + (shift - 1) * t)).float()


def initial_noise(shape, seed: int) -> torch.Tensor:
    """Noise drawn on the CPU from `seed`, so a seed gives the same start on every device (taken from a
    `prefetch_noise` of the same shape and seed if one was started)."""
    key = (tuple(shape), int(seed))
    with _lock:
        pending = _prefetched.pop(key, None)
    return pending.result() if pending is not None else _draw(*key)


def _draw(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


_prefetched: dict = {}   # at most one: (shape, seed) -> Future of initial_noise(shape, seed)
_lock = threading.Lock()


def prefetch_noise(shape, seed: int) -> None:
    """Starts drawing `initial_noise(shape, seed)` in a thread (the CPU draw of a paper-preset window takes
    0.1-0.3 s), for a caller that knows its first window before its model is loaded; the next `initial_noise` with
    the same shape and seed takes it. One at a time: a new prefetch drops an earlier one not taken (a run that
    failed before its first window); an error is re-raised by the `initial_noise` that takes it."""
    from ..runtime.threads import in_background
    key = (tuple(shape), int(seed))
    fut = in_background(_draw, *key, name="fourreal-noise", wait_at_exit=True)
    with _lock:
        _prefetched.clear()
        _prefetched[key] = fut


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


_RANGE = torch.arange(256, dtype=torch.float32) / 127.5 - 1.0   # [256]: each byte's value, computed on the CPU


def to_model_range(frames_u8: torch.Tensor) -> torch.Tensor:
    """uint8 frames -> float32 in [-1, 1], the same values on every device (looked up in a table made on the CPU:
    CUDA's division by a scalar can round a value one float32 step away from the CPU's)."""
    return _RANGE.to(frames_u8.device)[frames_u8.int()]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> uint8 frames (rounded, clamped)."""
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def fill(denoiser: Callable, known_u8: torch.Tensor, mask: torch.Tensor, *, steps: int, seed: int,
         shift: float, device="cpu", dtype=None, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """The unknown frames of uint8 grids generated; the known ones returned exactly as given.

    known_u8: uint8 [B, V, T, H, W, 3] on the CPU (values where mask is False are ignored); mask: bool [B, V, T].
    The denoiser runs on `device`. Returns uint8 [B, V, T, H, W, 3] on the CPU.
    """
    with torch.inference_mode():                                      # converted on the device: 1 byte a value moved
        known_d, mask_d = known_u8.to(device), mask.to(device)
        m = mask_d[..., None, None, None]                             # [B, V, T, 1, 1, 1]
        known = torch.where(m, to_model_range(known_d), torch.zeros((), device=device))
        x0 = sample(denoiser, known, mask_d, steps=steps, seed=seed, shift=shift, dtype=dtype, progress=progress)
        return torch.where(m, known_d, to_uint8(x0)).cpu()
