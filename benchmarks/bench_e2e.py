"""End to end: `fourreal-rt generate` with the engine vs PyTorch eager vs torch.compile (issue 5).

One question: how long does `fourreal-rt generate` take, from reading the two videos to the last output file
written, with an engine (`build-engine` + `generate --engine`) and without one, on the same machine in one run?

  1. a model directory with random (non-zero, seeded) weights for the preset: timings need no trained weights,
     but the frames they generate are noise (the worst case for the H.264 encoder: see `write_natural_s`);
  2. two input videos rendered from a held-out synthetic scene (`data.scenes.render_grid`, TEST_SEEDS) at the
     preset's frame size, written with PyAV: in_row.mp4 (view 0) and in_col.mp4 (time 0);
  3. `fourreal-rt build-engine` (timed: the engine's build time);
  4. `fourreal-rt generate` in a fresh subprocess per configuration, each reporting its own peak GPU memory:
       engine      generate --engine ENGINE
       eager       generate --model DIR --dtype bf16 (the shipped path)
       compile     the same with Pipeline.denoiser = torch.compile(model) (cold: compile time counts, as a first run)
       engine-fp8  generate --engine ENGINE_FP8 (build-engine --dtype fp8: block linears in e4m3)
       eager-fp8   generate --model DIR --dtype bf16 --fp8
     e2e_s is the CLI's own total (reading the videos .. last file written, model/engine load included);
     wall_s adds process start and imports; start_to_written_s is the child process's age when the last file is
     written (Linux /proc, 10 ms resolution): interpreter start, imports and e2e_s, without the process's exit;
  5. PSNR of the engine's grid against the eager grid (same seed), over the generated cells, and compile vs eager
     for scale (bf16 noise between two correct implementations); engine-fp8 against eager-fp8.

  python benchmarks/bench_e2e.py --preset paper --steps 32 --work /tmp/bench --out results/   # GPU box
  python benchmarks/bench_e2e.py --preset tiny --steps 4 --device cpu --configs engine eager  # CPU smoke run
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)   # run from a bare checkout too
TEST_SCENE = 20_000_123    # data.scenes.TEST_SEEDS: held out from training
WEIGHT_STD = 0.02          # random weights: a usual init scale, so activations stay O(1) through 24 layers
ENGINES = {"engine": [], "engine-fp8": ["--dtype", "fp8"]}      # engine configs: their build-engine options
PAIRS = [("engine", "eager"), ("compile", "eager"), ("engine-fp8", "eager-fp8"), ("eager-fp8", "eager")]  # PSNR


def log(*a):
    print(*a, flush=True)


def commit() -> str:
    if os.environ.get("FOURREAL_COMMIT"):                  # the tree's commit where its .git is stale (device copies)
        return os.environ["FOURREAL_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=ROOT).stdout.strip() or "?"
    except OSError:
        return "?"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


# ---- set-up ------------------------------------------------------------------------------------------------------

def make_model(preset: str, directory: str, device: str, seed: int = 0) -> str:
    """A model directory (config.json + model.safetensors, bf16 on CUDA) with seeded random non-zero weights."""
    import torch

    from fourreal_rt.model import PRESETS
    from fourreal_rt.model.twostream import TwoStreamModel
    from fourreal_rt.model.weights import save_model

    cfg = PRESETS[preset]
    dev = torch.device(device)
    torch.manual_seed(seed)
    with torch.no_grad(), dev:                             # built on the device: no slow CPU init of 660M weights
        model = TwoStreamModel(cfg)
        g = torch.Generator(device=dev).manual_seed(seed)
        for p in model.parameters():
            p.normal_(0.0, WEIGHT_STD, generator=g)
    save_model(model, directory, extra={"note": f"random weights (seed {seed}, std {WEIGHT_STD}) for benchmarks"},
               dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32)
    return directory


def make_videos(preset: str, directory: str, device: str) -> tuple[str, str, np.ndarray]:
    """in_row.mp4 (view 0, T frames) and in_col.mp4 (time 0, V frames) of a held-out scene; returns the paths and
    the rendered grid uint8 [V, T, H, W, 3]."""
    import torch

    from fourreal_rt.data.scenes import render_grid
    from fourreal_rt.io.outputs import encode_mp4
    from fourreal_rt.model import PRESETS

    cfg = PRESETS[preset]
    g = render_grid(TEST_SCENE, cfg.views, cfg.times, cfg.frame_h, cfg.frame_w, device=device)
    frames = (g["frames"].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()   # [V, T, H, W, 3]
    os.makedirs(directory, exist_ok=True)
    row, col = os.path.join(directory, "in_row.mp4"), os.path.join(directory, "in_col.mp4")
    encode_mp4(row, frames[0], 8.0)
    encode_mp4(col, frames[:, 0], 8.0)
    return row, col, frames


# ---- one configuration in a fresh process ---------------------------------------------------------------------------

def process_age() -> float | None:
    """Seconds since this process started (Linux: /proc/self/stat and /proc/uptime, 10 ms resolution), else None."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])   # field 22, starttime, in clock ticks
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
        return round(up - start_ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None


def child(a) -> None:
    """Runs the CLI in this process (with the torch.compile hook for `compile`), then writes peak memory. torch is
    imported by the CLI itself, as in the program (which starts CUDA's context beside that import)."""
    if a.config == "compile":
        import torch

        from fourreal_rt.runtime import pipeline as P

        plain = P.Pipeline.from_pretrained.__func__

        def compiled(cls, *args, **kw):
            pipe = plain(cls, *args, **kw)
            pipe.denoiser = torch.compile(pipe.model)
            return pipe
        P.Pipeline.from_pretrained = classmethod(compiled)
    from fourreal_rt import cli
    from fourreal_rt.cli import main
    cli.WRITER_PROCESSES = True        # as the fourreal-rt program writes (this script's __main__ is guarded)

    code = 0
    prof = None
    if a.profile:                      # where a fresh process spends its time (Python level, cumulative)
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    try:
        main(a.cli_args, standalone_mode=False)
    except SystemExit as e:
        code = e.code or 0
    written = process_age()
    if prof is not None:
        import io
        import pstats
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(45)
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)      # the slow calls themselves
        with open(a.profile, "w") as f:
            f.write(buf.getvalue())
    import torch

    rep = {"exit": code, "start_to_written_s": written}
    if torch.cuda.is_available():
        rep.update(peak_alloc_gib=round(torch.cuda.max_memory_allocated() / 2 ** 30, 2),
                   peak_reserved_gib=round(torch.cuda.max_memory_reserved() / 2 ** 30, 2))
    with open(a.report, "w") as f:
        json.dump(rep, f)
    sys.exit(code)


def run_config(name: str, cli_args: list[str], work: str, timeout: float, profile: str | None = None) -> dict:
    report = os.path.join(work, f"child_{name}.json")
    if os.path.exists(report):
        os.remove(report)
    cmd = [sys.executable, os.path.abspath(__file__), "child", "--config", name, "--report", report] + \
        (["--profile", profile] if profile else []) + ["--"] + cli_args
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"config": name, "error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    r = {"config": name, "wall_s": round(wall, 2), "exit": p.returncode}
    if p.returncode != 0:
        r["error"] = (p.stderr.strip().splitlines() or ["?"])[-1][:400]
        log(p.stderr[-3000:])
        return r
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    out = summary["out"]
    meta = json.load(open(os.path.join(out, "meta.json")))
    t = meta.get("timings_s", {})
    r.update(e2e_s=summary["total_s"], read_s=t.get("read_inputs"), load_s=t.get("load_model"),
             denoise_s=t.get("denoise"), first_step_s=t.get("first_step"), out=out)
    r["write_s"] = round(summary["total_s"] - sum(t.get(k) or 0 for k in ("read_inputs", "load_model", "denoise")), 3)
    if os.path.exists(report):
        r.update(json.load(open(report)))
    if meta.get("engine"):
        r["engine_load"] = meta["engine"].get("load_s")
        r["engine_graph"] = meta["engine"].get("graph_s")       # step 1's warm-up and capture (CPU seconds)
    return r


# ---- main --------------------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    c = sub.add_parser("child")
    c.add_argument("--config", required=True)
    c.add_argument("--report", required=True)
    c.add_argument("--profile", default=None)
    c.add_argument("cli_args", nargs=argparse.REMAINDER)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--configs", nargs="+", default=["engine", "eager", "compile"])
    ap.add_argument("--runtime", default="auto", help="build-engine --runtime")
    ap.add_argument("--reuse", action="store_true",
                    help="keep a model directory and outputs already in --work (a re-run on the same machine): the "
                         "PSNR then also compares with configurations of the earlier run")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile each generate process; profile_<config>_<n>.txt (top 45 cumulative, top 30 by own "
                         "time) beside results.json")
    ap.add_argument("--work", default="/tmp/fourreal-bench", help="scratch: model, videos, engine, outputs")
    ap.add_argument("--out", default=None, help="where results.json and the logs go")
    ap.add_argument("--budget-s", type=float, default=86400.0,
                    help="seconds for the whole benchmark: a configuration gets what is left as its time limit and "
                         "is skipped when under a minute is left")
    a = ap.parse_args(argv)
    if a.cmd == "child":
        a.cli_args = [x for x in a.cli_args if x != "--"]
        return child(a)

    import torch
    t_start = time.perf_counter()
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    dev_name = torch.cuda.get_device_name() if dev == "cuda" else f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    log(f"bench_e2e: preset {a.preset}, {a.steps} steps, seed {a.seed}, device {dev_name}, configs {a.configs}, "
        f"torch {torch.__version__}, commit {commit()}, {datetime.date.today()}")
    os.makedirs(a.work, exist_ok=True)
    out_dir = a.out or a.work
    os.makedirs(out_dir, exist_ok=True)
    res: dict = {"preset": a.preset, "steps": a.steps, "seed": a.seed, "device": dev_name, "torch": torch.__version__,
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "commit": commit(), "weights": f"random, std {WEIGHT_STD}", "runs": []}

    def save():
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(res, f, indent=2)

    t0 = time.perf_counter()
    model_dir = os.path.join(a.work, "model")
    if not (a.reuse and os.path.exists(os.path.join(model_dir, "model.safetensors"))):
        make_model(a.preset, model_dir, dev)
    row, col, truth = make_videos(a.preset, os.path.join(a.work, "inputs"), dev)
    res["setup_s"] = round(time.perf_counter() - t0, 1)
    log(f"set-up (random model dir + input videos): {res['setup_s']} s")

    from fourreal_rt.io.outputs import write_outputs     # what writing natural frames costs (the scene itself)
    t0 = time.perf_counter()
    write_outputs(os.path.join(a.work, "natural"), truth, {}, overwrite=True)
    res["write_natural_s"] = round(time.perf_counter() - t0, 2)
    log(f"write_outputs of the rendered scene grid (natural frames): {res['write_natural_s']} s")

    base = ["generate", row, col, "--seed", str(a.seed), "--steps", str(a.steps), "--json", "--quiet",
            "--overwrite", "--device", dev]
    for name in dict.fromkeys(c_ for c_ in a.configs if c_ in ENGINES):     # each engine once, however often it runs
        engine_dir = os.path.join(a.work, name)
        cmd = [sys.executable, "-m", "fourreal_rt.cli", "build-engine", "--model", model_dir, "--steps", str(a.steps),
               "--device", dev, "--runtime", a.runtime, *ENGINES[name], "-o", engine_dir, "--overwrite"]
        log("$ " + " ".join(cmd))
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True,
                               timeout=max(1.0, a.budget_s - (time.perf_counter() - t_start)))
        except subprocess.TimeoutExpired as e:
            p = subprocess.CompletedProcess(cmd, 124, "", (e.stderr or b"").decode(errors="replace") +
                                            "\nbuild-engine: timed out (time budget)")
        built = res.setdefault("builds", {})[name] = {"build_wall_s": round(time.perf_counter() - t0, 1)}
        log("\n".join(l for l in p.stderr.splitlines() if "Warning" not in l and "torchvision" not in l)[-6000:])
        if p.returncode != 0:
            built["build_error"] = (p.stderr.strip().splitlines() or ["?"])[-1]
            a.configs = [c_ for c_ in a.configs if c_ != name]
        else:
            m = json.load(open(os.path.join(engine_dir, "manifest.json")))
            built.update({k: m[k] for k in ("runtime", "candidates", "non_engine_step_ms", "sdpa_backends_ms",
                                            "kernels", "build", "dtype", "device", "reference")})
            built["onnx"] = {k: v for k, v in m["onnx"].items() if k != "files"}
            built["bytes"] = {n: f["bytes"] for n, f in m["files"].items()}
        log(f"build-engine ({name}): {built['build_wall_s']} s wall (exit {p.returncode})")
        save()

    outs = {}
    for i, name in enumerate(a.configs):
        left = a.budget_s - (time.perf_counter() - t_start)
        if left < 60:
            log(f"{name}: skipped ({left:.0f} s left of the {a.budget_s:.0f} s budget)")
            res["runs"].append({"config": name, "error": f"skipped: {left:.0f} s of the time budget left"})
            continue
        out = os.path.join(a.work, f"out_{name}")
        args = base + ["-o", out] + (["--engine", os.path.join(a.work, name)] if name in ENGINES else
                                     ["--model", model_dir, "--dtype", "bf16" if dev == "cuda" else "fp32"]
                                     + (["--fp8"] if name == "eager-fp8" else []))
        r = run_config(name, args, a.work, left,
                       os.path.join(out_dir, f"profile_{name}_{i}.txt") if a.profile else None)
        res["runs"].append(r)
        if "error" not in r:
            outs[name] = r["out"]
        log(json.dumps(r))
        save()

    if a.reuse:                                            # outputs of an earlier run (same model, seed, inputs)
        for k in (*ENGINES, "eager", "compile", "eager-fp8"):
            old = os.path.join(a.work, f"out_{k}", "grid.npz")
            meta = os.path.join(a.work, f"out_{k}", "meta.json")
            same = os.path.exists(meta) and all(json.load(open(meta)).get(f) == v
                                                for f, v in (("steps", a.steps), ("seed", a.seed)))
            if k not in outs and os.path.exists(old) and same:
                outs[k] = os.path.dirname(old)
                res.setdefault("earlier_outputs", []).append(k)
    frames = {k: np.load(os.path.join(v, "grid.npz"))["frames"] for k, v in outs.items()}
    gen = np.ones(frames[next(iter(frames))].shape[:2], bool) if frames else None
    if gen is not None:
        gen[0, :] = gen[:, 0] = False                      # generated cells only (row 0 and column 0 are inputs)
        for k, ref in PAIRS:
            if k in frames and ref in frames:
                res[f"psnr_{k}_vs_{ref}_db"] = round(psnr(frames[k][gen], frames[ref][gen]), 2)
    save()

    log("")
    log(f"{'config':<10} {'e2e_s':>7} {'wall_s':>7} {'read':>6} {'load':>6} {'denoise':>8} {'step 1':>7} {'write':>6} "
        f"{'peak_GiB':>8} {'start->written':>14}  (device {dev_name}, preset {a.preset}, {a.steps} steps)")
    for r in res["runs"]:
        if "error" in r:
            log(f"{r['config']:<10} {r['error']}")
            continue
        log(f"{r['config']:<10} {r['e2e_s']:>7.2f} {r['wall_s']:>7.2f} {r['read_s'] or 0:>6.2f} {r['load_s'] or 0:>6.2f} "
            f"{r['denoise_s'] or 0:>8.2f} {r.get('first_step_s') or 0:>7.2f} {r['write_s']:>6.2f} "
            f"{r.get('peak_reserved_gib', float('nan')):>8.2f} {r.get('start_to_written_s') or float('nan'):>14.2f}")
    for name, b in res.get("builds", {}).items():
        if "runtime" in b:
            rt = b["runtime"]
            log(f"{name}: build {b['build_wall_s']} s wall; runtime {rt['name']} (step {rt['step_ms']} ms, "
                f"rel err {rt['rel_err']:.2e}); non-engine step {b['non_engine_step_ms']} ms")
    for k, ref in PAIRS:
        if f"psnr_{k}_vs_{ref}_db" in res:
            log(f"psnr_{k}_vs_{ref}_db: {res[f'psnr_{k}_vs_{ref}_db']} dB")
    log(f"write_outputs of natural frames: {res['write_natural_s']} s (the runs above write random-weight noise)")
    res["total_s"] = round(time.perf_counter() - t_start, 1)
    save()


if __name__ == "__main__":
    main()
