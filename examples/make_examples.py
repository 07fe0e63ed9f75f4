"""Makes the example inputs from a held-out TEST scene of fourreal_rt.data (not a training seed).

    python examples/make_examples.py            # writes examples/in_row.mp4, examples/in_col.mp4

in_row.mp4: view 0 of the scene (camera still, objects moving), 8 frames;
in_col.mp4: time 0 of the scene (time frozen, camera moving along the arc), 8 frames.
Rendered at 144x256 (2x the model's 72x128); generate resizes them on read.
"""
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import make_video  # noqa: E402

from fourreal_rt.data.scenes import TEST_SEEDS, render_grid  # noqa: E402

SEED = TEST_SEEDS[7]


def main():
    out = render_grid(SEED, V=8, T=8, H=144, W=256)
    frames = (out["frames"].numpy() * 255).round().astype(np.uint8)     # [V, T, H, W, 3]
    make_video(HERE / "in_row.mp4", frames[0], 8)
    make_video(HERE / "in_col.mp4", frames[:, 0], 8)
    print(f"seed {SEED}: wrote {HERE / 'in_row.mp4'} and {HERE / 'in_col.mp4'}")


if __name__ == "__main__":
    main()
