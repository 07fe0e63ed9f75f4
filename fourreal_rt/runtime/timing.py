"""Timing helpers shared by the engine builder and the benchmarks."""
from __future__ import annotations

import time


def cuda_times(fn, iters: int = 20, warmup: int = 3) -> list[float]:
    """Milliseconds of each of `iters` calls of fn(), timed with CUDA events after `warmup` calls."""
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return times


def cpu_times(fn, iters: int = 3, warmup: int = 1) -> list[float]:
    """Milliseconds of each of `iters` calls of fn() by the wall clock, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def median(xs):
    s = sorted(xs)
    return s[len(s) // 2]
