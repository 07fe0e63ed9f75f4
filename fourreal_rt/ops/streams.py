"""The two streams of a layer at once (CUDA): the view-stream block and the time-stream block read the same weights
but not each other's tokens until the sync layer, so the time block can run on a side CUDA stream beside the view
block. Each block's kernels stay in order; what overlaps is one block's launch gaps, kernel tails and memory-bound
kernels with the other block's work. The outputs are bit for bit the sequential ones (same kernels, same inputs).

Inside a CUDA graph capture the fork and join become two parallel branches of the graph.
Switch: `backend.settings["two_streams"]` (default True).
"""
from __future__ import annotations

import threading

import torch

from . import backend

_side: dict = {}          # (thread, device index) -> the side stream
_lock = threading.Lock()


def _side_stream(index: int) -> torch.cuda.Stream:
    key = (threading.get_ident(), index)      # per thread: one thread's capture never meets another's launches
    with _lock:
        if key not in _side:
            _side[key] = torch.cuda.Stream(index)
        return _side[key]


def both(device: torch.device, f, g):
    """(f(), g()). On a CUDA device with the switch on, in inference (no autograd, not traced by torch.compile or
    torch.export), g runs on a side stream that first waits for the current stream's work, and the current stream
    waits for g's work before anything after this returns; elsewhere f then g, in order.

    Tensors g makes are allocated on the side stream; they are only freed after the join, and a side-stream block is
    only reused by the side stream after a later fork (which waits for the current stream), so no extra
    synchronisation is needed for the usual layer pattern (both outputs consumed on the current stream)."""
    if (device.type != "cuda" or not backend.settings["two_streams"] or torch.is_grad_enabled()
            or torch.compiler.is_compiling()):
        return f(), g()
    index = device.index if device.index is not None else torch.cuda.current_device()
    main = torch.cuda.current_stream(index)
    side = _side_stream(index)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        b = g()
    a = f()
    main.wait_stream(side)
    return a, b
