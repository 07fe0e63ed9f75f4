"""The first denoising step of a fresh process against the steady one (issue 5: where `generate`'s time goes).

A CLI run pays one-time costs that a steady-state step benchmark hides: cuDNN building (and runtime-compiling)
its attention plans for each new shape, cuBLAS handles, the kernels' first launch. Each configuration runs in a
fresh process on the preset's full grid with random bf16 weights: first step, then the median of the next ones,
all timed with a device synchronize (wall clock, as the CLI sees them).

  python benchmarks/first_step.py --preset paper            # GPU box
  python benchmarks/first_step.py --engine ENGINE_DIR       # an engine's first call: where its seconds go

With --engine: a fresh process loads the engine, then calls its denoiser three times (σ of the schedule), the first
call under the PyTorch profiler (CPU and CUDA): CPU seconds of the warm-up and the capture, the wait for the device
after them, the ops with the most CPU time of their own, the GPU's busy time (union of kernel intervals) against the call's span, the longest kernels and the
longest idle gaps between kernels with the kernels on either side.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CONFIGS = {"kernels+cudnn": (True, "cudnn"), "kernels+flash": (True, "flash"), "twins+cudnn": (False, "cudnn")}


def child(preset: str, config: str, steps: int, profile: bool = False) -> dict:
    import contextlib

    import torch

    from fourreal_rt.export.engine import kernels_status, sdpa_backend
    from fourreal_rt.model import PRESETS
    from fourreal_rt.model.twostream import TwoStreamModel
    from fourreal_rt.ops import backend, use_custom_ops

    custom, attn = CONFIGS[config]
    backend.settings["attention_backend"] = attn          # the core between our RoPE/pack and gather kernels
    t0 = time.perf_counter()
    cfg = PRESETS[preset]
    with torch.device("cuda"):
        model = TwoStreamModel(cfg).to(torch.bfloat16).eval()
    kern = kernels_status() if custom else None
    shape = (1, cfg.views, cfg.times, cfg.frame_h, cfg.frame_w, 3)
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(shape, generator=gen, device="cuda").to(torch.bfloat16)          # [1, V, T, H, W, 3]
    mask = torch.zeros(shape[:3], dtype=torch.bool, device="cuda")
    mask[:, 0] = mask[:, :, 0] = True
    sigma = torch.full((1,), 0.7, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    setup_s = time.perf_counter() - t0
    times = []
    with contextlib.ExitStack() as stack, torch.no_grad():
        if custom:
            stack.enter_context(use_custom_ops())
        stack.enter_context(sdpa_backend(attn))
        for i in range(steps):
            prof = None
            if profile and i == 0:
                prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                prof.__enter__()
            t1 = time.perf_counter()
            model(x, x, mask, sigma)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t1)
            if prof is not None:
                prof.__exit__(None, None, None)
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12), file=sys.stderr)
    return {"config": config, "device": torch.cuda.get_device_name(), "setup_s": round(setup_s, 2),
            "first_step_ms": round(times[0] * 1e3, 1), "second_step_ms": round(times[1] * 1e3, 1),
            "steady_step_ms": round(statistics.median(times[2:]) * 1e3, 1),
            "first_step_extra_ms": round((times[0] - statistics.median(times[2:])) * 1e3, 1), "kernels": kern}


def engine_child(path: str) -> dict:
    import torch

    from fourreal_rt.export.engine import load_engine
    from fourreal_rt.export.onnx_export import example_inputs

    t0 = time.perf_counter()
    eng = load_engine(path, "cuda")
    load_s = time.perf_counter() - t0
    den, cfg = eng.denoiser, eng.cfg
    x, known, mask, _ = example_inputs(cfg, dtype=torch.bfloat16, device="cuda")
    sigma = eng.manifest["sigmas"][0] if "sigmas" in eng.manifest else 0.9
    sigma = torch.full((1,), float(sigma), device="cuda").to(torch.bfloat16)
    torch.cuda.synchronize()
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])
    with prof:
        t1 = time.perf_counter()
        den(x, known, mask, sigma)
        t2 = time.perf_counter()
        torch.cuda.synchronize()
        t3 = time.perf_counter()
    later = []
    for _ in range(2):
        t4 = time.perf_counter()
        den(x, known, mask, sigma)
        torch.cuda.synchronize()
        later.append(time.perf_counter() - t4)
    kernels = sorted(((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                      if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start),
                     key=lambda k: k[0])
    busy, end, gaps = 0.0, None, []
    for a, b, name in kernels:                       # union of intervals; gaps where no kernel runs
        if end is None or a > end:
            if end is not None:
                gaps.append((a - end, prev, name))
            busy += b - a
            end = b
        elif b > end:
            busy += b - end
            end = b
        prev = name
    span = (kernels[-1][1] - kernels[0][0]) if kernels else 0.0
    longest = sorted(((b - a, n) for a, b, n in kernels), reverse=True)[:8]
    cpu_ops = sorted(((e.self_cpu_time_total, e.count, e.key) for e in prof.key_averages()), reverse=True)[:12]
    return {"load_s": round(load_s, 3), "engine_load": eng.timings,
            "top_cpu_ops_ms": [(round(t / 1e3, 1), n, k[:70]) for t, n, k in cpu_ops],
            "first_call_cpu_s": round(t2 - t1, 3), "first_call_wait_s": round(t3 - t2, 3),
            "graph_s": getattr(den.graphed, "timings", None), "later_calls_s": [round(v, 3) for v in later],
            "kernels": len(kernels), "gpu_busy_ms": round(busy / 1e3, 1), "gpu_span_ms": round(span / 1e3, 1),
            "gaps_total_ms": round(sum(g for g, *_ in gaps) / 1e3, 1),
            "longest_gaps_ms": [(round(g / 1e3, 2), p_[:60], n[:60]) for g, p_, n in sorted(gaps, reverse=True)[:10]],
            "longest_kernels_ms": [(round(d / 1e3, 2), n[:80]) for d, n in longest]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--profile", action="store_true", help="print the first step's most expensive ops (stderr)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help="an engine directory: profile its first call instead")
    a = ap.parse_args()
    if a.engine:
        print(json.dumps(engine_child(a.engine), indent=1), flush=True)
        return
    if a.child:
        print(json.dumps(child(a.preset, a.child, a.steps, a.profile)), flush=True)
        return
    for config in a.configs:          # a fresh process each: one-time costs are paid again
        p = subprocess.run([sys.executable, __file__, "--preset", a.preset, "--steps", str(a.steps),
                            "--child", config] + (["--profile"] if a.profile else []), capture_output=True, text=True)
        if a.profile:
            print(p.stderr[-6000:], file=sys.stderr)
        print(p.stdout.strip().splitlines()[-1] if p.returncode == 0 else
              json.dumps({"config": config, "error": (p.stderr.strip().splitlines() or ["?"])[-1][:300]}), flush=True)


if __name__ == "__main__":
    main()
