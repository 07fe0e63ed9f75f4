"""`fourreal-rt`: generate 4D grids, inspect the install, build engines, train.

Exit codes: 0 success; 1 unexpected internal error; 2 usage error (bad option);
3 bad input video; 4 output exists (use --overwrite) or cannot be written; 5 model or engine problem.
"""
from __future__ import annotations

import json
import os
import sys
import time

import click

EXIT_INPUT, EXIT_OUTPUT, EXIT_MODEL = 3, 4, 5


def fail(code: int, msg: str):
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fourreal-rt")
def main():
    """fourreal-rt: a fixed-view video and a freeze-time video in, a view x time grid out.

    Exit codes: 0 ok, 1 internal error, 2 usage, 3 bad input, 4 output exists/unwritable, 5 model/engine.
    """


WRITER_PROCESSES: bool | None = None   # generate writes with `io.outputs.start_writers` processes: None = only as
                                       # the program (see _is_program); a caller running `main` in-process whose
                                       # __main__ is guarded may set True (benchmarks/bench_e2e.py does)


def _is_program() -> bool:
    """Whether this process is the `fourreal-rt` program (console script or `python -m fourreal_rt.cli`), not a
    script or test that calls `main` in-process: writer processes re-import __main__, which only the program's
    guards against re-running."""
    if WRITER_PROCESSES is not None:
        return WRITER_PROCESSES
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return (spec is not None and spec.name == "fourreal_rt.cli") or os.path.basename(sys.argv[0]) == "fourreal-rt"


@main.command()
@click.argument("row", type=click.Path(dir_okay=False, path_type=str))
@click.argument("col", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--out", "out_dir", default="out", show_default=True, help="output directory")
@click.option("--model", "model_name", default="small", show_default=True, help="shipped model name, preset, or model directory")
@click.option("--steps", type=click.IntRange(1, 1000), default=None, help="denoising steps [default: 16, or the engine's]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--shift", type=click.FloatRange(0, min_open=True), default=None,
              help="time shift of the σ schedule [default: 60, or the engine's]; smaller spends more of the steps "
                   "at low noise (on validation scenes PSNR and SSIM rose with the shift up to 60: benchmarks/RESULTS.md)")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True)
@click.option("--grid", "grid_size", default=None, metavar="VxT",
              help="grid size, views x times, each >= the model window [default: as many frames as COL x ROW have]")
@click.option("--overlap", type=click.IntRange(1), default=None,
              help="least overlap of neighbouring windows, in frames [default: window // 4, at least 1]")
@click.option("--dry-run", is_flag=True, help="print the window plan and exit (loads no weights, writes nothing)")
@click.option("--engine", "engine_dir", default=None, metavar="ENGINE",
              help="engine directory from `build-engine`; replaces --model (its manifest gives the model, steps, "
                   "dtype and device). Engines are code: use only engines you trust")
@click.option("--fp8", is_flag=True, help="block linears (row-wise scales) and attention (cuDNN FP8 SDPA, per-tensor "
                                         "scales) in FP8 e4m3; off by default")
@click.option("--overwrite", is_flag=True, help="replace an existing output directory")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary on stdout")
def generate(row, col, out_dir, model_name, steps, seed, device, dtype, grid_size, overlap, dry_run, overwrite, quiet,
             as_json, engine_dir=None, fp8=False, shift=None):
    """Generate the grid from ROW (fixed-view video, view 0) and COL (freeze-time video, time 0).

    Grids larger than the model window are generated window by window, sliding along time and then view
    (see --dry-run for the plan).
    """
    if not dry_run and device != "cpu":   # CUDA's context made while the imports below run (~0.2 s on an H100)
        from .runtime.cuda_driver import start as start_cuda
        start_cuda()
    from pathlib import Path

    from .export.engine import EngineError, preflight, start_early
    engine = early = None
    if engine_dir:  # the engine replaces the model; manifest, device and explicit options checked here, cheaply
        explicit = click.get_current_context().get_parameter_source("model_name").name == "COMMANDLINE"
        try:
            engine, src = preflight(engine_dir, model_name=model_name if explicit else None, steps=steps,
                                    shift=shift, dtype=dtype, device=device)
        except EngineError as e:
            fail(EXIT_MODEL, str(e))
        if fp8:
            raise click.BadParameter("an engine fixes its dtype at build time", param_hint="--fp8")
        steps = steps or engine["steps"]
        if not dry_run:   # its skeleton, and the libraries' first use in a thread, beside the imports below
            early = start_early(engine, device)
    from .io.outputs import check_output_dir
    from .io.video import InputError, probe, read_inputs
    from .model.weights import ModelNotFoundError, resolve
    from .runtime.pipeline import DEFAULT_STEPS, Pipeline
    from .runtime.windows import generate_grid, parse_grid, plan_windows

    t0 = time.perf_counter()
    steps = steps or DEFAULT_STEPS
    try:  # everything cheap is checked before any weight is loaded
        if engine is None:
            src = resolve(model_name)
    except ModelNotFoundError as e:
        fail(EXIT_MODEL, str(e))
    cfg = src.cfg
    try:
        V, T = parse_grid(grid_size) if grid_size else (None, None)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--grid")
    try:  # probing demuxes only; the grid defaults to every frame the inputs have, at least the window
        probed = {"row": probe(row), "col": probe(col)}
        counts = {k: info.frame_count for k, info in probed.items()}
    except InputError as e:
        fail(EXIT_INPUT, str(e))
    if V is None:
        V, T = max(cfg.views, counts["col"]), max(cfg.times, counts["row"])
    try:
        plan = plan_windows(V, T, (cfg.views, cfg.times), overlap, seed)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--grid/--overlap")
    if dry_run:
        for path, have, need in ((row, counts["row"], T), (col, counts["col"], V)):
            if have < need:
                fail(EXIT_INPUT, str(InputError(path, f"has {have} frames, the grid needs {need}")))
        click.echo(json.dumps(plan.to_dict()) if as_json else plan.describe())
        return
    try:
        check_output_dir(out_dir, overwrite, protect=(row, col))
    except InputError as e:
        fail(EXIT_OUTPUT, str(e))
    from .sampler.flow import prefetch_noise   # the first window's noise, drawn while the inputs and weights load
    prefetch_noise((1, *plan.window, cfg.frame_h, cfg.frame_w, 3), plan.windows[0].seed)
    try:
        row_f, col_f, report = read_inputs(row, col, V, T, (cfg.frame_h, cfg.frame_w), probed)
    except InputError as e:
        fail(EXIT_INPUT, str(e))           # (an engine's warm-up, if started, is waited for at exit)
    for w in report.get("warnings", []):
        click.echo(f"warning: {w}", err=True)
    if not src.trained:
        click.echo(f"warning: model '{src.name}' has random weights (no trained model found); "
                   "the generated frames are noise", err=True)
    t_read = time.perf_counter()
    try:
        if engine is not None:  # EngineError is a ValueError: damaged files, another GPU, ...
            from .export.engine import engine_pipeline, load_engine
            pipe = engine_pipeline(load_engine(engine_dir, device, early=early))
        else:
            pipe = Pipeline.from_pretrained(model_name, device=device, dtype=dtype, fp8=fp8)
    except (ModelNotFoundError, ValueError) as e:
        fail(EXIT_MODEL, str(e))
    t_load = time.perf_counter()
    from .io.outputs import start_writers

    from tqdm import tqdm
    if not quiet and not as_json:
        click.echo(plan.describe().split("\n")[0], err=True)
    bars = []

    def window_start(w):  # one progress bar per window, under the bar of windows
        bars.append(tqdm(total=steps, desc=f"window {w.index + 1}/{len(plan)} (views {w.v0}-{w.v0 + w.nv - 1}, "
                         f"times {w.t0}-{w.t0 + w.nt - 1})", unit="step", file=sys.stderr, disable=quiet,
                         leave=False, position=1))

        def step_done(i):
            bars[-1].update(1)
            if i == 1 and _is_program():   # the writer processes start while the GPU runs the other steps (not
                start_writers()            # beside the first, whose launches keep a core busy)
        return step_done

    def window_done(w, seconds):
        bars.pop().close()
        wbar.update(1)

    scratch = Path(out_dir).absolute().parent  # where a grid too big for memory is spooled
    with tqdm(total=len(plan), desc="windows", unit="window", file=sys.stderr, disable=quiet, position=0) as wbar:
        try:  # with an engine, the grid's meta waits for the background sha256 of the files the step does not read
            grid = generate_grid(pipe, row_f, col_f, steps=steps, seed=seed, shift=shift, overlap=overlap,
                                 scratch_dir=scratch if scratch.is_dir() else None,
                                 on_window_start=window_start, on_window_done=window_done)
        except EngineError as e:
            fail(EXIT_MODEL, str(e))
    t_gen = time.perf_counter()
    grid.meta["inputs"] = report
    grid.meta["timings_s"].update({"read_inputs": round(t_read - t0, 3), "load_model": round(t_load - t_read, 3)})
    fps = float(report.get("row", {}).get("fps") or 8.0)
    try:
        path = grid.save(out_dir, fps=fps, overwrite=overwrite)
    except InputError as e:
        fail(EXIT_OUTPUT, str(e))
    except OSError as e:
        fail(EXIT_OUTPUT, f"{out_dir}: cannot write output ({e.strerror or e})")
    total = time.perf_counter() - t0
    summary = {"out": str(path), "frames": list(grid.frames.shape), "model": src.name, "trained": src.trained,
               "steps": steps, "seed": seed, "sigma_shift": grid.meta["sigma_shift"], "device": str(pipe.device),
               "windows": len(plan),
               "generate_s": round(t_gen - t_load, 3),
               "total_s": round(total, 3)}
    if as_json:
        click.echo(json.dumps(summary))
    elif not quiet:
        click.echo(f"wrote {path} ({grid.frames.shape[0]}x{grid.frames.shape[1]} grid) in {total:.1f} s", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True)
def info(as_json):
    """Version, device, presets, shipped models, and whether compiled kernels are present."""
    import torch

    from . import __version__
    from .model import PRESETS
    from .model.weights import SHIPPED_DIR
    from .ops import backend

    kernels = backend.status()
    d = {"fourreal_rt": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
         "cuda_available": torch.cuda.is_available(),
         "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
         "presets": {k: f"{v.views}x{v.times} grid, {v.frame_h}x{v.frame_w}, d={v.dim}, depth={v.depth}"
                     for k, v in PRESETS.items()},
         "shipped_models": sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "model.safetensors").exists())
         if SHIPPED_DIR.exists() else [],
         "compiled_kernels": kernels, "fp8_attention": _fp8_attention_status(torch)}
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    for k, v in d.items():
        if isinstance(v, dict):
            click.echo(f"{k}:")
            for kk, vv in v.items():
                click.echo(f"  {kk}: {vv}")
        else:
            click.echo(f"{k}: {v}")


def _fp8_attention_status(torch) -> str:
    """What `--fp8` attention would run on: cuDNN's FP8 core (its frontend's version) or why bf16."""
    try:
        import cudnn
    except ImportError:
        return "bf16 (nvidia-cudnn-frontend not installed: pip install -e '.[gpu]')"
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0):
        return f"bf16 (cuDNN's FP8 attention needs a GPU of compute capability 9.0+; cudnn-frontend {cudnn.__version__})"
    return f"cuDNN FP8 SDPA (cudnn-frontend {cudnn.__version__})"


@main.command("build-engine")
@click.option("--model", "model_name", default="small", show_default=True,
              help="shipped model name, preset, or model directory")
@click.option("--grid", "grid_size", default=None, metavar="VxT", help="window the engine runs [default: the model's]")
@click.option("--steps", type=click.IntRange(1, 1000), default=32, show_default=True,
              help="denoising steps (fixed in the engine: its σ schedule is folded in)")
@click.option("--shift", type=click.FloatRange(0, min_open=True), default=None,
              help="time shift of the σ schedule, fixed in the engine [default: generate's, 60]")
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32", "fp8"]), default="auto", show_default=True,
              help="auto: bf16 on CUDA, fp32 on CPU; fp8: bf16 with the block linears and attention in e4m3 "
                   "(as generate --fp8; emulated on the CPU, for checking)")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="the target; a CUDA engine runs only on the GPU model it was built on")
@click.option("--runtime", type=click.Choice(["auto", "eager", "aoti"]), default="auto", show_default=True,
              help="auto: build the candidates (eager layer, with our kernels when built; AOTInductor layer on the "
                   "CPU), time one step of each, keep the fastest that matches the model; aoti: AOTInductor only")
@click.option("--onnx-check", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="run model.onnx in ONNX Runtime (CPU) against PyTorch; auto: when one evaluation is cheap")
@click.option("-o", "--out", "out_dir", required=True, help="engine directory to write")
@click.option("--overwrite", is_flag=True, help="replace an existing engine directory")
@click.option("--json", "as_json", is_flag=True, help="print the manifest on stdout")
def build_engine(model_name, grid_size, steps, dtype, device, runtime, onnx_check, out_dir, overwrite, as_json,
                 shift=None):
    """Build an engine: model.onnx (fourreal.ops nodes + standard ONNX), the compiled step, manifest.json."""
    from pathlib import Path

    from .export.engine import EngineError, build_engine as build
    from .runtime.windows import parse_grid

    try:
        grid = parse_grid(grid_size) if grid_size else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--grid")
    if Path(out_dir).exists() and not overwrite:
        fail(EXIT_OUTPUT, f"{out_dir}: exists (use --overwrite to replace it)")
    log = (lambda *a: None) if as_json else (lambda msg: click.echo(msg, err=True))
    try:
        manifest = build(model_name, out_dir, grid=grid, steps=steps, shift=shift, dtype=dtype, device=device,
                         runtime=runtime, ort_check=onnx_check, overwrite=overwrite, log=log)
    except EngineError as e:
        fail(EXIT_MODEL, str(e))
    except ValueError as e:  # e.g. --device cuda without a GPU
        fail(EXIT_MODEL, str(e))
    if as_json:
        click.echo(json.dumps(manifest))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def train(ctx):
    """Train (stage 1 or 2); options as `python -m fourreal_rt.training --help`."""
    from .training.train import main as train_main
    train_main(ctx.args)


if __name__ == "__main__":
    main()
