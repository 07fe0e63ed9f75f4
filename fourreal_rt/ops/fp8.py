"""FP8 (e4m3) linears with row-wise scales, and FP8 attention, selectable at run time.

`convert_to_fp8(model)` runs the attention cores in e4m3 (ops/attention_fp8.py) and swaps the block linears qkv,
fc1 and fc2 (DEFAULT_TARGETS; proj too on request) for `FP8Linear`: the weight is quantized once per output channel,
the activations per token on the fly (our kernel `fourreal_C::quantize_fp8_rowwise` on CUDA, `quantize_rowwise_twin`
elsewhere; the LayerNorm before qkv and fc1 writes its rows as e4m3 itself, `Quantized`), and the product runs in
`torch._scaled_mm` with fp32 scales and a bf16 output. On CPU, `FP8Linear` emulates the same arithmetic (quantize,
dequantize, bf16/fp32 matmul), so the FP8 path can be tested anywhere. Its speed and quality cost are measured in
benchmarks/bench_step.py and benchmarks/quality.py (RESULTS.md); it is off unless asked for.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import backend
from .twins import E4M3_MAX, to_e4m3
# The block linears `--fp8` runs in e4m3. proj stays bf16: its gated residual rides in its bf16 GEMM's epilogue
# (fused.linear_residual), which is faster than an e4m3 GEMM plus a residual pass (paper step on an H100: 131.3 ms
# with these three, 132.9 ms with all four; benchmarks/RESULTS.md).
DEFAULT_TARGETS = ("qkv", "fc1", "fc2")
ALL_TARGETS = ("qkv", "proj", "fc1", "fc2")


class Quantized(NamedTuple):
    """Rows in e4m3 with a scale each, as an FP8Linear takes its input: q [M, K] float8_e4m3fn and scale [M, 1] fp32
    with the values ≈ q * scale; shape: the [..., K] the M rows came from. An FP8 block's normalized activations
    (`ops.modulated_layernorm_fp8`) are produced this way, so that no separate quantization pass reads them back."""
    q: torch.Tensor
    scale: torch.Tensor
    shape: torch.Size


def quantize_rowwise_twin(x: torch.Tensor, gelu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [M, K] -> (q [M, K] float8_e4m3fn, scale [M, 1] fp32), x ≈ q * scale (of tanh-GELU(x) if gelu)."""
    xf = x.float()
    if gelu:
        xf = F.gelu(xf, approximate="tanh")
    amax = xf.abs().amax(-1, keepdim=True).clamp(min=1e-12)            # [M, 1]
    return to_e4m3(xf, amax), amax / E4M3_MAX


def quantize_rowwise(x: torch.Tensor, gelu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """As `quantize_rowwise_twin`, on our CUDA kernel when it is loaded. x: [M, K]."""
    if x.is_cuda and x.dim() == 2 and x.dtype in (torch.bfloat16, torch.float32) and backend.load() is not None:
        q = torch.empty(x.shape, dtype=torch.float8_e4m3fn, device=x.device)   # [M, K]
        scale = torch.empty(x.shape[0], 1, dtype=torch.float32, device=x.device)  # [M, 1]
        torch.ops.fourreal_C.quantize_fp8_rowwise(x, gelu, q, scale)
        return q, scale
    return quantize_rowwise_twin(x, gelu)


def modulated_layernorm_fp8_twin(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor,
                                 eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """twins.modulated_layernorm quantized row-wise from its fp32 values (no bf16 rounding in between), as
    `fourreal_C::modulated_layernorm_fp8` does. x: [B, ..., D] -> (q [M, D] e4m3, scale [M, 1] fp32), M = x.numel() / D."""
    from .twins import modulated_layernorm
    h = modulated_layernorm(x.float(), shift, scale, eps)                   # [B, ..., D] fp32
    return quantize_rowwise_twin(h.reshape(-1, x.shape[-1]))


class FP8Linear(nn.Module):
    """y = x W^T + b with e4m3 operands: W per output channel, x per token, fp32 accumulation, bf16 output."""

    def __init__(self, linear: nn.Linear, quantize: bool = True, out_dtype: torch.dtype | None = None):
        """quantize=False: an empty shell of `linear`'s shapes for stored e4m3 weights to be loaded into
        (`load_state_dict(..., assign=True)`); out_dtype: the output dtype (default: the weight's)."""
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach()                                           # [N, K]
        if quantize:
            wq, ws = quantize_rowwise(w)                                     # [N, K] e4m3, [N, 1]
        else:
            wq = torch.empty(w.shape, dtype=torch.float8_e4m3fn, device=w.device)
            ws = torch.empty(w.shape[0], 1, device=w.device)
        self.register_buffer("weight_q", wq)
        self.register_buffer("weight_scale", ws.reshape(1, -1).contiguous())  # [1, N]
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.out_dtype = out_dtype or w.dtype
        self._bias_in_mm = True  # cleared if this torch's row-wise _scaled_mm takes no bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3 row-wise"

    def forward(self, x: torch.Tensor | Quantized) -> torch.Tensor:
        """x: [..., K] (or its Quantized rows) -> [..., N]."""
        if isinstance(x, Quantized):
            return self.forward_quantized(x.q, x.scale).view(*x.shape[:-1], self.out_features)
        lead = x.shape[:-1]
        xq, xs = quantize_rowwise(x.reshape(-1, self.in_features))          # [M, K], [M, 1]
        return self.forward_quantized(xq, xs).view(*lead, self.out_features)

    def forward_quantized(self, xq: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """xq: [M, K] e4m3, xs: [M, 1] fp32 -> [M, N] in the layer's dtype."""
        if not xq.is_cuda:  # emulation: the same quantized operands, dequantized
            w = self.weight_q.float() * self.weight_scale.t()               # [N, K]
            return F.linear(xq.float() * xs, w, None if self.bias is None else self.bias.float()).to(self.out_dtype)
        if self._bias_in_mm:
            try:
                return torch._scaled_mm(xq, self.weight_q.t(), scale_a=xs, scale_b=self.weight_scale, bias=self.bias,
                                        out_dtype=self.out_dtype, use_fast_accum=True)
            except RuntimeError:
                self._bias_in_mm = False
        out = torch._scaled_mm(xq, self.weight_q.t(), scale_a=xs, scale_b=self.weight_scale,
                               out_dtype=self.out_dtype, use_fast_accum=True)
        return out if self.bias is None else out + self.bias


def convert_to_fp8(model: nn.Module, targets=DEFAULT_TARGETS, attention: bool = True, quantize: bool = True,
                   out_dtype: torch.dtype | None = None) -> int:
    """Swaps every nn.Linear whose attribute name is in `targets` (and whose sizes are multiples of 16, as the FP8
    GEMM needs) for an FP8Linear, in place, and with `attention` runs each attention core in e4m3 too
    (ops.grid_attention_fp8: cuDNN's FP8 SDPA on CUDA, emulated elsewhere). quantize, out_dtype: as FP8Linear's
    (quantize=False: shells for stored e4m3 weights, an engine's). Returns how many linears were swapped."""
    for m in model.modules():
        if hasattr(m, "fp8_attention"):
            m.fp8_attention = attention
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (name in targets and type(child) is nn.Linear and child.in_features % 16 == 0
                    and child.out_features % 16 == 0):
                setattr(parent, name, FP8Linear(child, quantize, out_dtype))
                swapped += 1
    return swapped
