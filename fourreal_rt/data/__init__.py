"""Training and evaluation data with ground truth (paper §3.3).

- `scenes`: procedural animated 3D scenes ray-cast into [V, T, H, W, 3] grids with depth and cameras;
- `pseudo4d`: pseudo-4D grids from ordinary videos by continuous 2D affine sweeps;
- `consistency`: the reprojection error of a predicted grid under the true geometry.
"""
from .consistency import reprojection_error
from .pseudo4d import pseudo4d_batch, pseudo4d_from_scene, pseudo4d_from_scenes, pseudo4d_grid
from .scenes import (TEST_SEEDS, TRAIN_SEEDS, VAL_SEEDS, Scene, SceneSampler, camera_poses, intrinsics,
                     object_poses, render_batch, render_grid, sample_scene, split_of, stack_scenes)

__all__ = ["TEST_SEEDS", "TRAIN_SEEDS", "VAL_SEEDS", "Scene", "SceneSampler", "camera_poses", "intrinsics",
           "object_poses", "render_batch", "render_grid", "sample_scene", "split_of", "stack_scenes",
           "pseudo4d_batch", "pseudo4d_from_scene", "pseudo4d_from_scenes", "pseudo4d_grid",
           "reprojection_error"]
