"""Pseudo-4D grids from ordinary videos (paper §3.3, data source 1: "2D transformed videos").

A continuous sequence of V 2D affine transforms — identity at v = 0, growing smoothly (linearly in
translation, rotation, log-zoom and shear) to a random end transform at v = V - 1 — is applied to every
frame of a video, so that the view axis mimics a camera sweep while the time axis keeps the video's own
motion:

    grid[v, t] = warp(video[t], A_v)      # [V, T, H, W, 3];  grid[0] == video exactly

The transforms are built in aspect-corrected normalised coordinates (x spans [-W/H, W/H], y spans
[-1, 1]), so a rotation is a rotation on screen, then converted to `F.affine_grid`'s normalised
coordinates. Random draws use the given `torch.Generator` (on its own device), or a CPU one seeded by
`seed`, so a seed gives the same transforms on any device.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F

from .scenes import Scene, render_batch


def _generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    if generator is not None:
        return generator
    g = torch.Generator()
    g.manual_seed(0 if seed is None else int(seed))
    return g


def sample_affine_path(B: int, V: int, H: int, W: int, generator: torch.Generator | None = None, *,
                       seed: int | None = None, max_shift: float = 0.2, max_rot_deg: float = 8.0,
                       zoom: tuple[float, float] = (0.9, 1.3), max_shear: float = 0.06,
                       device="cpu") -> torch.Tensor:
    """theta [B, V, 2, 3] for `F.affine_grid` (output -> input coordinates), identity at v = 0.

    End transform of each sequence: shift up to max_shift (in half-heights) in x and y, rotation up to
    ±max_rot_deg, zoom factor in `zoom` (> 1 zooms in), shear up to ±max_shear. View v applies the
    fraction v / (V - 1) of each (zoom in log space).
    """
    g = _generator(generator, seed)
    u = torch.rand(B, 6, generator=g, device=g.device).cpu()                   # [B, 6] in [0, 1)
    shift = (2 * u[:, 0:2] - 1) * max_shift                                    # [B, 2]
    rot = (2 * u[:, 2] - 1) * math.radians(max_rot_deg)                        # [B]
    logz = math.log(zoom[0]) + u[:, 3] * (math.log(zoom[1]) - math.log(zoom[0]))
    shear = (2 * u[:, 4:6] - 1) * max_shear                                    # [B, 2]

    s = torch.linspace(0, 1, V) if V > 1 else torch.zeros(1)                   # [V]
    s = s[None, :]                                                             # [1, V]
    ang, z = rot[:, None] * s, torch.exp(-logz[:, None] * s)                   # [B, V]; sampling scale = 1/zoom
    c, si = torch.cos(ang), torch.sin(ang)
    kx, ky = shear[:, None, 0] * s, shear[:, None, 1] * s
    # M = Rot @ Shear @ Zoom, in aspect-corrected coordinates (output -> input)
    m00, m01 = c - si * ky, c * kx - si
    m10, m11 = si + c * ky, si * kx + c
    a = W / H
    # theta = D^-1 M D with D = diag(a, 1): converts to affine_grid's [-1, 1] x [-1, 1] coordinates
    theta = torch.stack([
        torch.stack([m00 * z, m01 * z / a, shift[:, None, 0] * s / a], -1),
        torch.stack([m10 * z * a, m11 * z, shift[:, None, 1] * s], -1)], -2)  # [B, V, 2, 3]
    theta[:, 0] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])            # exact identity at v = 0
    return theta.to(device)


def apply_affine_path(videos: torch.Tensor, theta: torch.Tensor, padding_mode: str = "reflection") -> torch.Tensor:
    """videos [B, T, H, W, 3], theta [B, V, 2, 3] -> grids [B, V, T, H, W, 3]; grid[:, 0] is the video itself."""
    B, T, H, W, C = videos.shape
    V = theta.shape[1]
    x = videos.permute(0, 1, 4, 2, 3).reshape(B, 1, T * C, H, W)               # frames as channels
    x = x.expand(B, V, T * C, H, W).reshape(B * V, T * C, H, W)
    grid = F.affine_grid(theta.reshape(B * V, 2, 3).to(x), [B * V, T * C, H, W], align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)  # [B*V, T*C, H, W]
    y = y.reshape(B, V, T, C, H, W).permute(0, 1, 2, 4, 5, 3).contiguous()     # [B, V, T, H, W, C]
    y[:, 0] = videos
    return y


def pseudo4d_grid(video: torch.Tensor, V: int = 8, generator: torch.Generator | None = None, *,
                  seed: int | None = None, padding_mode: str = "reflection", **ranges) -> torch.Tensor:
    """A pseudo-4D grid from a video [T, H, W, 3] -> [V, T, H, W, 3], or a batch [B, T, H, W, 3] ->
    [B, V, T, H, W, 3]. `ranges` go to `sample_affine_path` (max_shift, max_rot_deg, zoom, max_shear)."""
    single = video.dim() == 4
    videos = video[None] if single else video
    B, T, H, W, _ = videos.shape
    theta = sample_affine_path(B, V, H, W, generator, seed=seed, device=videos.device, **ranges)
    out = apply_affine_path(videos.float(), theta, padding_mode)
    return out[0] if single else out


def pseudo4d_batch(videos: torch.Tensor, V: int = 8, generator: torch.Generator | None = None, *,
                   seed: int | None = None, padding_mode: str = "reflection", **ranges) -> torch.Tensor:
    """videos [B, T, H, W, 3] -> pseudo-4D grids [B, V, T, H, W, 3] (grid[:, 0] = videos)."""
    return pseudo4d_grid(videos, V, generator, seed=seed, padding_mode=padding_mode, **ranges)


def pseudo4d_from_scenes(scenes: Iterable[int] | Iterable[Scene] | Scene, V: int = 8, T: int = 8, H: int = 72,
                         W: int = 128, device="cpu", generator: torch.Generator | None = None, *,
                         seed: int | None = None, **ranges) -> torch.Tensor:
    """Pseudo-4D grids [B, V, T, H, W, 3] whose source videos are synthetic scenes' row 0 (the
    fixed-view video of camera 0): only that row is rendered."""
    row0 = render_batch(scenes, 1, T, H, W, device, view_pos=torch.zeros(1))["frames"][:, 0]   # [B, T, H, W, 3]
    return pseudo4d_grid(row0, V, generator, seed=seed, **ranges)


def pseudo4d_from_scene(scene: int | Scene, V: int = 8, T: int = 8, H: int = 72, W: int = 128, device="cpu",
                        generator: torch.Generator | None = None, *, seed: int | None = None, **ranges) -> torch.Tensor:
    """One scene (or seed) -> pseudo-4D grid [V, T, H, W, 3] with grid[0] = the scene's row 0."""
    return pseudo4d_from_scenes([scene], V, T, H, W, device, generator, seed=seed, **ranges)[0]
