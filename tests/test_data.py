"""Synthetic 4D data: scenes with ground truth, pseudo-4D grids, the reprojection metric. Small sizes: CPU seconds."""
from __future__ import annotations

import os
from importlib import resources

import pytest
import torch

from fourreal_rt.data import (TEST_SEEDS, TRAIN_SEEDS, VAL_SEEDS, render_batch, render_grid, sample_scene,
                              split_of)
from fourreal_rt.data import scenes as S
from fourreal_rt.data.consistency import reprojection_error
from fourreal_rt.data.pseudo4d import pseudo4d_from_scene, pseudo4d_grid, sample_affine_path


@pytest.fixture(scope="module")
def grid():
    return render_grid(7, V=5, T=4, H=24, W=40)


def test_seed_splits():
    splits = [set(map(int, (r.start, r.stop - 1))) for r in (TRAIN_SEEDS, VAL_SEEDS, TEST_SEEDS)]
    ranges = sorted([TRAIN_SEEDS, VAL_SEEDS, TEST_SEEDS], key=lambda r: r.start)
    for a, b in zip(ranges, ranges[1:]):
        assert a.stop <= b.start                                              # disjoint
    assert all(len(s) == 2 for s in splits)
    assert (split_of(0), split_of(9_999_999), split_of(10_000_000), split_of(20_000_999)) == \
        ("train", "train", "val", "test")
    with pytest.raises(ValueError):
        split_of(10_001_000)


def test_photos_ship_with_skimage():
    folder = resources.files("skimage") / "data"
    for name, _ in S.PHOTOS:
        assert (folder / name).is_file(), name                                # in the wheel: no download
    photos = S._photos()
    assert len(photos) == len(S.PHOTOS)
    assert all(p.dtype == torch.uint8 and p.shape[0] == 3 for p, _ in photos)


def test_determinism():
    a = render_grid(3, V=2, T=3, H=16, W=24)
    b = render_grid(3, V=2, T=3, H=16, W=24)
    c = render_grid(4, V=2, T=3, H=16, W=24)
    for k in ("frames", "depth", "cam_to_world"):
        assert torch.equal(a[k], b[k]), k
    assert not torch.allclose(a["frames"], c["frames"])
    assert torch.equal(sample_scene(3).textures, sample_scene(3).textures)


@pytest.mark.parametrize("V,T,H,W,aa", [(5, 4, 24, 40, True), (3, 2, 17, 23, False), (1, 1, 16, 24, True)])
def test_shapes_and_ranges(V, T, H, W, aa):
    g = render_grid(11, V=V, T=T, H=H, W=W, antialias=aa)
    assert g["frames"].shape == (V, T, H, W, 3) and g["frames"].dtype == torch.float32
    assert g["depth"].shape == (V, T, H, W) and g["depth"].dtype == torch.float32
    assert g["K"].shape == (3, 3) and g["cam_to_world"].shape == (V, 4, 4)
    assert 0 <= g["frames"].min() and g["frames"].max() <= 1
    assert torch.isfinite(g["depth"]).all() and (g["depth"] > 0).all()
    R = g["cam_to_world"][:, :3, :3]
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3).expand(V, 3, 3), atol=1e-5)


def test_cameras_look_at_the_scene_centre():
    scene = sample_scene(5)
    g = render_grid(scene, V=4, T=1, H=24, W=40)
    w2c = torch.linalg.inv(g["cam_to_world"])                                 # [V, 4, 4]
    X = w2c[:, :3, :3] @ scene.cam_target + w2c[:, :3, 3]                     # [V, 3]
    uv = (X @ g["K"].T)[:, :2] / X[:, 2:]
    assert torch.allclose(uv, torch.tensor([20.0, 12.0]).expand(4, 2), atol=1e-3)


def test_rows_are_fixed_view_and_columns_freeze_time():
    scene = sample_scene(12)
    # cameras: one pose per view, independent of t; with all cameras equal a column is one frame repeated
    g = render_grid(scene.still_camera(), V=4, T=3, H=16, W=24)
    assert torch.equal(g["frames"], g["frames"][:1].expand_as(g["frames"]))
    # with still objects a row is one frame repeated
    g = render_grid(scene.frozen(), V=3, T=4, H=16, W=24)
    assert torch.equal(g["frames"], g["frames"][:, :1].expand_as(g["frames"]))
    # frozen() keeps the t = 0 state
    g0 = render_grid(scene, V=3, T=4, H=16, W=24)
    assert torch.allclose(g["frames"][:, 0], g0["frames"][:, 0], atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2, 10_000_000, 20_000_000])
def test_objects_and_camera_move(seed):
    g = render_grid(seed, V=4, T=4, H=24, W=40)
    f = g["frames"]
    assert (f[0, 1:] - f[0, :1]).abs().amax() > 0.2                           # time moves objects (row 0)
    assert (f[1:, 0] - f[:1, 0]).abs().amax() > 0.2                           # the camera moves (column 0)
    pos = g["cam_to_world"][:, :3, 3]
    assert (pos[1:] - pos[:1]).norm(dim=-1).min() > 0.05


def test_batch_and_explicit_positions_match(grid):
    b = render_batch([7, 8], V=5, T=4, H=24, W=40)
    assert b["frames"].shape == (2, 5, 4, 24, 40, 3)
    assert torch.allclose(b["frames"][0], grid["frames"], atol=1e-5)
    # view 2 of 5 and time 3 of 4, asked for directly (as when extending a grid)
    one = render_grid(7, V=1, T=1, H=24, W=40, view_pos=torch.tensor([0.5]), times=torch.tensor([1.0]))
    assert torch.allclose(one["frames"][0, 0], grid["frames"][2, 3], atol=1e-5)
    assert torch.allclose(one["depth"][0, 0], grid["depth"][2, 3], atol=1e-4)


def test_pseudo4d_grid():
    video = torch.rand(5, 20, 36, 3)                                          # [T, H, W, 3]
    g = pseudo4d_grid(video, V=6, seed=3)
    assert g.shape == (6, 5, 20, 36, 3)
    assert torch.equal(g[0], video)
    assert (g[1:] - video).abs().mean() > 0.01                                # the other views are warped
    assert torch.equal(g, pseudo4d_grid(video, V=6, seed=3))
    assert not torch.equal(g, pseudo4d_grid(video, V=6, seed=4))
    theta = sample_affine_path(4, 6, 20, 36, seed=0)                          # [B, V, 2, 3]
    steps = (theta[:, 1:] - theta[:, :-1]).abs().amax((-1, -2))               # smooth: similar steps
    assert (steps.amax(1) < 3 * steps.amin(1) + 1e-4).all()
    batch = pseudo4d_grid(torch.rand(2, 3, 20, 36, 3), V=4, seed=0)
    assert batch.shape == (2, 4, 3, 20, 36, 3)


def test_pseudo4d_from_scene_row0():
    g = pseudo4d_from_scene(9, V=3, T=3, H=16, W=24, seed=0)
    row0 = render_grid(9, V=3, T=3, H=16, W=24)["frames"][0]
    assert torch.allclose(g[0], row0, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 2])
def test_reprojection_metric(seed):
    g = render_grid(seed, V=4, T=2, H=36, W=64)
    args = (g["depth"], g["K"], g["cam_to_world"])
    gt = reprojection_error(g["frames"], *args)
    assert gt["valid_fraction"] > 0.7            # true depths agree across views: geometry is consistent
    assert gt["mae"] < 0.02 and gt["psnr"] > 30  # anti-aliasing / resampling only
    shifted = g["frames"].clone()
    shifted[1:] = torch.roll(shifted[1:], 3, dims=3)                          # views 1.. moved by 3 pixels
    bad = reprojection_error(shifted, *args)
    assert bad["mae"] > 1.5 * gt["mae"] and bad["psnr"] < gt["psnr"] - 3
    assert gt["mae_per_pair"].shape == (3,)
