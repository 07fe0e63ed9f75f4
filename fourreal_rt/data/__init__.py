"""Training and evaluation data with ground truth: synthetic 4D scenes, pseudo-4D grids, consistency metric."""
from .scenes import (TEST_SEEDS, TRAIN_SEEDS, VAL_SEEDS, Scene, SceneSampler, camera_poses, intrinsics,
                     object_poses, render_batch, render_grid, sample_scene, split_of, stack_scenes)

__all__ = ["TEST_SEEDS", "TRAIN_SEEDS", "VAL_SEEDS", "Scene", "SceneSampler", "camera_poses", "intrinsics",
           "object_poses", "render_batch", "render_grid", "sample_scene", "split_of", "stack_scenes"]
