"""Grid ops: attention along a grid axis, adaLN modulate, gated residual, soft/hard sync.

The model calls the functions exported here. By default they are the pure-PyTorch twins
(`twins.py`: differentiable, used for training and on CPU). Inside `use_custom_ops()` they route to
the `torch.ops.fourreal.*` custom ops (`custom.py`), which export to ONNX as `fourreal.ops` nodes
and run our CUDA kernels when the compiled extension is loaded.
"""
from __future__ import annotations

import contextlib

from . import twins
from .twins import AXES, apply_rope, rope_split, rope_tables  # noqa: F401

_custom = {"on": False}


@contextlib.contextmanager
def use_custom_ops(on: bool = True):
    """Route the model's grid ops through the `fourreal::` custom ops while inside."""
    from . import custom  # noqa: F401  (registers the ops on first use)
    prev, _custom["on"] = _custom["on"], on
    try:
        yield
    finally:
        _custom["on"] = prev


def _route(name):
    twin = getattr(twins, name)

    def op(*args, **kwargs):
        if _custom["on"]:
            return getattr(__import__("torch").ops.fourreal, name)(*args, **kwargs)
        return twin(*args, **kwargs)
    op.__name__, op.__doc__ = name, twin.__doc__
    return op


grid_attention = _route("grid_attention")
grid_attention_fp8 = _route("grid_attention_fp8")   # e4m3 core (cuDNN's FP8 SDPA on CUDA; attention_fp8.py)
hard_sync = _route("hard_sync")
gated_residual = _route("gated_residual")


def modulated_layernorm(x, shift, scale, eps: float = 1e-6):
    if _custom["on"]:
        return __import__("torch").ops.fourreal.modulated_layernorm(x, shift, scale, eps)
    return twins.modulated_layernorm(x, shift, scale, eps)


def modulated_layernorm_fp8(x, shift, scale, eps: float = 1e-6):
    """modulated_layernorm written as an FP8 linear's input: fp8.Quantized rows of x [B, ..., D]."""
    from .fp8 import Quantized, modulated_layernorm_fp8_twin
    if _custom["on"]:
        q, s = __import__("torch").ops.fourreal.modulated_layernorm_fp8(x, shift, scale, eps)
    else:
        q, s = modulated_layernorm_fp8_twin(x, shift, scale, eps)
    return Quantized(q, s, x.shape)


def soft_sync(y_v, y_t, mod, weight, bias, eps: float = 1e-6):
    if _custom["on"]:
        return __import__("torch").ops.fourreal.soft_sync(y_v, y_t, mod, weight, bias, eps)
    return twins.soft_sync(y_v, y_t, mod, weight, bias, eps)
