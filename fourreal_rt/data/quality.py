"""Scoring generated grids against ground truth, and the naive baselines they must beat.

Only generated frames count (v >= 1 and t >= 1): row 0 and column 0 are the inputs.
"""
from __future__ import annotations

import numpy as np


def given_mask(V: int, T: int) -> np.ndarray:
    """bool [V, T]: the cells the inputs give, row 0 (in_row) and column 0 (in_col)."""
    m = np.zeros((V, T), bool)
    m[0, :] = m[:, 0] = True
    return m


def copy_nearest(grid: np.ndarray) -> np.ndarray:
    """Each unknown frame copies the nearest input frame: [v, 0] if t < v, else [0, t]. grid: [V, T, H, W, 3]."""
    V, T = grid.shape[:2]
    out = grid.copy()
    for v in range(1, V):
        for t in range(1, T):
            out[v, t] = grid[v, 0] if t < v else grid[0, t]
    return out


def additive(grid: np.ndarray) -> np.ndarray:
    """I[v, t] = I[v, 0] + I[0, t] - I[0, 0] (camera change + motion change, added). uint8 [V, T, H, W, 3]."""
    g = grid.astype(np.int16)
    out = g[:, :1] + g[:1, :] - g[:1, :1]
    out[0, :], out[:, 0] = g[0, :], g[:, 0]
    return np.clip(out, 0, 255).astype(np.uint8)


def fill_grids(model, truth_u8: np.ndarray, *, steps: int, seed: int = 0, device="cpu", dtype=None,
               batch: int = 8, shift: float | None = None) -> np.ndarray:
    """The model's grids given only row 0 and column 0 of each true grid. truth_u8: uint8 [B, V, T, H, W, 3].

    Batch i's noise is seeded with seed + i (the first grid of each batch), as in benchmarks/quality.py.
    shift: the σ schedule's time shift (default: the pipeline's, what `generate` uses).
    """
    import torch
    from ..sampler import DEFAULT_SHIFT, fill
    shift = DEFAULT_SHIFT if shift is None else shift
    B, V, T = truth_u8.shape[:3]
    mask = torch.from_numpy(given_mask(V, T))                                       # [V, T]
    out = []
    for i in range(0, B, batch):
        truth = torch.from_numpy(truth_u8[i:i + batch])                             # [b, V, T, H, W, 3]
        out.append(fill(model, truth, mask.expand(truth.shape[0], V, T), steps=steps, seed=seed + i, shift=shift,
                        device=device, dtype=dtype).numpy())
    return np.concatenate(out)


def psnr(pred: np.ndarray, true: np.ndarray) -> float:
    """PSNR (dB) over the generated frames of one grid. uint8 [V, T, H, W, 3]."""
    sel = ~given_mask(*pred.shape[:2])
    err = (pred[sel].astype(np.float64) - true[sel].astype(np.float64)) ** 2
    return float(10 * np.log10(255.0 ** 2 / max(err.mean(), 1e-10)))


def ssim(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean SSIM over the generated frames of one grid (scikit-image, RGB). uint8 [V, T, H, W, 3]."""
    from skimage.metrics import structural_similarity
    sel = ~given_mask(*pred.shape[:2])
    return float(np.mean([structural_similarity(p, t, channel_axis=-1, data_range=255)
                          for p, t in zip(pred[sel], true[sel])]))
