"""The grid ops as `torch.library` custom ops (namespace `fourreal`).

Their default implementation (every device) is the PyTorch twin; `register_fake` lets
torch.compile and torch.export trace them; the ONNX exporter turns them into nodes of the
`fourreal.ops` domain. When the compiled extension is loaded, `backend.register_cuda_kernels()`
adds CUDA implementations that call our kernels instead of the twins.
"""
from __future__ import annotations

import torch

from . import twins


@torch.library.custom_op("fourreal::grid_attention", mutates_args=())
def grid_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   axis: str) -> torch.Tensor:
    return twins.grid_attention(q, k, v, cos, sin, axis).contiguous()


@grid_attention.register_fake
def _(q, k, v, cos, sin, axis):
    return torch.empty_like(q, memory_format=torch.contiguous_format)


@torch.library.custom_op("fourreal::modulated_layernorm", mutates_args=())
def modulated_layernorm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    return twins.modulated_layernorm(x, shift, scale, eps).contiguous()


@modulated_layernorm.register_fake
def _(x, shift, scale, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("fourreal::gated_residual", mutates_args=())
def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    return twins.gated_residual(x, y, gate).contiguous()


@gated_residual.register_fake
def _(x, y, gate):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("fourreal::soft_sync", mutates_args=())
def soft_sync(y_v: torch.Tensor, y_t: torch.Tensor, mod: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
              eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    x_v, x_t = twins.soft_sync(y_v, y_t, mod, weight, bias, eps)
    return x_v.contiguous(), x_t.contiguous()


@soft_sync.register_fake
def _(y_v, y_t, mod, weight, bias, eps):
    return (torch.empty_like(y_v, memory_format=torch.contiguous_format),
            torch.empty_like(y_t, memory_format=torch.contiguous_format))


@torch.library.custom_op("fourreal::hard_sync", mutates_args=())
def hard_sync(y_v: torch.Tensor, y_t: torch.Tensor, mod: torch.Tensor, weight: torch.Tensor,
              bias: torch.Tensor) -> torch.Tensor:
    return twins.hard_sync(y_v, y_t, mod, weight, bias).contiguous()


@hard_sync.register_fake
def _(y_v, y_t, mod, weight, bias):
    return torch.empty_like(y_v, memory_format=torch.contiguous_format)
