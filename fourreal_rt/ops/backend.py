"""Lazy loading of the compiled kernels (`fourreal_rt._C`) and their registration as the CUDA implementations of
the `fourreal::` custom ops.

Nothing is compiled or imported at `import fourreal_rt`; the first call to `load()` tries the extension once and
remembers the outcome. When it loads, `register_cuda_kernels()` gives each `fourreal::` op (custom.py) a CUDA
kernel that calls `torch.ops.fourreal_C.*` (csrc/); inputs the kernels do not take (fp16, very wide rows) fall
back to the op's PyTorch twin. CPU tensors always run the twins.

Run-time switches live in `settings`:
  attention_backend: the attention core between our RoPE/pack and gather kernels: "cudnn" (default, the fastest
      measured on H100; see benchmarks/RESULTS.md), "flash", "sdpa" (PyTorch's own choice), "efficient".
  fused_mlp: the MLP's GELU in cuBLASLt's GEMM epilogue (ops/fused.py) inside `use_custom_ops()` on CUDA.
  gemm_residual: the blocks' gated residual in the epilogue of the GEMM before it (ops/fused.py,
      csrc/linear_residual.cpp); False runs the GEMM and then our gated-residual kernel.
  two_streams: a layer's view-stream and time-stream blocks run concurrently on two CUDA streams (ops/streams.py).
"""
from __future__ import annotations

import importlib

_state: dict = {}

ATTENTION_BACKENDS = {"cudnn": 0, "flash": 1, "sdpa": 2, "efficient": 3}
settings = {"attention_backend": "cudnn", "fused_mlp": True, "gemm_residual": True, "two_streams": True}

_MAX_ROW = 2048  # widest token row the row-wise kernels hold in registers (csrc/modulated_layernorm_kernel.cu)


def load():
    """The compiled module, or None if it is not built (CPU installs) or fails to load."""
    if "module" not in _state:
        try:
            import torch  # noqa: F401  (the extension links against libtorch: load it first)
            _state["module"] = importlib.import_module("fourreal_rt._C")
            _state["error"] = None
        except (ImportError, OSError) as e:
            _state["module"], _state["error"] = None, str(e)
        if _state["module"] is not None:
            register_cuda_kernels()
    return _state["module"]


def available() -> bool:
    """True when the kernels are built, loaded and registered and a CUDA device is present."""
    import torch
    return torch.cuda.is_available() and load() is not None


def status() -> dict:
    mod = load()
    return {"present": mod is not None, "error": None if mod else _state.get("error"),
            "registered": bool(_state.get("registered")), "attention_backend": settings["attention_backend"]}


def _ok(*tensors, width: int | None = None) -> bool:
    import torch
    if any(t.dtype not in (torch.bfloat16, torch.float32) for t in tensors):
        return False
    return width is None or width <= _MAX_ROW


def register_cuda_kernels() -> bool:
    """Registers our CUDA kernels for the `fourreal::` ops (idempotent). False when `_C` is absent."""
    if _state.get("registered"):
        return True
    if load() is None:
        return False
    import torch

    from . import custom, twins  # noqa: F401  (custom defines the fourreal:: ops)

    C = torch.ops.fourreal_C

    def grid_attention(q, k, v, cos, sin, axis):
        # q, k, v: [B, V, T, N, H, hd] -> [B, V, T, N, H, hd]
        if not _ok(q) or q.shape[-1] % 2:
            return twins.grid_attention(q, k, v, cos, sin, axis).contiguous()
        core = ATTENTION_BACKENDS[settings["attention_backend"]]   # the kernel falls back to SDPA's own choice
                                                                   # where a core declines (fp32, flash hd % 8)
        return C.grid_attention(q, k, v, cos, sin, twins.AXES.index(axis), core)

    def grid_attention_fp8(q, k, v, cos, sin, axis):
        # q, k, v: [B, V, T, N, H, hd] -> [B, V, T, N, H, hd]; the bf16 core where cuDNN's FP8 one is not to be had
        from . import attention_fp8
        if _ok(q) and attention_fp8.usable(q):
            try:
                return attention_fp8.grid_attention_fp8(q, k, v, cos, sin, axis)
            except attention_fp8.Unsupported as e:
                attention_fp8.decline(q, e)
        return grid_attention(q, k, v, cos, sin, axis)

    def modulated_layernorm(x, shift, scale, eps):
        # x: [B, ..., D]; shift, scale: [B, D]
        if not _ok(x, width=x.shape[-1]):
            return twins.modulated_layernorm(x, shift, scale, eps).contiguous()
        return C.modulated_layernorm(x, shift, scale, eps)

    def modulated_layernorm_fp8(x, shift, scale, eps):
        # x: [B, ..., D]; shift, scale: [B, D] -> (q [M, D] e4m3, row scales [M, 1] fp32)
        from . import fp8
        if not _ok(x, width=x.shape[-1]):
            return fp8.modulated_layernorm_fp8_twin(x, shift, scale, eps)
        D = x.shape[-1]
        q = torch.empty(x.numel() // D, D, dtype=torch.float8_e4m3fn, device=x.device)
        row_scale = torch.empty(x.numel() // D, 1, dtype=torch.float32, device=x.device)
        C.modulated_layernorm_fp8(x, shift, scale, eps, q, row_scale)
        return q, row_scale

    def gated_residual(x, y, gate):
        # x, y: [B, ..., D]; gate: [B, D]
        if not _ok(x, y) or x.dtype != y.dtype:
            return twins.gated_residual(x, y, gate).contiguous()
        return C.gated_residual(x, y, gate)

    def soft_sync(y_v, y_t, mod, weight, bias, eps):
        # y_v, y_t: [B, ..., D]; mod: [B, 4D]; weight: [2D, 2D]; bias: [2D]
        if not _ok(y_v, y_t, width=y_v.shape[-1]) or weight.dtype != y_v.dtype:
            x_v, x_t = twins.soft_sync(y_v, y_t, mod, weight, bias, eps)
            return x_v.contiguous(), x_t.contiguous()
        return C.soft_sync(y_v, y_t, mod, weight, bias, eps)

    def hard_sync(y_v, y_t, mod, weight, bias):
        # y_v, y_t: [B, ..., D]; mod: [B, 2D]; weight: [D, 2D]; bias: [D]
        if not _ok(y_v, y_t) or weight.dtype != y_v.dtype:
            return twins.hard_sync(y_v, y_t, mod, weight, bias).contiguous()
        return C.hard_sync(y_v, y_t, mod, weight, bias)

    custom.register_kernels("CUDA", {"grid_attention": grid_attention, "grid_attention_fp8": grid_attention_fp8,
                                     "modulated_layernorm": modulated_layernorm,
                                     "modulated_layernorm_fp8": modulated_layernorm_fp8,
                                     "gated_residual": gated_residual, "soft_sync": soft_sync, "hard_sync": hard_sync})

    # fake (meta) implementations of the compiled ops, so that they trace too
    torch.library.register_fake("fourreal_C::modulated_layernorm")(
        lambda x, shift, scale, eps: torch.empty_like(x, memory_format=torch.contiguous_format))
    torch.library.register_fake("fourreal_C::gated_residual")(
        lambda x, y, gate: torch.empty_like(x, memory_format=torch.contiguous_format))
    torch.library.register_fake("fourreal_C::grid_attention")(
        lambda q, k, v, cos, sin, axis, backend: torch.empty_like(q, memory_format=torch.contiguous_format))
    torch.library.register_fake("fourreal_C::soft_sync")(
        lambda y_v, y_t, mod, weight, bias, eps: (torch.empty_like(y_v, memory_format=torch.contiguous_format),
                                                  torch.empty_like(y_t, memory_format=torch.contiguous_format)))
    torch.library.register_fake("fourreal_C::hard_sync")(
        lambda y_v, y_t, mod, weight, bias: torch.empty_like(y_v, memory_format=torch.contiguous_format))
    torch.library.register_fake("fourreal_C::linear_residual")(
        lambda x, a, weight, bias, gate: torch.empty_like(x, memory_format=torch.contiguous_format))
    torch.library.register_fake("fourreal_C::rope_pack")(lambda *args: None)
    torch.library.register_fake("fourreal_C::rope_pack_fp8")(lambda *args: None)
    torch.library.register_fake("fourreal_C::modulated_layernorm_fp8")(lambda *args: None)
    torch.library.register_fake("fourreal_C::grid_gather_fp8")(lambda *args: None)
    torch.library.register_fake("fourreal_C::quantize_fp8_rowwise")(lambda *args: None)
    _state["registered"] = True
    return True
