"""Grid ops: attention along a grid axis, adaLN modulate, gated residual, soft/hard sync.

The model calls the functions exported here. They are the pure-PyTorch twins
(`fourreal_rt.ops.twins`) unless the compiled CUDA kernels are present and enabled.
"""
from .twins import (AXES, apply_rope, gated_residual, grid_attention, hard_sync,  # noqa: F401
                    modulated_layernorm, rope_split, rope_tables, soft_sync)
