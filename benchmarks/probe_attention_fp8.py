"""Probe: cuDNN's FP8 attention (cudnn-frontend's Python graph API) against its bf16 attention at the paper preset's
grid-attention shape, and what stacking the two streams' GEMMs would buy. Prints one JSON object.

    python benchmarks/probe_attention_fp8.py [--seqs 8 --heads 8 --length 4608 --head-dim 128]
    python benchmarks/probe_attention_fp8.py --serdes DIR   # build time vs deserializing the plan in a new process

Needs a CUDA GPU and the `nvidia-cudnn-frontend` wheel. Times are CUDA-event medians of graph replays.
"""
from __future__ import annotations

import argparse
import json
import math

import torch
import torch.nn.functional as F

E4M3_MAX = 448.0


def median_ms(fn, reps: int = 20) -> float:
    """Median of `reps` CUDA-graph replays of fn (one warm-up call first)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); g.replay(); b.record(); b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def fp8_attention_graph(shape, strides, handle):
    import cudnn
    e4m3, fp32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
    graph = cudnn.pygraph(io_data_type=e4m3, intermediate_data_type=fp32, compute_data_type=fp32, handle=handle)
    q, k, v = (graph.tensor(name=n, dim=shape, stride=strides, data_type=e4m3) for n in "qkv")
    scalars = [graph.tensor(name=n, dim=(1, 1, 1, 1), stride=(1, 1, 1, 1), data_type=fp32)
               for n in ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o")]
    o, _, amax_s, amax_o = graph.sdpa_fp8(q=q, k=k, v=v, descale_q=scalars[0], descale_k=scalars[1],
                                          descale_v=scalars[2], descale_s=scalars[3], scale_s=scalars[4],
                                          scale_o=scalars[5], generate_stats=False,
                                          attn_scale=1.0 / math.sqrt(shape[-1]), use_causal_mask=False)
    o.set_output(True).set_dim(shape).set_stride(strides).set_data_type(e4m3)
    for a in (amax_s, amax_o):
        a.set_output(True).set_dim((1, 1, 1, 1)).set_stride((1, 1, 1, 1)).set_data_type(fp32)
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    graph.build_plans()
    return graph, (q, k, v, *scalars, o, amax_s, amax_o)


def serdes(d: str, S=8, H=8, L=4608, hd=128):
    """Builds the FP8 graph (timed), serializes its plan and runs it; a fresh process deserializes it (timed), runs
    it on the same inputs and checks the output bytes."""
    import os
    import subprocess
    import sys
    import time
    import cudnn
    os.makedirs(d, exist_ok=True)
    dev = torch.device("cuda")
    torch.cuda.init()
    child = len(sys.argv) > 3 and sys.argv[3] == "child"
    t0 = time.perf_counter()
    handle = cudnn.create_handle()
    e4m3, fp32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
    graph = cudnn.pygraph(io_data_type=e4m3, intermediate_data_type=fp32, compute_data_type=fp32, handle=handle)
    t_handle = time.perf_counter() - t0
    dim, stride = [S, H, L, hd], [L * H * hd, hd, H * hd, 1]
    t0 = time.perf_counter()
    if child:
        graph.deserialize(handle, open(os.path.join(d, "plan.bin"), "rb").read())
    else:
        q, k, v = (graph.tensor(name=n, dim=dim, stride=stride, data_type=e4m3, uid=i + 1) for i, n in enumerate("qkv"))
        sc = [graph.tensor(name=f"s{i}", dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=fp32, uid=4 + i)
              for i in range(6)]
        o, _, a_s, a_o = graph.sdpa_fp8(q=q, k=k, v=v, descale_q=sc[0], descale_k=sc[1], descale_v=sc[2],
                                        descale_s=sc[3], scale_s=sc[4], scale_o=sc[5], generate_stats=False,
                                        attn_scale=1.0 / math.sqrt(hd), use_causal_mask=False)
        o.set_output(True).set_dim(dim).set_stride(stride).set_data_type(e4m3).set_uid(10)
        a_s.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(fp32).set_uid(11)
        a_o.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(fp32).set_uid(12)
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans()
    t_build = time.perf_counter() - t0
    g = torch.Generator(dev).manual_seed(0)
    ins = [(torch.randn(S, L, H, hd, device=dev, generator=g) * 4).to(torch.float8_e4m3fn) for _ in range(3)]
    scal = [torch.full((1, 1, 1, 1), x, device=dev) for x in (0.02, 0.02, 0.02, 1 / 448, 448.0, 50.0)]
    out, am = torch.empty_like(ins[0]), [torch.zeros(1, 1, 1, 1, device=dev) for _ in range(2)]
    ws = torch.empty(max(graph.get_workspace_size(), 1), device=dev, dtype=torch.uint8)
    pack = dict(zip(range(1, 13), [*ins, *scal, out, *am]))
    t0 = time.perf_counter()
    graph.execute(pack, ws, handle=handle)
    torch.cuda.synchronize()
    t_first = time.perf_counter() - t0
    res = {"process": "child (deserialized)" if child else "parent (built)", "handle_s": round(t_handle, 3),
           "build_or_deserialize_s": round(t_build, 3), "first_execute_s": round(t_first, 3)}
    if child:
        res["same_output"] = bool(torch.equal(out.view(torch.uint8).cpu(), torch.load(os.path.join(d, "out.pt")).view(torch.uint8)))
        print(json.dumps(res))
        return
    blob = graph.serialize(as_bytes=True)
    open(os.path.join(d, "plan.bin"), "wb").write(blob)
    torch.save(out.cpu(), os.path.join(d, "out.pt"))
    res["plan_bytes"] = len(blob)
    print(json.dumps(res), flush=True)
    subprocess.run([sys.executable, __file__, "--serdes", d, "child"], check=False)


def main():
    import sys
    if len(sys.argv) > 2 and sys.argv[1] == "--serdes":
        return serdes(sys.argv[2])
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqs", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--length", type=int, default=4608)
    ap.add_argument("--head-dim", type=int, default=128)
    a = ap.parse_args()
    import cudnn
    S, H, L, hd = a.seqs, a.heads, a.length, a.head_dim
    dev = torch.device("cuda")
    torch.manual_seed(0)
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
           "cudnn_frontend": getattr(cudnn, "__version__", "?"), "cudnn_backend": getattr(cudnn, "backend_version", lambda: "?")(),
           "shape [S, L, H, hd]": [S, L, H, hd]}
    packed = [torch.randn(S, L, H, hd, device=dev, dtype=torch.bfloat16) for _ in range(3)]   # [S, L, H, hd]
    q, k, v = (t.transpose(1, 2) for t in packed)                                           # [S, H, L, hd]
    flops = 4 * S * H * L * L * hd
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        o_bf16 = F.scaled_dot_product_attention(q, k, v)
        res["bf16_cudnn_ms"] = median_ms(lambda: F.scaled_dot_product_attention(q, k, v))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        res["bf16_flash_ms"] = median_ms(lambda: F.scaled_dot_product_attention(q, k, v))

    # FP8: per-tensor scales from amax; O bounded by max|v| (a convex combination), so scale_o = 1 / descale_v
    amax = [t.float().abs().amax() for t in packed]
    descale = [m / E4M3_MAX for m in amax]
    q8, k8, v8 = ((t.float() / d).to(torch.float8_e4m3fn) for t, d in zip(packed, descale))   # [S, L, H, hd]
    o8 = torch.empty_like(q8)
    one = lambda x: torch.full((1, 1, 1, 1), float(x), device=dev)
    scal = [one(descale[0]), one(descale[1]), one(descale[2]), one(1 / E4M3_MAX), one(E4M3_MAX), one(1 / descale[2])]
    amax_s, amax_o = one(0), one(0)
    handle = cudnn.create_handle()
    shape, strides = [S, H, L, hd], [L * H * hd, hd, H * hd, 1]
    t0 = torch.cuda.Event(enable_timing=True)
    graph, attrs = fp8_attention_graph(shape, strides, handle)
    ws = torch.empty(graph.get_workspace_size(), device=dev, dtype=torch.uint8)
    res["fp8_workspace_bytes"] = int(ws.numel())
    tensors = [q8, k8, v8, *scal, o8, amax_s, amax_o]
    pack = dict(zip(attrs, tensors))

    def run_fp8():
        cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream().cuda_stream)
        graph.execute(pack, ws, handle=handle)

    run_fp8()
    torch.cuda.synchronize()
    o_fp8 = o8.float() * descale[2]                                                           # [S, L, H, hd]
    res["fp8_ms"] = median_ms(run_fp8)
    o_replay = o8.float() * descale[2]
    res["fp8_graph_replay_equal"] = bool(torch.equal(o_fp8, o_replay))
    for key in ("bf16_cudnn_ms", "bf16_flash_ms", "fp8_ms"):
        res[key.replace("_ms", "_tflops")] = round(flops / res[key] / 1e9, 1)
    # error against fp32 on the first sequence
    ref = F.scaled_dot_product_attention(*(t[:1].float() for t in (q, k, v))).transpose(1, 2)  # [1, L, H, hd]
    rel = lambda x: float((x.float() - ref).norm() / ref.norm())
    res["rel_err_bf16"] = rel(o_bf16[:1].transpose(1, 2))
    res["rel_err_fp8"] = rel(o_fp8[:1])
    res["amax_o"], res["amax_v"] = float(amax_o), float(amax[2])

    # stacking the two streams: one GEMM of 2M rows against two of M
    M, D = S * L, H * hd
    gem = {}
    for name, (n, kk) in {"qkv": (3 * D, D), "proj": (D, D), "fc1": (4 * D, D), "fc2": (D, 4 * D)}.items():
        w = torch.randn(n, kk, device=dev, dtype=torch.bfloat16) * 0.02
        x2 = torch.randn(2 * M, kk, device=dev, dtype=torch.bfloat16)
        xa, xb = x2[:M], x2[M:]
        two = median_ms(lambda: (F.linear(xa, w), F.linear(xb, w)))
        one_ = median_ms(lambda: F.linear(x2, w))
        gem[name] = {"two_M_ms": round(two, 3), "one_2M_ms": round(one_, 3)}
    res["gemm_stacking"] = gem
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
