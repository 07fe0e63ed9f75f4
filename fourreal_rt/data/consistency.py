"""3D consistency of a generated grid, measured against ground-truth geometry.

For every time t and every view pair (a, b) (by default neighbours (v, v + 1)): unproject view a's
pixels with the TRUE depth of view a, project them into view b, bilinearly sample view b's PREDICTED
frame there and compare with view a's PREDICTED pixel. Only pixels that land inside view b and are not
occluded there count: the projected depth must agree with view b's true depth to a relative tolerance
(compared in inverse depth, which interpolates exactly across planes). On the ground-truth frames the
error is small (anti-aliasing and resampling only, since shading is view-independent); a grid whose
views disagree with the geometry scores worse.

Camera conventions as in `scenes.py`: OpenCV axes in cam_to_world, pixel (i, j) centred at
(j + 0.5, i + 0.5) in K's coordinates, depth = camera z.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def neighbour_pairs(V: int) -> list[tuple[int, int]]:
    return [(v, v + 1) for v in range(V - 1)]


def reproject(depth_a: torch.Tensor, K: torch.Tensor, c2w_a: torch.Tensor, c2w_b: torch.Tensor):
    """depth_a [N, T, H, W], K [3, 3], c2w_a / c2w_b [N, 4, 4] -> (uv_b [N, T, H, W, 2] pixel coords, z_b [N, T, H, W])."""
    N, T, H, W = depth_a.shape
    dev = depth_a.device
    ii, jj = torch.meshgrid(torch.arange(H, device=dev) + 0.5, torch.arange(W, device=dev) + 0.5, indexing="ij")
    pix = torch.stack([jj, ii, torch.ones_like(ii)], -1)                       # [H, W, 3]
    rays = pix @ torch.linalg.inv(K).T                                         # [H, W, 3], z = 1
    X_a = depth_a[..., None] * rays                                            # [N, T, H, W, 3] camera a
    a_to_b = torch.linalg.inv(c2w_b) @ c2w_a                                   # [N, 4, 4]
    X_b = torch.einsum("nij,nthwj->nthwi", a_to_b[:, :3, :3], X_a) + a_to_b[:, None, None, None, :3, 3]
    z_b = X_b[..., 2]
    proj = X_b @ K.T                                                           # [N, T, H, W, 3]
    uv_b = proj[..., :2] / proj[..., 2:3].clamp(min=1e-6)
    return uv_b, z_b


def reprojection_error(frames_pred: torch.Tensor, depth_true: torch.Tensor, K: torch.Tensor,
                       cam_to_world: torch.Tensor, pairs: str | Sequence[tuple[int, int]] = "neighbours",
                       rel_tol: float = 0.02) -> dict:
    """frames_pred [V, T, H, W, 3] in [0, 1], depth_true [V, T, H, W], K [3, 3], cam_to_world [V, 4, 4].

    Returns dict(mae, psnr, valid_fraction: floats over all pairs, times and valid pixels;
    mae_per_pair [P] tensor; pairs: the pairs used).
    """
    V, T, H, W, _ = frames_pred.shape
    if isinstance(pairs, str):
        assert pairs == "neighbours", pairs
        pairs = neighbour_pairs(V)
    pairs = list(pairs)
    ia = torch.tensor([p[0] for p in pairs], device=frames_pred.device)
    ib = torch.tensor([p[1] for p in pairs], device=frames_pred.device)
    frames_pred, depth_true, K, cam_to_world = (x.float() for x in (frames_pred, depth_true, K, cam_to_world))
    uv_b, z_b = reproject(depth_true[ia], K, cam_to_world[ia], cam_to_world[ib])   # [P, T, H, W, 2], [P, T, H, W]
    Pn = len(pairs)

    grid = torch.stack([2 * uv_b[..., 0] / W - 1, 2 * uv_b[..., 1] / H - 1], -1).reshape(Pn * T, H, W, 2)
    img_b = frames_pred[ib].reshape(Pn * T, H, W, 3).permute(0, 3, 1, 2)       # [P*T, 3, H, W]
    inv_b = 1.0 / depth_true[ib].reshape(Pn * T, 1, H, W).clamp(min=1e-6)      # [P*T, 1, H, W]
    samp = F.grid_sample(torch.cat([img_b, inv_b], 1), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)                                  # [P*T, 4, H, W]
    samp = samp.reshape(Pn, T, 4, H, W)
    col_b = samp[:, :, :3].permute(0, 1, 3, 4, 2)                              # [P, T, H, W, 3]
    inv_s = samp[:, :, 3]                                                      # [P, T, H, W]

    u, v = uv_b.unbind(-1)
    inside = (u >= 0.5) & (u <= W - 0.5) & (v >= 0.5) & (v <= H - 0.5) & (z_b > 1e-6)
    visible = (inv_s * z_b - 1).abs() < rel_tol                               # |z_b/d_b - 1| < tol, in inverse depth
    valid = (inside & visible).float()                                         # [P, T, H, W]

    diff = (frames_pred[ia] - col_b).abs()                                     # [P, T, H, W, 3]
    n = valid.sum().clamp(min=1) * 3
    mae = (diff.sum(-1) * valid).sum() / n
    mse = ((diff ** 2).sum(-1) * valid).sum() / n
    mae_pair = (diff.sum(-1) * valid).sum((1, 2, 3)) / (valid.sum((1, 2, 3)).clamp(min=1) * 3)
    return dict(mae=float(mae), psnr=float(10 * torch.log10(1.0 / mse.clamp(min=1e-12))),
                valid_fraction=float(valid.mean()), mae_per_pair=mae_pair, pairs=pairs)
