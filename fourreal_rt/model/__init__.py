"""The grid model: config + presets, base DiT blocks, the two-stream model with its sync layers."""
from .blocks import DYNAMIC, FREEZE_TIME, BaseVideoModel, Block  # noqa: F401
from .config import PRESETS, SYNC_KINDS, GridConfig  # noqa: F401
from .twostream import AverageSync, HardSync, SoftSync, TwoStreamModel, WeightedSync, build_model  # noqa: F401
