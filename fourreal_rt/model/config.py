"""Model configuration and the preset registry (DESIGN.md §3)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

SYNC_KINDS = ("soft", "hard", "average", "weighted", "sequential")


@dataclass(frozen=True)
class GridConfig:
    frame_h: int = 72            # pixels; the paper's base resolution
    frame_w: int = 128
    patch: int = 8               # pixel-space patchify, no VAE
    views: int = 8               # V: grid rows (viewpoints) the model sees at once
    times: int = 8               # T: grid columns (timesteps) the model sees at once
    dim: int = 192               # D: token width
    depth: int = 6               # L: number of DiT blocks (and sync layers)
    heads: int = 6               # head_dim 32
    mlp_ratio: float = 4.0
    sync: str = "soft"           # one of SYNC_KINDS
    rope_theta: float = 100.0    # short axes (≤ 64 frames, ≤ 64 patches): a small base spreads the frequencies
    max_frames: int = 64         # longest row/column the frame-index RoPE is tabulated for
    prediction: str = "v"        # head output: "v" velocity, or "x" clean frames (x-prediction, turned into
                                 # a velocity; suits pixel-space patches as wide as the model, JiT 2025)

    def __post_init__(self):
        if self.sync not in SYNC_KINDS:
            raise ValueError(f"sync must be one of {SYNC_KINDS}, got {self.sync!r}")
        if self.prediction not in ("v", "x"):
            raise ValueError(f"prediction must be 'v' or 'x', got {self.prediction!r}")
        if self.frame_h % self.patch or self.frame_w % self.patch:
            raise ValueError(f"frame {self.frame_h}x{self.frame_w} is not divisible by patch {self.patch}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def grid_hw(self) -> tuple[int, int]:
        """Token grid of one frame: (frame_h / patch, frame_w / patch)."""
        return self.frame_h // self.patch, self.frame_w // self.patch

    @property
    def tokens_per_frame(self) -> int:
        hp, wp = self.grid_hw
        return hp * wp

    def replace(self, **kw) -> "GridConfig":
        return dataclasses.replace(self, **kw)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "GridConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)


PRESETS: dict[str, GridConfig] = {
    # tests: a few blocks, d <= 64, CPU seconds
    "tiny": GridConfig(frame_h=16, frame_w=24, patch=8, views=4, times=4, dim=32, depth=2, heads=2),
    # the shipped default: 8x8 grid of 72x128 frames, must run on a 2-core CPU
    "small": GridConfig(),
    # speed: 24 blocks x 1024 channels, 8 heads x 128, 288x512 at patch 16 (576 tokens a frame)
    "paper": GridConfig(frame_h=288, frame_w=512, patch=16, dim=1024, depth=24, heads=8),
}
