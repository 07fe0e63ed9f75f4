"""Each grid kernel at the paper shapes against the best PyTorch route, in the same run.

    python benchmarks/bench_kernels.py [--iters 20] [--no-compile]

Paper preset: B = 1, an 8 x 8 grid, N = 576 tokens a frame, D = 1024, 8 heads x 128 (36,864 tokens a stream).
Baselines are the ops' PyTorch twins (fourreal_rt/ops/twins.py, the tests' reference code) run eagerly, under
each SDPA backend, and through torch.compile. Prints one line per (kernel, route): median ms of CUDA-event timings
of CUDA-graph replays after warm-up (GPU time alone, no host dispatch), and TFLOP/s (matrix work) or GB/s (memory-bound work, bytes read + written once) with the share of
the ceiling measured at the start of the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fourreal_rt import ops  # noqa: E402
from fourreal_rt.ops import attention_fp8, backend, fp8, fused, twins  # noqa: E402,F401
from fourreal_rt.runtime.timing import cuda_times as cuda_time, median  # noqa: E402,F401

B, V, T, HP, WP, D, H = 1, 8, 8, 18, 32, 1024, 8
N, HD = HP * WP, D // H
TOK = B * V * T * N


def graphed(fn):
    """Captures fn() in a CUDA graph (after warm-up on a side stream); returns (graph, replay, output)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, graph.replay, out


def gpu_time(fn, iters: int) -> tuple[float, str]:
    """Median GPU milliseconds of fn(): replays of a CUDA graph of it, so that host-side dispatch (Python custom-op
    wrappers, small launches) does not count; plain calls if it cannot be captured."""
    try:
        graph, replay, _ = graphed(fn)
        ms = median(cuda_time(replay, iters))
        del graph
        return ms, "graph"
    except Exception:
        torch.cuda.synchronize()
        return median(cuda_time(fn, iters)), "calls"


class Report:
    def __init__(self, ceilings):
        self.ceil = ceilings
        self.rows = []

    def line(self, kernel, route, ms, flop=None, bytes_=None):
        if flop is not None:
            rate, unit, pct = flop / ms / 1e9, "TFLOP/s", flop / ms / 1e9 / self.ceil["tflops"] * 100
        else:
            rate, unit, pct = bytes_ / ms / 1e6, "GB/s", bytes_ / ms / 1e6 / self.ceil["gbps"] * 100
        print(f"{kernel:<26} {route:<34} {ms:9.3f} ms {rate:9.1f} {unit:<8} {pct:5.1f}% of measured ceiling",
              flush=True)
        self.rows.append({"kernel": kernel, "route": route, "ms": round(ms, 4), unit: round(rate, 1)})


def run(name, route, fn, rep, iters, flop=None, bytes_=None):
    try:
        ms, how = gpu_time(fn, iters)
    except Exception as e:  # a route this torch/GPU does not support
        print(f"{name:<26} {route:<34} n/a ({type(e).__name__}: {str(e).splitlines()[0][:90]})", flush=True)
        return None
    rep.line(name, route if how == "graph" else route + " [no graph]", ms, flop, bytes_)
    return ms


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    args = ap.parse_args()
    print(json.dumps({"args": vars(args), "torch": torch.__version__, "device": torch.cuda.get_device_name(),
                      "cudnn": torch.backends.cudnn.version(), "kernels": backend.status()}), flush=True)
    assert backend.available(), "the compiled kernels did not load"
    dev, bf = "cuda", torch.bfloat16
    torch.manual_seed(0)
    it = args.iters

    # ceilings, measured here: bf16 GEMM and device-to-device copy
    a = torch.randn(8192, 8192, device=dev, dtype=bf)
    b = torch.randn_like(a)
    tflops = 2 * 8192 ** 3 / median(cuda_time(lambda: a @ b, it)) / 1e9
    src = torch.randn(1 << 28, device=dev, dtype=bf)  # 512 MiB
    dst = torch.empty_like(src)
    gbps = 2 * src.numel() * 2 / median(cuda_time(lambda: dst.copy_(src), it)) / 1e6
    del a, b, src, dst
    rep = Report({"tflops": tflops, "gbps": gbps})
    print(f"ceilings: bf16 GEMM 8192^3 {tflops:.1f} TFLOP/s, copy {gbps:.1f} GB/s (read + write)", flush=True)
    comp = (lambda f: torch.compile(f, dynamic=False)) if not args.no_compile else None

    with torch.inference_mode():
        # ---- grid attention ------------------------------------------------------------------------------
        qkv = torch.randn(B, V, T, N, 3, H, HD, device=dev, dtype=bf)        # the qkv linear's output
        q, k, v = qkv.unbind(4)                                              # [B, V, T, N, H, hd] views
        rope = {ax: twins.rope_tables(T if ax == "time" else V, HP, WP, HD, 100.0, device=dev) for ax in twins.AXES}
        att_flop = 4 * TOK * (T * N) * D                                     # QK^T + PV over all sequences
        qkv_bytes = 3 * TOK * D * 2
        for ax in twins.AXES:
            cos, sin = rope[ax]
            name = f"grid_attention[{ax}]"
            for be in ("cudnn", "flash", "sdpa"):
                backend.settings["attention_backend"] = be
                run(name, f"ours: rope_pack+{be}+gather", lambda: torch.ops.fourreal.grid_attention(q, k, v, cos, sin, ax),
                    rep, it, flop=att_flop)
            backend.settings["attention_backend"] = "cudnn"
            S, L = (B * V, T * N) if ax == "time" else (B * T, V * N)
            packed = [torch.empty(S, L, H, HD, device=dev, dtype=bf) for _ in range(3)]
            run(name, "  part: rope_pack kernel", lambda: torch.ops.fourreal_C.rope_pack(q, k, v, cos, sin,
                twins.AXES.index(ax), *packed), rep, it, bytes_=2 * qkv_bytes)
            qs, ks, vs = (p.transpose(1, 2) for p in packed)
            run(name, "  part: cuDNN SDPA on packed", lambda: torch.ops.aten._scaled_dot_product_cudnn_attention(
                qs, ks, vs, None, False), rep, it, flop=att_flop)
            if attention_fp8.why_not(q) is None:   # FP8: e4m3 pack, cuDNN's FP8 SDPA, gather back to bf16
                run(name, "ours fp8: rope_pack_fp8+cuDNN FP8+gather", lambda: attention_fp8.grid_attention_fp8(
                    q, k, v, cos, sin, ax), rep, it, flop=att_flop)
                packed8 = [torch.empty(S, L, H, HD, device=dev, dtype=torch.float8_e4m3fn) for _ in range(3)]
                scal = torch.empty(attention_fp8.N_SCALARS, device=dev)
                run(name, "  part: rope_pack_fp8 (amax + pack)", lambda: torch.ops.fourreal_C.rope_pack_fp8(
                    q, k, v, cos, sin, twins.AXES.index(ax), *packed8, scal), rep, it, bytes_=qkv_bytes * 5 // 2)
                out8 = torch.empty_like(q)
                run(name, "  part: grid_gather_fp8", lambda: torch.ops.fourreal_C.grid_gather_fp8(
                    packed8[2], scal[2:3], twins.AXES.index(ax), out8), rep, it, bytes_=qkv_bytes // 2)
                del packed8, out8
            else:
                print(f"{name}: FP8 attention skipped: {attention_fp8.why_not(q)}", flush=True)
            for label, sdp in [("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)]:
                def twin_route(sdp=sdp):
                    with sdpa_kernel(sdp):
                        return twins.grid_attention(q, k, v, cos, sin, ax)
                run(name, f"torch: twin (rope+transposes), {label}", twin_route, rep, it, flop=att_flop)
            run(name, "torch: twin, default SDPA", lambda: twins.grid_attention(q, k, v, cos, sin, ax), rep, it,
                flop=att_flop)
            if comp:
                f = comp(twins.grid_attention)
                run(name, "torch.compile(twin)", lambda: f(q, k, v, cos, sin, ax), rep, it, flop=att_flop)
        del qkv, q, k, v

        # ---- adaLN modulate + LayerNorm, gate + residual -----------------------------------------------------
        x = torch.randn(B, V, T, N, D, device=dev, dtype=bf)
        y = torch.randn_like(x)
        m1, m2 = torch.randn(B, D, device=dev, dtype=bf), torch.randn(B, D, device=dev, dtype=bf)
        nbytes = x.numel() * 2
        run("modulated_layernorm", "ours", lambda: torch.ops.fourreal.modulated_layernorm(x, m1, m2, 1e-6), rep, it,
            bytes_=2 * nbytes)
        run("modulated_layernorm", "ours fp8: -> e4m3 rows + scales", lambda: torch.ops.fourreal.modulated_layernorm_fp8(
            x, m1, m2, 1e-6), rep, it, bytes_=nbytes * 3 // 2)
        run("modulated_layernorm", "ours before: bf16 out, then quantize", lambda: fp8.quantize_rowwise(
            torch.ops.fourreal.modulated_layernorm(x, m1, m2, 1e-6).view(-1, D)), rep, it, bytes_=nbytes * 3 // 2)
        run("modulated_layernorm", "torch: twin eager", lambda: twins.modulated_layernorm(x, m1, m2), rep, it,
            bytes_=2 * nbytes)
        if comp:
            f_ln = comp(twins.modulated_layernorm)
            run("modulated_layernorm", "torch.compile(twin)", lambda: f_ln(x, m1, m2), rep, it, bytes_=2 * nbytes)
        run("gated_residual", "ours", lambda: torch.ops.fourreal.gated_residual(x, y, m1), rep, it, bytes_=3 * nbytes)
        run("gated_residual", "torch: twin eager", lambda: twins.gated_residual(x, y, m1), rep, it, bytes_=3 * nbytes)
        if comp:
            f_gr = comp(twins.gated_residual)
            run("gated_residual", "torch.compile(twin)", lambda: f_gr(x, y, m1), rep, it, bytes_=3 * nbytes)

        # ---- linear + gated residual: x + g ⊙ (a W^T + b), the residual in the GEMM's epilogue -----------------
        for nm, K in (("proj", D), ("fc2", 4 * D)):
            lin = nn.Linear(K, D).to(dev, bf)
            a_in = torch.randn(B, V, T, N, K, device=dev, dtype=bf)
            name, flop = f"{nm} + gated residual", 2 * TOK * K * D
            run(name, "ours: cuBLASLt epilogue, gate in W", lambda: torch.ops.fourreal_C.linear_residual(
                x, a_in, lin.weight, lin.bias, m1), rep, it, flop=flop)
            run(name, "ours before: linear + residual kernel",
                lambda: torch.ops.fourreal.gated_residual(x, lin(a_in), m1), rep, it, flop=flop)
            run(name, "torch: twin eager", lambda: twins.gated_residual(x, lin(a_in), m1), rep, it, flop=flop)
            run(name, "  part: the linear alone", lambda: lin(a_in), rep, it, flop=flop)
            if comp:
                f_lr = comp(lambda x, a, g: twins.gated_residual(x, lin(a), g))
                run(name, "torch.compile(twin)", lambda: f_lr(x, a_in, m1), rep, it, flop=flop)
            del a_in

        # ---- soft and hard sync -----------------------------------------------------------------------------
        mod4 = torch.randn(B, 4 * D, device=dev, dtype=bf) * 0.1
        w2, b2 = torch.randn(2 * D, 2 * D, device=dev, dtype=bf) * 0.02, torch.randn(2 * D, device=dev, dtype=bf)
        soft_flop = 2 * TOK * (2 * D) ** 2
        run("soft_sync", "ours", lambda: torch.ops.fourreal.soft_sync(x, y, mod4, w2, b2, 1e-6), rep, it, flop=soft_flop)
        run("soft_sync", "torch: twin eager", lambda: twins.soft_sync(x, y, mod4, w2, b2), rep, it, flop=soft_flop)
        if comp:
            f_ss = comp(twins.soft_sync)
            run("soft_sync", "torch.compile(twin)", lambda: f_ss(x, y, mod4, w2, b2), rep, it, flop=soft_flop)
        z = torch.randn(TOK, 2 * D, device=dev, dtype=bf)
        run("soft_sync", "  part: its GEMM alone (addmm)", lambda: torch.addmm(b2, z, w2.t()), rep, it, flop=soft_flop)
        mod2 = torch.randn(B, 2 * D, device=dev, dtype=bf) * 0.1
        w1, b1 = torch.randn(D, 2 * D, device=dev, dtype=bf) * 0.02, torch.randn(D, device=dev, dtype=bf)
        hard_flop = 2 * TOK * 2 * D * D
        run("hard_sync", "ours", lambda: torch.ops.fourreal.hard_sync(x, y, mod2, w1, b1), rep, it, flop=hard_flop)
        run("hard_sync", "torch: twin eager", lambda: twins.hard_sync(x, y, mod2, w1, b1), rep, it, flop=hard_flop)
        if comp:
            f_hs = comp(twins.hard_sync)
            run("hard_sync", "torch.compile(twin)", lambda: f_hs(x, y, mod2, w1, b1), rep, it, flop=hard_flop)

        # ---- MLP: GELU in the GEMM epilogue; FP8 linears -----------------------------------------------------
        fc1, fc2 = nn.Linear(D, 4 * D).to(dev, bf), nn.Linear(4 * D, D).to(dev, bf)
        mlp_flop = 2 * TOK * D * 4 * D * 2

        def ours_mlp():
            with ops.use_custom_ops():
                return fused.mlp(x, fc1, fc2)
        run("mlp", "ours: GELU in cuBLASLt epilogue", ours_mlp, rep, it, flop=mlp_flop)
        run("mlp", "torch: fc2(gelu(fc1)) eager", lambda: fc2(F.gelu(fc1(x), approximate="tanh")), rep, it,
            flop=mlp_flop)
        if comp:
            f_mlp = comp(lambda h: fc2(F.gelu(fc1(h), approximate="tanh")))
            run("mlp", "torch.compile", lambda: f_mlp(x), rep, it, flop=mlp_flop)
        f8_1, f8_2 = fp8.FP8Linear(fc1), fp8.FP8Linear(fc2)

        def ours_mlp8():
            with ops.use_custom_ops():
                return fused.mlp(x, f8_1, f8_2)
        run("mlp", "ours fp8: e4m3 + GELU-quantize", ours_mlp8, rep, it, flop=mlp_flop)
        x2 = x.reshape(-1, D)
        for nm, (K, Nout) in {"qkv": (D, 3 * D), "proj": (D, D), "fc1": (D, 4 * D), "fc2": (4 * D, D)}.items():
            lin = nn.Linear(K, Nout).to(dev, bf)
            a_in = torch.randn(TOK, K, device=dev, dtype=bf)
            flop = 2 * TOK * K * Nout
            run(f"linear {nm} {K}x{Nout}", "torch: bf16 nn.Linear", lambda: lin(a_in), rep, it, flop=flop)
            l8 = fp8.FP8Linear(lin)
            run(f"linear {nm} {K}x{Nout}", "ours fp8: quantize + _scaled_mm", lambda: l8(a_in), rep, it, flop=flop)
            aq, asc = fp8.quantize_rowwise(a_in)
            run(f"linear {nm} {K}x{Nout}", "  part: _scaled_mm alone", lambda: l8.forward_quantized(aq, asc), rep, it,
                flop=flop)
            if nm == "fc2":
                run("quantize_fp8_rowwise", f"ours [{TOK}, {K}] bf16 -> e4m3", lambda: fp8.quantize_rowwise(a_in),
                    rep, it, bytes_=a_in.numel() * 3)
        del x2
    print(json.dumps({"ceilings": rep.ceil, "rows": rep.rows}), flush=True)


if __name__ == "__main__":
    main()
