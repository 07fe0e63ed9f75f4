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
    key = (threading.get_ident(), index)      # per thread (PyTorch hands streams out from a pool, so two threads may
    side = _side.get(key)                     # still share one: then their work is ordered, not wrong)
    if side is None:
        with _lock:
            side = _side.setdefault(key, torch.cuda.Stream(index))
    return side


def _record(x, stream: torch.cuda.Stream) -> None:
    if isinstance(x, torch.Tensor):
        x.record_stream(stream)
    elif isinstance(x, (tuple, list)):
        for t in x:
            _record(t, stream)


def both(device: torch.device, f, g):
    """(f(), g()). On a CUDA device with the switch on, in inference (no autograd, not traced by torch.compile or
    torch.export), g runs on a side stream that first waits for the current stream's work, and the current stream
    waits for g's work before this returns (also when f raises); elsewhere f then g, in order.

    Memory: what g reads was made on the current stream, which waits for g before it goes on, so it is not reused
    under g; what g returns is marked as used by the current stream (`record_stream`), so the side stream does not
    reuse it while the current stream still reads it. Not inside a CUDA-graph capture: there every allocation comes
    from the graph's own pool on the one capturing stream, and a recorded block would only be freed at the capture's
    end (a layer's output held for each of the L layers)."""
    if (device.type != "cuda" or not backend.settings["two_streams"] or torch.is_grad_enabled()
            or torch.compiler.is_compiling()):
        return f(), g()
    index = device.index if device.index is not None else torch.cuda.current_device()
    main = torch.cuda.current_stream(index)
    side = _side_stream(index)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        b = g()
    try:
        a = f()
    finally:
        main.wait_stream(side)
    if not torch.cuda.is_current_stream_capturing():
        _record(b, main)
    return a, b
