"""The grid ops as `torch.library` custom ops (namespace `fourreal`).

Their default implementation (every device) is the PyTorch twin; `register_fake` lets
torch.compile and torch.export trace them; the ONNX exporter turns them into nodes of the
`fourreal.ops` domain. When the compiled extension is loaded, `backend.register_cuda_kernels()`
adds CUDA implementations that call our kernels instead of the twins.

Device kernels (the twins on CPU, ours on CUDA) go on the dispatcher directly through `IMPL`, not through
`custom_op`'s own kernel registry: that one wraps every call in `torch._disable_dynamo`, whose first call
imports torch._dynamo (with sympy and the FX shape machinery) — 4–8 s inside the first denoising step of
every fresh `generate` process on the GPU box (issue 5). A direct backend-key kernel takes precedence over
the custom op's composite default, so the ops run without that import.
"""
from __future__ import annotations

import torch

from . import fp8, twins


def _grid_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                    axis: str) -> torch.Tensor:
    return twins.grid_attention(q, k, v, cos, sin, axis).contiguous()


def _grid_attention_fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                        axis: str) -> torch.Tensor:
    return twins.grid_attention_fp8(q, k, v, cos, sin, axis).contiguous()


def _modulated_layernorm(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    return twins.modulated_layernorm(x, shift, scale, eps).contiguous()


def _modulated_layernorm_fp8(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
                             eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return fp8.modulated_layernorm_fp8_twin(x, shift, scale, eps)


def _gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    return twins.gated_residual(x, y, gate).contiguous()


def _soft_sync(y_v: torch.Tensor, y_t: torch.Tensor, mod: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    x_v, x_t = twins.soft_sync(y_v, y_t, mod, weight, bias, eps)
    return x_v.contiguous(), x_t.contiguous()


def _hard_sync(y_v: torch.Tensor, y_t: torch.Tensor, mod: torch.Tensor, weight: torch.Tensor,
               bias: torch.Tensor) -> torch.Tensor:
    return twins.hard_sync(y_v, y_t, mod, weight, bias).contiguous()


TWINS = {"grid_attention": _grid_attention, "grid_attention_fp8": _grid_attention_fp8,
         "modulated_layernorm": _modulated_layernorm, "modulated_layernorm_fp8": _modulated_layernorm_fp8,
         "gated_residual": _gated_residual, "soft_sync": _soft_sync, "hard_sync": _hard_sync}
(grid_attention, grid_attention_fp8, modulated_layernorm, modulated_layernorm_fp8, gated_residual, soft_sync,
 hard_sync) = (
    torch.library.custom_op(f"fourreal::{name}", fn, mutates_args=()) for name, fn in TWINS.items())


def _like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(t, memory_format=torch.contiguous_format)


grid_attention.register_fake(lambda q, k, v, cos, sin, axis: _like(q))
grid_attention_fp8.register_fake(lambda q, k, v, cos, sin, axis: _like(q))
modulated_layernorm.register_fake(lambda x, shift, scale, eps: _like(x))
modulated_layernorm_fp8.register_fake(lambda x, shift, scale, eps: (
    x.new_empty(x.numel() // x.shape[-1], x.shape[-1], dtype=torch.float8_e4m3fn),
    x.new_empty(x.numel() // x.shape[-1], 1, dtype=torch.float32)))
gated_residual.register_fake(lambda x, y, gate: _like(x))
soft_sync.register_fake(lambda y_v, y_t, mod, weight, bias, eps: (_like(y_v), _like(y_t)))
hard_sync.register_fake(lambda y_v, y_t, mod, weight, bias: _like(y_v))

IMPL = torch.library.Library("fourreal", "IMPL")      # backend-key kernels (see the module docstring)


def register_kernels(device_key: str, kernels: dict) -> None:
    """Registers `kernels` ({op name: function}) for a dispatch key ("CPU", "CUDA")."""
    for name, fn in kernels.items():
        IMPL.impl(name, fn, device_key)


register_kernels("CPU", TWINS)
