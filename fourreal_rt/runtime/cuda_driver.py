"""CUDA's driver and primary context, started ahead of PyTorch.

PyTorch creates device 0's primary context (cuInit, then the context: ~0.2 s on an H100) on its first CUDA call,
after `import torch` (~1.5 s) and the package's own imports. `start()` makes it in a thread through the driver API
(ctypes, no torch) while those imports run; PyTorch's runtime then finds the context made, as the runtime API works in
the device's primary context.
"""
from __future__ import annotations

import ctypes
import os
from concurrent.futures import Future


def start(device: int = 0) -> Future | None:
    """Starts the driver and device `device`'s primary context in a background thread: a Future of whether it was made
    (False where the driver refuses, e.g. no GPU), or None where there is no CUDA driver to load. The interpreter's
    exit waits for it (a driver call cut off at exit is not safe). Like PyTorch, which sets it before its own cuInit,
    asks for lazy module loading unless the environment says otherwise (the driver reads it once, at cuInit)."""
    os.environ.setdefault("CUDA_MODULE_LOADING", "LAZY")
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    from .threads import in_background
    return in_background(_retain_primary_context, libcuda, device, name="fourreal-cuda-start", wait_at_exit=True)


def _retain_primary_context(libcuda, device: int) -> bool:
    dev, ctx = ctypes.c_int(), ctypes.c_void_p()
    return (libcuda.cuInit(0) == 0 and libcuda.cuDeviceGet(ctypes.byref(dev), device) == 0
            and libcuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) == 0)   # kept for the process's life
