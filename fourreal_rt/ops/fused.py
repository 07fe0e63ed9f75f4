"""Fusions across a linear layer, used by the model where a kernel of ours or a library epilogue removes a pass.

`mlp(h, fc1, fc2)` is the block's MLP, fc2(GELU_tanh(fc1(h))). Outside `use_custom_ops()`, on CPU, or while
tracing (torch.compile / export) it is exactly that expression. Inside `use_custom_ops()` on CUDA:
  - nn.Linear layers: fc1's GELU runs in cuBLASLt's GEMM epilogue (`torch._addmm_activation`), which saves one
    read and one write of the [tokens, 4D] hidden activation;
  - FP8Linear layers (ops/fp8.py): the GELU is fused into the row-wise e4m3 quantization of fc2's input.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _custom, backend
from .fp8 import FP8Linear, quantize_rowwise


def _fast(h: torch.Tensor) -> bool:
    return _custom["on"] and h.is_cuda and not torch.compiler.is_compiling()


def mlp(h: torch.Tensor, fc1: nn.Module, fc2: nn.Module) -> torch.Tensor:
    """fc2(GELU_tanh(fc1(h))). h: [..., D] -> [..., D_out]."""
    if _fast(h):
        lead = h.shape[:-1]
        h2 = h.reshape(-1, h.shape[-1])                                        # [M, D]
        if isinstance(fc1, FP8Linear) and isinstance(fc2, FP8Linear) and backend.load() is not None:
            a = fc1(h2)                                                        # [M, hidden]
            aq, a_scale = quantize_rowwise(a, gelu=True)                       # GELU fused into the quantization
            return fc2.forward_quantized(aq, a_scale).view(*lead, -1)
        if type(fc1) is nn.Linear and type(fc2) is nn.Linear:
            return linear_mlp(h, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    return fc2(F.gelu(fc1(h), approximate="tanh"))


def linear_mlp(h: torch.Tensor, fc1_w, fc1_b, fc2_w, fc2_b) -> torch.Tensor:
    """`mlp` from the weights (the engine's functional layer uses it too). h: [..., D] -> [..., D_out];
    fc1_w: [hidden, D], fc2_w: [D_out, hidden]."""
    if (_fast(h) and backend.settings["fused_mlp"] and fc1_b is not None
            and h.dtype in (torch.bfloat16, torch.float16)):
        lead = h.shape[:-1]
        a = torch._addmm_activation(fc1_b, h.reshape(-1, h.shape[-1]), fc1_w.t(), use_gelu=True)  # [M, hidden]
        return F.linear(a, fc2_w, fc2_b).view(*lead, -1)                       # GELU in cuBLASLt's epilogue
    return F.linear(F.gelu(F.linear(h, fc1_w, fc1_b), approximate="tanh"), fc2_w, fc2_b)
