"""One denoising step of the two-stream model: ours vs PyTorch eager vs torch.compile, in one process.

    python benchmarks/bench_step.py [--preset paper] [--iters 10] [--warmup 3] [--no-compile] [--no-fp8]

The model is the repo's TwoStreamModel (paper preset: 8 x 8 grid of 288 x 512 frames, 24 blocks x 1024 channels,
8 heads x 128, soft sync) with random non-zero weights (sync layers included), bf16, batch 1.
  eager    the model as written (PyTorch twins of the grid ops, SDPA with PyTorch's default backend);
  compile  torch.compile of that model;
  ours     the same model inside `use_custom_ops()`: our CUDA kernels (csrc/) for the grid ops, the MLP's GELU and
           the gated residuals in GEMM epilogues, each layer's two streams' blocks on two CUDA streams
           (ops/streams.py); "+graph" replays the step as one CUDA graph; "1 stream": the blocks one after the other
           (backend.settings["two_streams"] = False);
  ours fp8 ours with qkv, fc1, fc2 (or all four linears: "all") in e4m3 row-wise FP8Linear and the attention core in
           e4m3 (fourreal_rt/ops/fp8.py, ops/attention_fp8.py).
Each line: median of --iters CUDA-event timings after --warmup calls, TFLOP/s from the analytic count, the share
of the 989 TFLOP/s dense-bf16 floor, and speed-ups against eager and compile. Output error of each route against
an fp32 run of the same model closes the report (relative L2 and PSNR of the velocity).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_kernels import cuda_time, graphed, median  # noqa: E402
from fourreal_rt import ops  # noqa: E402
from fourreal_rt.model import PRESETS, TwoStreamModel  # noqa: E402
from fourreal_rt.model.blocks import IN_CHANNELS  # noqa: E402
from fourreal_rt.ops import backend, fp8  # noqa: E402

FLOOR_TFLOPS = 989.0  # H100/H200 dense bf16 datasheet rate


def step_flops(cfg, B: int = 1) -> float:
    """Matrix FLOPs of one denoiser call: both streams' blocks, syncs, patch embedding and the two heads."""
    N, D, p = cfg.tokens_per_frame, cfg.dim, cfg.patch
    tok = B * cfg.views * cfg.times * N                                   # tokens of one stream
    hidden = int(cfg.mlp_ratio * D)
    lin = 2 * tok * (3 * D * D + D * D + 2 * D * hidden)                  # qkv, proj, fc1, fc2
    att_time = 4 * tok * (cfg.times * N) * D                              # rows: sequences of T*N tokens
    att_view = 4 * tok * (cfg.views * N) * D                              # columns: sequences of V*N tokens
    sync = {"soft": 2 * tok * (2 * D) ** 2, "hard": 2 * tok * 2 * D * D}.get(cfg.sync, 0)
    blocks = cfg.depth * (2 * lin + att_time + att_view + sync)
    embed = 2 * tok * IN_CHANNELS * p * p * D
    heads = 2 * (2 * tok * D * 3 * p * p)
    return blocks + embed + heads


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-zero random weights everywhere (the zero-initialised adaLN and sync layers too), scaled so that 24 blocks
    keep activations of order one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() < 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
                continue
            std = 1.0 / math.sqrt(p.shape[-1])
            if ".ada." in name or name.startswith("base.final_ada"):
                std *= 0.3                                                 # modest shift/scale/gate
            elif name.startswith("syncs."):
                std *= 0.2                                                 # a soft sync that exchanges a little
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def inputs(cfg, device, dtype, seed: int = 1):
    g = torch.Generator(device).manual_seed(seed)
    shape = (1, cfg.views, cfg.times, cfg.frame_h, cfg.frame_w, 3)
    x = torch.randn(shape, generator=g, device=device).to(dtype)          # [B, V, T, H, W, 3]
    known = torch.randn(shape, generator=g, device=device).clamp(-1, 1).to(dtype)
    mask = torch.zeros(1, cfg.views, cfg.times, dtype=torch.bool, device=device)
    mask[:, 0] = mask[:, :, 0] = True                                     # row 0 and column 0 known
    sigma = torch.tensor([0.6], device=device)
    return x, known, mask, sigma


def kernel_breakdown(fn, top: int = 22):
    """Profiles one call of fn and prints GPU time by kernel family and the top kernels."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t > 0 and e.key and not e.key.startswith(("fourreal::", "fourreal_C::", "aten::", "cuda")):
            rows.append((t / 1e3, e.count, e.key))
    rows.sort(reverse=True)

    def family(name):
        n = name.lower()
        if "fourreal" in n:
            return "ours (csrc kernels)"
        if any(w in n for w in ("fmha", "cudnn", "flash", "attention", "sdpa")):
            return "attention core (cuDNN)"
        if any(w in n for w in ("gemm", "xmma", "cutlass", "sm90", "matmul", "ampere", "hopper")):
            return "GEMM (cuBLAS)"
        return "other (PyTorch elementwise etc.)"

    fams: dict = {}
    for ms, _, name in rows:
        fams[family(name)] = fams.get(family(name), 0.0) + ms
    total = sum(fams.values())
    print(f"GPU time by family ({total:.1f} ms in kernels):", flush=True)
    for k, v in sorted(fams.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<34} {v:8.2f} ms  {v / total * 100:5.1f}%", flush=True)
    print("top kernels:", flush=True)
    for ms, count, name in rows[:top]:
        print(f"  {ms:8.2f} ms  x{count:<4} {name[:110]}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    ap.add_argument("--sync", default="soft")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-fp8", action="store_true")
    ap.add_argument("--no-ref", action="store_true", help="skip the fp32 reference run (error report)")
    ap.add_argument("--no-profile", action="store_true", help="skip the per-kernel breakdown of ours")
    args = ap.parse_args()
    dev, bf = "cuda", torch.bfloat16
    cfg = PRESETS[args.preset].replace(sync=args.sync)
    flop = step_flops(cfg)
    print(json.dumps({"args": vars(args), "torch": torch.__version__, "device": torch.cuda.get_device_name(),
                      "cudnn": torch.backends.cudnn.version(), "kernels": backend.status(),
                      "tflop_per_step": round(flop / 1e12, 2)}), flush=True)
    assert backend.available(), "the compiled kernels did not load"

    model = randomize(TwoStreamModel(cfg)).to(dev, bf).eval()
    print(f"params {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M", flush=True)
    x, known, mask, sigma = inputs(cfg, dev, bf)
    results, outputs = {}, {}

    def report(name, fn, iters=args.iters):
        torch.cuda.synchronize()
        times = cuda_time(fn, iters, args.warmup)
        ms = median(times)
        results[name] = ms
        tf = flop / ms / 1e9
        vs_e = f"{results['eager'] / ms:5.2f}x eager" if "eager" in results else ""
        vs_c = f"{results['compile'] / ms:5.2f}x compile" if "compile" in results else ""
        print(f"{name:<22} {ms:9.2f} ms  (min {min(times):.2f}, max {max(times):.2f}, n={len(times)})  "
              f"{tf:6.1f} TFLOP/s  {tf / FLOOR_TFLOPS * 100:5.1f}% of 989  {vs_e}  {vs_c}", flush=True)

    with torch.inference_mode():
        step = lambda: model(x, known, mask, sigma)  # noqa: E731
        report("eager", step)
        outputs["eager"] = step().float()

        def ours():
            with ops.use_custom_ops():
                return model(x, known, mask, sigma)
        report("ours", ours)
        outputs["ours"] = ours().float()
        try:
            _, replay, out_g = graphed(ours)
            report("ours+graph", replay)
            outputs["ours+graph"] = out_g.float()
        except Exception as e:
            print(f"ours+graph: capture failed: {type(e).__name__}: {e}", flush=True)
        backend.settings["two_streams"] = False  # the two streams' blocks one after the other
        try:
            _, replay_1, out_1 = graphed(ours)
            report("ours+graph 1 stream", replay_1)
            outputs["ours+graph 1 stream"] = out_1.float()
            del out_1
        finally:
            backend.settings["two_streams"] = True

        if not args.no_profile:
            kernel_breakdown(ours)
            if "ours+graph" in results:  # the same step as one graph replay: kernel time against the replay's time
                print(f"as a CUDA graph replay ({results['ours+graph']:.1f} ms a replay):", flush=True)
                kernel_breakdown(replay, top=8)

        if not args.no_fp8:
            for label, targets, two in [("ours fp8", fp8.DEFAULT_TARGETS, True),
                                        ("ours fp8 1 stream", fp8.DEFAULT_TARGETS, False),
                                        ("ours fp8 all", fp8.ALL_TARGETS, True)]:
                m8 = copy.deepcopy(model)
                swapped = fp8.convert_to_fp8(m8, targets)

                def ours8(m8=m8):
                    with ops.use_custom_ops():
                        return m8(x, known, mask, sigma)
                print(f"{label}: {swapped} linears ({', '.join(targets)}) swapped to e4m3 row-wise; attention e4m3 "
                      f"(cuDNN FP8); {'two CUDA streams' if two else 'one CUDA stream'}", flush=True)
                backend.settings["two_streams"] = two
                try:
                    _, replay8, out8 = graphed(ours8)
                    report(label + "+graph", replay8)
                except Exception as e:
                    print(f"{label}+graph: capture failed ({type(e).__name__}: {e}); timing without a graph", flush=True)
                    report(label, ours8)
                    out8 = ours8()
                finally:
                    backend.settings["two_streams"] = True
                if label == "ours fp8" and label + "+graph" in results and not args.no_profile:   # `--fp8`, replayed
                    print(f"{label} as a CUDA graph replay ({results[label + '+graph']:.1f} ms a replay):", flush=True)
                    kernel_breakdown(replay8, top=30)
                outputs[label] = out8.float()
                del m8, out8

        if not args.no_ref:  # errors against an fp32 run of the same weights and inputs
            ref_model = copy.deepcopy(model).float()
            prev = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
            ref = ref_model(x.float(), known.float(), mask, sigma).double()
            torch.backends.cuda.matmul.allow_tf32 = prev
            del ref_model
            peak = (ref.max() - ref.min()).item()
            quality = {}
            for name, out in outputs.items():
                d = out.double() - ref
                rel = (d.norm() / ref.norm()).item()
                psnr = 20 * math.log10(peak / max(d.pow(2).mean().sqrt().item(), 1e-30))
                d_e = out.double() - outputs["eager"].double()
                psnr_e = 20 * math.log10(peak / max(d_e.pow(2).mean().sqrt().item(), 1e-30))
                quality[name] = {"rel_l2": rel, "psnr_db": psnr, "psnr_vs_bf16_eager_db": psnr_e,
                                 "finite": bool(torch.isfinite(out).all())}
                print(f"error vs fp32  {name:<16} rel L2 {rel:.2e}  PSNR {psnr:6.2f} dB   (vs bf16 eager: "
                      f"{psnr_e:6.2f} dB)  finite {quality[name]['finite']}", flush=True)
            results["quality"] = quality

        if not args.no_compile:  # last: its compilation is the slowest part of the run
            t0 = time.time()
            compiled = torch.compile(model)
            compiled(x, known, mask, sigma)
            torch.cuda.synchronize()
            print(f"torch.compile: first call (compilation) {time.time() - t0:.1f} s", flush=True)
            report("compile", lambda: compiled(x, known, mask, sigma))
            for name in ("ours", "ours+graph", "ours+graph 1 stream", "ours fp8+graph", "ours fp8 1 stream+graph",
                         "ours fp8 all+graph"):
                if name in results:
                    print(f"  {name:<16} {results['compile'] / results[name]:.3f}x compile, "
                          f"{results['eager'] / results[name]:.3f}x eager", flush=True)
    results["tflop_per_step"] = flop / 1e12
    results["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 1e9
    print(json.dumps({"step": results}), flush=True)


if __name__ == "__main__":
    main()
