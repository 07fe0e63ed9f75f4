"""Fusions across a linear layer, used by the model where a kernel of ours or a library epilogue removes a pass.

`mlp(h, fc1, fc2)` is the block's MLP, fc2(GELU_tanh(fc1(h))); `mlp(h, fc1, fc2, x, gate)` is the block's gated
residual over it, x + gate ⊙ MLP(h), and `gated_linear(x, a, linear, gate)` = x + gate ⊙ linear(a) the one over
attention's output projection. Outside `use_custom_ops()`, on CPU, or while tracing (torch.compile / export) they
are exactly those expressions (the residual through `ops.gated_residual`). Inside `use_custom_ops()` on CUDA:
  - nn.Linear layers: fc1's GELU runs in cuBLASLt's GEMM epilogue (`torch._addmm_activation`), which saves one
    read and one write of the [tokens, 4D] hidden activation; the gated residual runs in the epilogue of the last
    linear's GEMM (`fourreal_C::linear_residual`, csrc/linear_residual.cpp: x is the GEMM's C, the gate folded into
    the weight rows), which saves writing the linear's output and reading it back (backend.settings["gemm_residual"]);
  - FP8Linear layers (ops/fp8.py): the GELU is fused into the row-wise e4m3 quantization of fc2's input; the
    residual stays our gated-residual kernel; fc1's input comes quantized from the LayerNorm (fp8.Quantized).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from . import _custom, backend
from .fp8 import FP8Linear, quantize_rowwise


def _fast(h: torch.Tensor) -> bool:
    return _custom["on"] and h.is_cuda and not torch.compiler.is_compiling()


def _residual(x, y, gate):
    return y if x is None else ops.gated_residual(x, y, gate)


def linear_residual(x: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, bias, gate: torch.Tensor) -> torch.Tensor:
    """x + gate ⊙ F.linear(a, weight, bias). x: [B, ..., N]; a: [B, ..., K]; weight: [N, K]; bias: [N]; gate: [B, N]."""
    if (backend.settings["gemm_residual"] and _fast(a) and a.dtype in (torch.bfloat16, torch.float32)
            and x.dtype == a.dtype == weight.dtype and backend.load() is not None):
        return torch.ops.fourreal_C.linear_residual(x, a, weight, bias, gate)
    return ops.gated_residual(x, F.linear(a, weight, bias), gate)


def gated_linear(x: torch.Tensor, a: torch.Tensor, linear: nn.Module, gate: torch.Tensor) -> torch.Tensor:
    """x + gate ⊙ linear(a) for an nn.Linear or FP8Linear `linear`. x: [B, ..., N]; a: [B, ..., K]; gate: [B, N]."""
    if type(linear) is nn.Linear:
        return linear_residual(x, a, linear.weight, linear.bias, gate)
    return ops.gated_residual(x, linear(a), gate)


def mlp(h: torch.Tensor, fc1: nn.Module, fc2: nn.Module, x: torch.Tensor | None = None,
        gate: torch.Tensor | None = None) -> torch.Tensor:
    """fc2(GELU_tanh(fc1(h))), or with x and gate given, x + gate ⊙ that. h: [B, ..., D] -> [B, ..., D_out];
    x: [B, ..., D_out]; gate: [B, D_out]. h may be an FP8 block's Quantized rows (fc1 then an FP8Linear)."""
    if isinstance(fc1, FP8Linear):
        a = fc1(h)                                                             # [B, ..., hidden]
        if isinstance(fc2, FP8Linear) and _fast(a) and backend.load() is not None:
            aq, a_scale = quantize_rowwise(a.reshape(-1, a.shape[-1]), gelu=True)   # GELU fused into the quantization
            return _residual(x, fc2.forward_quantized(aq, a_scale).view(*a.shape[:-1], -1), gate)
        return _residual(x, fc2(F.gelu(a, approximate="tanh")), gate)
    if _fast(h) and type(fc1) is nn.Linear and type(fc2) is nn.Linear:
        return linear_mlp(h, fc1.weight, fc1.bias, fc2.weight, fc2.bias, x, gate)
    return _residual(x, fc2(F.gelu(fc1(h), approximate="tanh")), gate)


def linear_mlp(h: torch.Tensor, fc1_w, fc1_b, fc2_w, fc2_b, x: torch.Tensor | None = None,
               gate: torch.Tensor | None = None) -> torch.Tensor:
    """`mlp` from the weights (the engine's functional layer uses it too). h: [B, ..., D] -> [B, ..., D_out];
    fc1_w: [hidden, D], fc2_w: [D_out, hidden]; x, gate as in `mlp`."""
    if (_fast(h) and backend.settings["fused_mlp"] and fc1_b is not None
            and h.dtype in (torch.bfloat16, torch.float16)):
        lead = h.shape[:-1]
        a = torch._addmm_activation(fc1_b, h.reshape(-1, h.shape[-1]), fc1_w.t(), use_gelu=True)  # [M, hidden]
        a = a.view(*lead, -1)                                                   # GELU in cuBLASLt's epilogue
    else:
        a = F.gelu(F.linear(h, fc1_w, fc1_b), approximate="tanh")               # [B, ..., hidden]
    return F.linear(a, fc2_w, fc2_b) if x is None else linear_residual(x, a, fc2_w, fc2_b, gate)
