"""Grids beyond the model window (issue 6): cost and quality of the sliding-window schedule.

Two questions, one script:

  timing   Time per window and peak memory for V x T grids (default 8x8, 16x16, 32x32). Each grid runs in
           a fresh subprocess so that its peak RSS (ru_maxrss) is its own; the grid is spooled to disk
           (--store disk) so the figure shows what the float work holds: it must stay flat while the
           number of windows grows, and time must grow linearly with windows.
           Memory columns: rss_base (peak RSS after model load + warm-up), rss_peak (peak RSS at the end, and
           its rise over rss_base), rss after windows (current RSS after each window, min-max), np_peak
           (tracemalloc: numpy and Python allocations during generation), cuda_peak (max_memory_allocated).

  quality  On held-out synthetic scenes with ground truth (fourreal_rt.data.scenes, TEST_SEEDS), PSNR of a
           16 x 16 grid generated three ways, over the generated cells only:
             sliding   the sliding-window plan (runtime.windows), 9 windows at the default overlap;
             tiles     independent contiguous 8x8 tiles (2x2), each conditioned on the input frames that fall
                       inside it and nothing else (tile (1, 1) gets none);
             anchored  independent tiles that each get the inputs' anchors: views {0} + 7 views x times
                       {0} + 7 times, first row and column taken from the inputs (the same L-shaped mask the
                       model is trained on; 3x3 tiles over the 15 x 15 unknown cells, overlaps keep the
                       first tile's frames); same window count as sliding.
           PSNR is reported per block distance d = v // 8 + t // 8 (0: the block holding the inputs' corner),
           and for sliding also per window distance i + j (its band indices). The scene is rendered at the
           training spacing (1 / (window - 1) in arc position and clip time per frame), so every window
           looks like a training grid and the 16 x 16 grid extends it in both time and view.
           Needs a trained model (--model DIR); with a random preset it only checks that the script runs.

  python benchmarks/bench_windows.py timing  --model small --grids 8x8 16x16 32x32 --steps 1
  python benchmarks/bench_windows.py quality --model fourreal_rt/weights/small --scenes 8 --steps 16
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # run from a bare checkout


def log(*a):
    print(*a, flush=True)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "?"
    except OSError:
        return "?"


def device_name(dev) -> str:
    import torch
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ---- timing --------------------------------------------------------------------------------------------------

def timing_child(a) -> dict:
    """One grid in this process; returns its figures."""
    import torch

    from fourreal_rt.runtime.pipeline import Pipeline
    from fourreal_rt.runtime.windows import generate_grid, parse_grid

    V, T = parse_grid(a.grid)
    if a.threads:
        torch.set_num_threads(a.threads)
    pipe = Pipeline.from_pretrained(a.model, device=a.device, dtype=a.dtype)
    H, W = pipe.frame_size
    wv, wt = pipe.grid_shape
    rng = np.random.default_rng(0)
    row = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)            # [T, H, W, 3]
    col = rng.integers(0, 256, (V, H, W, 3), dtype=np.uint8)            # [V, H, W, 3]
    col[0] = row[0]
    known = np.zeros((wv, wt, H, W, 3), np.uint8)                       # warm-up: one window
    mask = np.zeros((wv, wt), bool)
    mask[0] = mask[:, 0] = True
    pipe.denoise_window(known, mask, steps=a.steps, seed=0)
    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # MiB (Linux: KiB)
    rss_now = []                                                        # MiB after each window

    def window_done(w, seconds):
        with open("/proc/self/statm") as f:
            rss_now.append(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20)

    tracemalloc.start()
    t0 = time.perf_counter()
    grid = generate_grid(pipe, row, col, steps=a.steps, seed=0, overlap=a.overlap, store=a.store,
                         on_window_done=window_done)
    wall = time.perf_counter() - t0
    np_peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per = grid.meta["windows"]["per_window_s"]
    return {"grid": [V, T], "window": [wv, wt], "frame": [H, W], "windows": len(per), "steps": a.steps,
            "store": grid.meta["windows"]["store"], "total_s": wall, "per_window_ms_median": 1e3 * float(np.median(per)),
            "per_window_ms_mean": 1e3 * wall / len(per), "rss_base_mib": rss_base, "rss_peak_mib": rss_peak,
            "np_peak_mib": np_peak, "rss_after_windows_mib": [round(x, 1) for x in rss_now], "grid_mib": V * T * H * W * 3 / 2 ** 20,
            "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None,
            "device": device_name(pipe.device), "dtype": str(pipe.dtype).replace("torch.", ""),
            "per_window_ms_min": 1e3 * float(np.min(per)), "loadavg_1min_after": os.getloadavg()[0]}


def timing(a):
    rows = []
    for g in a.grids:
        cmd = [sys.executable, os.path.abspath(__file__), "timing-child", "--grid", g, "--model", a.model,
               "--steps", str(a.steps), "--device", a.device, "--dtype", a.dtype, "--store", a.store,
               "--threads", str(a.threads)]
        if a.overlap:
            cmd += ["--overlap", str(a.overlap)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{g}: child failed\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        cuda = f"  cuda_peak {r['cuda_peak_mib']:7.1f} MiB" if r["cuda_peak_mib"] is not None else ""
        log(f"grid {g:>6}  windows {r['windows']:3d}  total {r['total_s']:8.2f} s  per window "
            f"{r['per_window_ms_mean']:8.1f} ms (median {r['per_window_ms_median']:8.1f}, min {r['per_window_ms_min']:8.1f})  rss_base "
            f"{r['rss_base_mib']:7.1f} MiB  rss_peak {r['rss_peak_mib']:7.1f} MiB (+{r['rss_peak_mib'] - r['rss_base_mib']:5.1f})  "
            f"rss after windows {min(r['rss_after_windows_mib']):6.1f}-{max(r['rss_after_windows_mib']):6.1f} MiB  np_peak {r['np_peak_mib']:6.1f} MiB"
            f"  grid {r['grid_mib']:7.1f} MiB  store {r['store']}{cuda}  load {r['loadavg_1min_after']:.1f}")
    if len(rows) > 1:  # least squares total = a + b * windows
        n = np.array([r["windows"] for r in rows], float)
        t = np.array([r["total_s"] for r in rows])
        b, c = np.polyfit(n, t, 1)
        resid = np.max(np.abs(t - (c + b * n)) / t)
        log(f"fit: total_s = {c:.2f} + {b:.3f} * windows (max relative residual {100 * resid:.1f} %); "
            f"rss_peak spread {max(r['rss_peak_mib'] for r in rows) - min(r['rss_peak_mib'] for r in rows):.1f} MiB")
    log(json.dumps({"date": datetime.date.today().isoformat(), "commit": commit(), "rows": rows}))


# ---- quality -------------------------------------------------------------------------------------------------

def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of uint8 frames a vs b."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def tiles(pipe, gt: np.ndarray, steps: int, seed: int) -> np.ndarray:
    """Independent contiguous tiles; each knows only the input frames (row 0, column 0) inside it."""
    from fourreal_rt.runtime.windows import given_mask, window_seed
    V, T = gt.shape[:2]
    wv, wt = pipe.grid_shape
    if V % wv or T % wt:
        raise ValueError(f"tiles need a grid that is a multiple of the window, got {V}x{T}")
    given = given_mask(V, T)
    out = np.where(given[..., None, None, None], gt, 0).astype(np.uint8)
    k = 0
    for v0 in range(0, V, wv):
        for t0 in range(0, T, wt):
            m = given[v0:v0 + wv, t0:t0 + wt]
            out[v0:v0 + wv, t0:t0 + wt] = pipe.denoise_window(out[v0:v0 + wv, t0:t0 + wt].copy(), m, steps=steps,
                                                              seed=window_seed(seed, k))
            k += 1
    return out


def anchored(pipe, gt: np.ndarray, steps: int, seed: int) -> np.ndarray:
    """Independent tiles over views {0} + chunk x times {0} + chunk: each tile's first row and column are the
    inputs' frames; chunks of window - 1 cover 1..V-1 (the last one shifted back to end at the edge)."""
    from fourreal_rt.runtime.windows import given_mask, window_seed
    V, T = gt.shape[:2]
    wv, wt = pipe.grid_shape
    given = given_mask(V, T)
    out = np.where(given[..., None, None, None], gt, 0).astype(np.uint8)
    done = given.copy()
    vchunks = [1 + s for s in _chunks(V - 1, wv - 1)]
    tchunks = [1 + s for s in _chunks(T - 1, wt - 1)]
    k = 0
    for a in vchunks:
        for b in tchunks:
            vi = np.array([0] + list(range(a, a + wv - 1)))             # [wv] grid views of this tile
            ti = np.array([0] + list(range(b, b + wt - 1)))             # [wt] grid times
            m = np.zeros((wv, wt), bool)
            m[0] = m[:, 0] = True
            known = np.where(m[..., None, None, None], out[np.ix_(vi, ti)], 0).astype(np.uint8)
            res = pipe.denoise_window(known, m, steps=steps, seed=window_seed(seed, k))
            new = ~done[np.ix_(vi, ti)]                                  # keep the first tile's frames
            sub = out[np.ix_(vi, ti)]
            sub[new] = res[new]
            out[np.ix_(vi, ti)] = sub
            done[np.ix_(vi, ti)] = True
            k += 1
    assert done.all()
    return out


def _chunks(n: int, w: int) -> list[int]:
    """Starts of w-long chunks covering 0..n-1 without gaps: 0, w, 2w, ..., the last shifted to n - w."""
    s = list(range(0, n - w + 1, w))
    if s[-1] + w < n:
        s.append(n - w)
    return s


def quality(a):
    import torch

    from fourreal_rt.data.scenes import TEST_SEEDS, render_grid
    from fourreal_rt.model.weights import resolve
    from fourreal_rt.runtime.pipeline import Pipeline
    from fourreal_rt.runtime.windows import generate_grid, given_mask, plan_windows

    if a.threads:
        torch.set_num_threads(a.threads)
    src = resolve(a.model)
    if not src.trained:
        log(f"WARNING: {a.model} has random weights: the PSNR below only shows that the script runs; "
            "do not record it")
    pipe = Pipeline.from_pretrained(a.model, device=a.device, dtype=a.dtype)
    V = T = a.size
    wv, wt = pipe.grid_shape
    H, W = pipe.frame_size
    plan = plan_windows(V, T, (wv, wt), a.overlap)
    given = given_mask(V, T)
    vb, tb = np.meshgrid(np.arange(V) // wv, np.arange(T) // wt, indexing="ij")
    block_d = vb + tb                                                   # [V, T] block distance
    win_d = np.full((V, T), -1)
    for w in plan.windows:
        win_d[plan.owner == w.index] = sum(w.band)                      # [V, T] sliding window distance
    methods = {"sliding": None, "tiles": tiles, "anchored": anchored}
    scores = {m: [] for m in methods}                                   # per scene: per-cell PSNR [V, T]
    log(f"quality: model {src.name} (trained={src.trained}) grid {V}x{T} window {wv}x{wt} plan "
        f"{len(plan)} windows (overlap >= {plan.overlap}) steps {a.steps} scenes {a.scenes} device "
        f"{device_name(pipe.device)}")
    for i in range(a.scenes):
        seed = TEST_SEEDS[a.first_scene + i]
        spos = lambda n, w: torch.arange(n, dtype=torch.float32) / (w - 1)   # training spacing
        t0 = time.perf_counter()
        gt = render_grid(seed, V, T, H, W, device=pipe.device, view_pos=spos(V, wv), times=spos(T, wt))["frames"]
        gt = (gt * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()   # [V, T, H, W, 3]
        t_render = time.perf_counter() - t0
        line = [f"scene {seed}"]
        for name, fn in methods.items():
            t0 = time.perf_counter()
            if fn is None:
                out = generate_grid(pipe, gt[0], gt[:, 0], steps=a.steps, seed=a.seed, overlap=a.overlap,
                                    store="memory").frames
            else:
                out = fn(pipe, gt, a.steps, a.seed)
            assert np.array_equal(out[given], gt[given])
            cell = np.array([[psnr(out[v, t], gt[v, t]) for t in range(T)] for v in range(V)])
            scores[name].append(cell)
            line.append(f"{name} {cell[~given].mean():6.2f} dB ({time.perf_counter() - t0:5.1f} s)")
        log("  ".join(line) + f"  render {t_render:.1f} s")
    log(f"mean PSNR (dB) over {a.scenes} scenes, generated cells only; d = block distance v//{wv} + t//{wt}:")
    nd = int(block_d.max()) + 1
    log(f"{'method':>10} {'all':>7} " + " ".join(f"{f'd={d}':>7}" for d in range(nd)))
    summary = {}
    for name, cells in scores.items():
        c = np.mean(cells, axis=0)                                      # [V, T]
        per_d = [float(c[(block_d == d) & ~given].mean()) for d in range(nd)]
        summary[name] = {"all": float(c[~given].mean()), "block_distance": per_d}
        log(f"{name:>10} {summary[name]['all']:7.2f} " + " ".join(f"{x:7.2f}" for x in per_d))
    c = np.mean(scores["sliding"], axis=0)
    per_w = {int(d): float(c[(win_d == d)].mean()) for d in sorted(set(win_d[win_d >= 0].tolist()))}
    summary["sliding"]["window_distance"] = per_w
    log("sliding by window distance i + j: " + "  ".join(f"{d}: {x:.2f}" for d, x in per_w.items()))
    log(json.dumps({"date": datetime.date.today().isoformat(), "commit": commit(), "model": src.name,
                    "trained": src.trained, "weights_sha256": pipe.model_info()["weights_sha256"],
                    "device": device_name(pipe.device), "overlap": list(plan.overlap), "steps": a.steps, "scenes": a.scenes, "summary": summary}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("question", choices=["timing", "quality", "timing-child"])
    p.add_argument("--model", default="small", help="preset or model directory")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--steps", type=int, default=None, help="timing: 1; quality: 16")
    p.add_argument("--overlap", type=int, default=None, help="default: the planner's (window // 4)")
    p.add_argument("--grids", nargs="+", default=["8x8", "16x16", "32x32"])
    p.add_argument("--grid", help=argparse.SUPPRESS)
    p.add_argument("--store", default="disk", choices=["disk", "memory", "auto"])
    p.add_argument("--size", type=int, default=16, help="quality: grid V = T")
    p.add_argument("--scenes", type=int, default=4)
    p.add_argument("--first-scene", type=int, default=0, help="offset into TEST_SEEDS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = p.parse_args(argv)
    a.steps = a.steps or (16 if a.question == "quality" else 1)
    if a.question == "timing-child":
        print(json.dumps(timing_child(a)))
        return
    log("args: " + " ".join(f"{k}={v}" for k, v in vars(a).items()))
    timing(a) if a.question == "timing" else quality(a)


if __name__ == "__main__":
    main()
