"""Engine directories: build, verify, load.

An engine is a directory written by `fourreal-rt build-engine`:

    manifest.json         what it was built for (below) and the sha256 + size of every other file
    model.onnx[.data]     the denoiser as ONNX (`onnx_export`): `fourreal.ops` nodes + standard ONNX, float32
    weights.safetensors   the weights a step reads, in the engine's dtype (σ-only weights are folded away; an fp8
                          engine stores its block linears qkv, fc1, fc2 in e4m3 with their row scales, the rest bf16)
    sigma_tables.safetensors  every σ-only vector of the model for each step of the fixed σ schedule
    layer.pt2             (when it won on the build machine) one layer compiled by AOTInductor, weights as
                          inputs, shared by all layers

The manifest records: format version, package version, model (name, config, sha256 of its weights file),
grid (the window V x T) and frame shape, batch, steps + σ schedule, dtype, target device (GPU name and
compute capability), torch / CUDA versions, the runtime chosen at build time (compiled layer or eager,
custom-op kernels, CUDA graph, attention backend) with every candidate's measured step time and error.

`load_engine` refuses (EngineError, one line naming the difference) an engine of another format or package
version, one built for another GPU (or device type), an AOTInductor artifact from another torch/CUDA, and
any file whose sha256 differs from the manifest. Engines contain compiled code: load them only from paths
you trust; nothing here searches for engines.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from fourreal_rt.model.weights import sha256_file, sha256_parts
from fourreal_rt.runtime.threads import cores, in_background
from fourreal_rt.runtime.timing import cpu_times, cuda_times, median

FORMAT = "fourreal-rt-engine"
FORMAT_VERSION = 2   # 2: fp8 engines store their block linears in e4m3
MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "weights.safetensors"
TABLES_FILE = "sigma_tables.safetensors"
LAYER_FILE = "layer.pt2"
ATTENTION_PLANS_FILE = "attention_fp8_plans.safetensors"   # fp8 engines on CUDA: cuDNN's compiled FP8 attention plans
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# fp8 engines: bf16 activations with the block linears qkv, fc1, fc2 in e4m3, row-wise scales (ops/fp8.py), and the
# attention cores in e4m3, per-tensor scales (ops/attention_fp8.py), as `generate --fp8`
FP8 = "fp8"
# ORT (CPU, Python ops) check of the ONNX graph at build time: only where one evaluation is cheap.
# Measure: tokens x width x depth of one stream (tiny 3.5e4, small 1.1e7, paper 9.1e8).
ORT_CHECK_MAX_WORK = 2e7
# A candidate runtime is kept only if its error against a float32 evaluation of the model (same inputs, same
# machine) is at most 2x the error of the non-engine path in the engine's dtype plus this floor (rel L2): the
# STYLE.md rule for low-precision kernels. A wrong kernel or table lands at O(1).
CANDIDATE_ATOL = {torch.float32: 1e-5, torch.bfloat16: 1e-3, torch.float16: 5e-4}


# AOTInductor candidates are built and checked in a process of their own (None: on CUDA targets).
ISOLATE_AOTI: bool | None = None


class EngineError(ValueError):
    """An engine cannot be built or used; the message is one line that says what differs or is wrong."""


# ---- small helpers ---------------------------------------------------------------------------------------------

def package_version() -> str:
    from fourreal_rt import __version__
    return __version__


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def activation_dtype(name: str) -> torch.dtype:
    """The torch dtype of an engine dtype's activations (fp8 engines compute in bf16 between e4m3 GEMMs)."""
    return torch.bfloat16 if name == FP8 else DTYPES[name]


def to_fp8(model, quantize: bool = True, out_dtype: torch.dtype | None = None) -> None:
    """An fp8 engine's model: the block linears of fp8.DEFAULT_TARGETS (qkv, fc1, fc2) swapped for FP8Linear and the
    attention cores in e4m3, in place (EngineError if a linear cannot be). quantize=False: empty shells producing
    `out_dtype`, for the engine's stored e4m3 weights to be loaded into."""
    from fourreal_rt.ops.fp8 import DEFAULT_TARGETS, convert_to_fp8
    want = len(DEFAULT_TARGETS) * model.cfg.depth
    swapped = convert_to_fp8(model, DEFAULT_TARGETS, quantize=quantize, out_dtype=out_dtype)
    if swapped != want:
        raise EngineError(f"fp8 engines need the block linears {', '.join(DEFAULT_TARGETS)} in e4m3 (widths a "
                          f"multiple of 16): {swapped} of {want} could be")


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(idx)
        return {"type": "cuda", "name": torch.cuda.get_device_name(idx), "capability": f"{major}.{minor}"}
    return {"type": "cpu", "name": platform.processor() or platform.machine()}


def describe_device(d: dict) -> str:
    if d.get("type") == "cuda":
        return f"{d.get('name')} (sm_{str(d.get('capability', '?')).replace('.', '')})"
    return "cpu"


def kernels_status() -> dict:
    """Whether the compiled extension is loaded and which `fourreal::` ops have a CUDA kernel."""
    from fourreal_rt.ops import backend
    from fourreal_rt.ops import custom  # noqa: F401

    mod = backend.load()
    reg = getattr(backend, "register_cuda_kernels", None)
    if mod is not None and callable(reg):
        try:
            reg()
        except Exception as e:  # a broken extension must not break engines: fall back to the twins
            return {"extension": True, "cuda_ops": [], "error": f"register_cuda_kernels: {e}"}
    names = ("grid_attention", "modulated_layernorm", "gated_residual", "soft_sync", "hard_sync")
    cuda_ops = [n for n in names if torch._C._dispatch_has_kernel_for_dispatch_key(f"fourreal::{n}", "CUDA")]
    return {"extension": mod is not None, "cuda_ops": cuda_ops}


@contextlib.contextmanager
def sdpa_backend(name: str | None):
    """Pins scaled_dot_product_attention to one backend ('cudnn', 'flash', 'efficient', 'math'); None: default."""
    if not name:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel
    table = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    with sdpa_kernel([table[name]]):
        yield


def _time_cuda(fn, warmup: int = 2, reps: int = 5) -> float:
    """Median milliseconds of fn() over `reps`, CUDA events, after `warmup` calls."""
    return median(cuda_times(fn, reps, warmup))


def _time_cpu(fn, warmup: int = 1, reps: int = 3) -> float:
    return median(cpu_times(fn, reps, warmup))


def _rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.double(), ref.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return float((a - ref).norm() / ref.norm().clamp_min(1e-30))


# ---- the runtime pieces ------------------------------------------------------------------------------------------

def attention_description(custom_ops: bool, sdpa: str | None, dtype: torch.dtype, head_dim: int, fp8: bool = False,
                          device: torch.device | None = None) -> str:
    """What computes the attention core in a runtime: our grid-attention op (its core from the kernel settings, as
    csrc/grid_attention.cpp picks it), or PyTorch SDPA on the twins' path (the backend `pick_sdpa_backend` timed);
    in fp8 engines our FP8 route (ops/attention_fp8.py) where cuDNN takes it."""
    if fp8:
        if not custom_ops or device is None or device.type != "cuda":
            return "e4m3 twin (emulated in PyTorch)"
        from fourreal_rt.ops import attention_fp8
        why = attention_fp8.why_not_on(device, head_dim)
        if why is None:
            return "fourreal_C.rope_pack_fp8 + cuDNN FP8 SDPA (e4m3, per-tensor scales) + fourreal_C.grid_gather_fp8"
        return f"fourreal_C.grid_attention, cudnn core (bf16: {why})"
    if custom_ops:
        from fourreal_rt.ops import backend
        core = backend.settings["attention_backend"]
        if dtype not in (torch.bfloat16, torch.float16) or (core == "flash" and head_dim % 8):
            core = "sdpa"                                        # cuDNN / flash take 16-bit only; flash hd % 8 == 0
        return f"fourreal_C.grid_attention, {core} core"
    return f"torch SDPA, {sdpa or 'default'} backend"


def pick_sdpa_backend(cfg, dtype, device, log) -> tuple[str | None, dict]:
    """Times the grid attention of both streams under each SDPA backend at the engine's shapes; the fastest.
    (The twins' path: runtimes on our kernels pick their core from `ops.backend.settings`.)"""
    if device.type != "cuda":
        return None, {}
    from fourreal_rt.ops import twins

    V, T, N, H, hd = cfg.views, cfg.times, cfg.tokens_per_frame, cfg.heads, cfg.head_dim
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, V, T, N, H, hd, device=device, dtype=dtype, generator=g) for _ in range(3))
    hp, wp = cfg.grid_hw
    rope = {F: twins.rope_tables(F, hp, wp, hd, cfg.rope_theta, device=device) for F in {V, T}}
    times = {}
    for name in ("cudnn", "flash", "efficient"):
        try:
            with sdpa_backend(name), torch.no_grad():
                def run():
                    twins.grid_attention(q, k, v, *rope[T], "time")
                    twins.grid_attention(q, k, v, *rope[V], "view")
                times[name] = round(_time_cuda(run), 3)
        except Exception as e:  # backend not available for these shapes/dtype
            times[name] = f"unavailable: {str(e).splitlines()[0][:120]}"
    ok = {k_: t for k_, t in times.items() if isinstance(t, float)}
    best = min(ok, key=ok.get) if ok else None
    log(f"attention backends (ms for both streams' attention): {times} -> {best}")
    return best, times


def compile_layer(model, step, example, path: Path, custom_ops: bool, sdpa: str | None) -> dict:
    """AOTInductor: exports `Layer` at the step's layer-0 shapes and packages it to `path`."""
    from fourreal_rt.ops import use_custom_ops
    from .step import Layer

    args = _layer_example_args(step, example)
    t0 = time.perf_counter()
    ctx = use_custom_ops() if custom_ops else contextlib.nullcontext()
    with ctx, sdpa_backend(sdpa), torch.no_grad():
        ep = torch.export.export(Layer(model.cfg.heads, model.cfg.sync), args, strict=False)
        t1 = time.perf_counter()
        torch._inductor.aoti_compile_and_package(ep, package_path=str(path))
    return {"export_s": round(t1 - t0, 2), "compile_s": round(time.perf_counter() - t1, 2)}


def _layer_example_args(step, example) -> tuple:
    """Layer 0's arguments for `example` inputs, each a distinct tensor (export would tie x^v to x^t if the
    same tensor were passed twice, as the first layer's call does)."""
    x_noisy, known, mask, sigma = example
    blk, syn, _ = step.rows(sigma)
    with torch.no_grad():
        x = step.base.embed_input(x_noisy, known, mask)
    args = (x, x, blk[0, 0], blk[0, 1], syn[0], *step.rope_v, *step.rope_t, *step.weights[0])
    return tuple(a.detach().clone() for a in args)


class AOTILayer:
    """A `Layer` compiled by AOTInductor (layer.pt2), called with flat tensors; returns [x_v, x_t].

    Uses the package loader directly (what `torch._inductor.aoti_load_package` wraps) so that loading an engine
    imports no compiler; `run` works on the current CUDA stream, so it can be captured into a CUDA graph."""

    def __init__(self, path, device: torch.device):
        index = (device.index if device.index is not None else torch.cuda.current_device()) \
            if device.type == "cuda" else -1
        self.loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, index)

    def __call__(self, *args):
        return self.loader.run(list(args))


class EngineDenoiser:
    """`denoiser(x_noisy, known, mask, sigma) -> velocity` of an engine: the folded step, optionally under
    the custom ops, a pinned attention backend, and a CUDA graph captured at the first call."""

    def __init__(self, step, *, custom_ops: bool, sdpa: str | None, cuda_graph: bool):
        self.step, self.custom_ops, self.sdpa, self.cuda_graph = step, custom_ops, sdpa, cuda_graph
        self.graphed = None
        self.shape = None

    def _ctx(self):
        from fourreal_rt.ops import use_custom_ops
        stack = contextlib.ExitStack()
        if self.custom_ops:
            stack.enter_context(use_custom_ops())
        stack.enter_context(sdpa_backend(self.sdpa))
        stack.enter_context(torch.no_grad())
        return stack

    def eager(self, x_noisy, known, mask, sigma):
        with self._ctx():
            return self.step(x_noisy, known, mask, sigma)

    def __call__(self, x_noisy, known, mask, sigma):
        shape = tuple(x_noisy.shape)
        if self.shape is None:
            self.shape = shape
        elif shape != self.shape:
            raise EngineError(f"engine step was set up for inputs {list(self.shape)}, got {list(shape)}")
        if not self.cuda_graph:
            return self.eager(x_noisy, known, mask, sigma)
        if self.graphed is None:                   # the first call: warm up on these inputs, capture, and
            from .step import GraphedStep          # return the warm-up's result (no replay needed for it)
            with self._ctx():
                self.graphed = GraphedStep(self.step, (x_noisy, known, mask, sigma))
            return self.graphed.take_first()
        return self.graphed(x_noisy, known, mask, sigma)


# ---- candidates ---------------------------------------------------------------------------------------------------

def _try_candidate(d: Path, name, kind, custom, model, tables, step, example, ref32, bound, sdpa, graphs, dev, dt,
                   log) -> dict:
    """Builds one candidate runtime, checks it against the float32 reference, times one step."""
    from .step import FoldedStep

    r: dict = {"layer": kind, "custom_ops": custom}
    try:
        layer = None
        if kind == "aoti":
            path = d / f".{name}.pt2"
            r.update(compile_layer(model, step, example, path, custom, sdpa))
            layer = AOTILayer(path, dev)
            r["file"] = path.name
            log(f"{name}: AOTInductor layer built (export {r['export_s']} s, compile {r['compile_s']} s)")
        s = FoldedStep(model, tables, layer=layer, dtype=dt)
        den = EngineDenoiser(s, custom_ops=custom, sdpa=sdpa, cuda_graph=graphs)
        try:
            if graphs:
                den(*example)                      # the warm-up and the capture
            out = den(*example).float()            # with graphs: a replay, the path every later step takes
        except Exception as e:
            if not graphs:
                raise
            r["cuda_graph_error"] = str(e).splitlines()[0][:200]
            den = EngineDenoiser(s, custom_ops=custom, sdpa=sdpa, cuda_graph=False)
            out = den(*example).float()
        r["cuda_graph"] = den.cuda_graph
        r["rel_err"] = _rel_err(out, ref32)
        timer = _time_cuda if dev.type == "cuda" else _time_cpu
        r["step_ms"] = round(timer(lambda: den(*example)), 3)
        r["ok"] = r["rel_err"] <= bound
        log(f"{name}: step {r['step_ms']:.1f} ms, rel err vs float32 {r['rel_err']:.2e}, "
            f"cuda graph {r['cuda_graph']}{'' if r['ok'] else '  (REJECTED: error too large)'}")
        del den, s
    except Exception as e:
        r["ok"] = False
        r["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        log(f"{name}: failed ({r['error']})")
    return r


def _candidate_in_process(d: Path, name, custom, cfg, dt, dev, sdpa, graphs, bound, ref32, example, log) -> dict:
    """`_try_candidate` for an AOTInductor layer in a process of its own (`python -m fourreal_rt.export.engine
    candidate`), which reads the weights and tables already written to `d`. A crash there (seen once: SIGSEGV
    while compiling on an H100 with torch 2.11) rejects the candidate instead of ending the build."""
    from safetensors.torch import save_file

    job = d / f".{name}.job"
    job.mkdir()
    save_file({"ref32": ref32.float().cpu().contiguous(), "x": example[0].cpu().contiguous(),
               "known": example[1].cpu().contiguous(), "mask": example[2].cpu().contiguous(),
               "sigma": example[3].cpu().contiguous()}, str(job / "inputs.safetensors"))
    (job / "spec.json").write_text(json.dumps({"name": name, "custom": custom, "config": json.loads(cfg.to_json()),
                                               "dtype": dtype_name(dt), "device": str(dev), "sdpa": sdpa,
                                               "graphs": graphs, "bound": bound}))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "fourreal_rt.export.engine", "candidate", str(d), str(job)],
                       capture_output=True, text=True)
    for line in p.stderr.splitlines():
        if line.startswith("candidate: "):
            log(line[len("candidate: "):])
    try:
        r = json.loads((job / "report.json").read_text())
    except (OSError, ValueError):
        tail = [l for l in p.stderr.strip().splitlines() if l.strip()][-1:] or ["no output"]
        why = f"signal {-p.returncode}" if p.returncode < 0 else f"exit {p.returncode}"
        r = {"layer": "aoti", "custom_ops": custom, "ok": False,
             "error": f"its process ended ({why}) after {time.perf_counter() - t0:.0f} s: {tail[0][:200]}"}
        log(f"{name}: failed ({r['error']})")
    shutil.rmtree(job, ignore_errors=True)
    return r


def _candidate_main(engine_dir: str, job_dir: str) -> int:
    """Child side of `_candidate_in_process`."""
    from safetensors.torch import load_file

    from fourreal_rt.model.config import GridConfig

    from .step import FoldedStep

    d, job = Path(engine_dir), Path(job_dir)
    spec = json.loads((job / "spec.json").read_text())
    dev, dt = torch.device(spec["device"]), DTYPES[spec["dtype"]]
    cfg = GridConfig.from_dict(spec["config"])
    model = _runtime_model(cfg, load_file(str(d / WEIGHTS_FILE), device=str(dev)))
    tables = load_file(str(d / TABLES_FILE), device=str(dev))
    t = load_file(str(job / "inputs.safetensors"), device=str(dev))
    example = (t["x"], t["known"], t["mask"], t["sigma"])
    step = FoldedStep(model, tables, dtype=dt)
    if spec["custom"]:
        kernels_status()

    def log(msg):
        print(f"candidate: {msg}", file=sys.stderr, flush=True)

    r = _try_candidate(d, spec["name"], "aoti", spec["custom"], model, tables, step, example, t["ref32"].double(),
                       spec["bound"], spec["sdpa"], spec["graphs"], dev, dt, log)
    (job / "report.json").write_text(json.dumps(r))
    return 0


def _skeleton(cfg):
    """The two-stream model of `cfg` with uninitialised CPU parameters, for `_runtime_model` to load."""
    from fourreal_rt.model.twostream import TwoStreamModel
    from fourreal_rt.model.weights import skip_init
    with skip_init(), torch.no_grad():                           # no init work: every used weight is loaded
        return TwoStreamModel(cfg)


def _runtime_model(cfg, state: dict, model=None):
    """The two-stream model with an engine's runtime weights `state` (the folded ones left empty) assigned, into
    `model` (a `_skeleton(cfg)`, with FP8Linear shells for an fp8 engine) if given; the tensors are kept, not copied."""
    from .step import runtime_state
    model = model if model is not None else _skeleton(cfg)
    unknown, absent = set(state) - set(model.state_dict()), set(runtime_state(model)) - set(state)
    if unknown or absent:
        raise EngineError(f"engine file {WEIGHTS_FILE} does not match its model config (unknown "
                          f"{sorted(unknown)[:3]}, absent {sorted(absent)[:3]})")
    model.load_state_dict(state, strict=False, assign=True)
    return model.eval()


# ---- build ------------------------------------------------------------------------------------------------------

def load_source(src):
    """`model.weights.load_model` (float32, CPU), its errors as EngineError."""
    from fourreal_rt.model.weights import ModelNotFoundError, load_model
    try:
        return load_model(src)
    except ModelNotFoundError as e:
        raise EngineError(str(e)) from None


def _ort_check(onnx_path, model32, inputs, log) -> dict:
    from .ort_ops import compare
    t0 = time.perf_counter()
    r = compare(onnx_path, model32, inputs)
    r["seconds"] = round(time.perf_counter() - t0, 2)
    log(f"ONNX Runtime (CPU, fourreal.ops as Python ops) vs PyTorch: rel L2 {r['rel_l2']:.2e}, "
        f"max abs {r['max_abs']:.2e} (max |ref| {r['max_abs_ref']:.2f})")
    return r


def build_engine(model_name: str, out, *, grid: tuple[int, int] | None = None, steps: int = 32,
                 shift: float | None = None, dtype: str = "auto", device: str = "auto", runtime: str = "auto",
                 onnx: bool = True, ort_check: str = "auto", overwrite: bool = False, log=print,
                 onnx_process: bool | None = None) -> dict:
    """Builds an engine directory at `out`; returns its manifest.

    runtime: 'auto' (build the candidates for the target: eager layer, with our kernels when built, and on the
    CPU the AOTInductor layer; time one step of each; keep the fastest that matches the model), 'eager', or
    'aoti' (the AOTInductor layer only; on CUDA also with our kernels when built). ort_check: 'auto' (when cheap), 'on', 'off'.
    onnx_process: export the ONNX graph in a process of its own, beside the GPU work (default: for CUDA).
    The directory is written beside `out` and moved into place when complete.
    """
    from fourreal_rt.model.weights import ModelNotFoundError, resolve, with_grid
    from fourreal_rt.runtime.pipeline import DEFAULT_SHIFT, pick_device

    from .step import SUPPORTED_SYNC

    shift = DEFAULT_SHIFT if shift is None else shift           # the σ schedule `generate` uses
    t_start = time.perf_counter()
    parts: dict = {}
    out = Path(out)
    if out.exists() and not overwrite:
        raise EngineError(f"{out}: exists (use --overwrite to replace it)")
    try:
        src = resolve(model_name)
    except ModelNotFoundError as e:
        raise EngineError(str(e)) from None
    dev = pick_device(device)
    if dtype == "auto":
        dtype = "bf16" if dev.type == "cuda" else "fp32"
    if dtype not in DTYPES and dtype != FP8:
        raise EngineError(f"unknown engine dtype {dtype!r} (bf16, fp16, fp32, fp8)")
    if dtype == FP8 and runtime == "aoti":
        raise EngineError("fp8 engines run the eager layer with our kernels: use --runtime auto or eager")
    dt = activation_dtype(dtype)
    cfg = src.cfg
    if cfg.sync not in SUPPORTED_SYNC:
        raise EngineError(f"model sync '{cfg.sync}' is an ablation baseline; engines support {SUPPORTED_SYNC}")
    if grid is not None:
        V, T = grid
        if max(V, T) > cfg.max_frames or min(V, T) < 1:
            raise EngineError(f"grid {V}x{T} is outside 1..{cfg.max_frames} frames a side")
        cfg = cfg.replace(views=V, times=T)
    if steps < 1:
        raise EngineError(f"steps must be >= 1, got {steps}")

    t0 = time.perf_counter()
    model32 = with_grid(load_source(src), cfg.views, cfg.times)  # float32, CPU, weights loaded (or seeded init)
    parts["load_model_s"] = round(time.perf_counter() - t0, 2)
    log(f"model '{src.name}' ({'trained' if src.trained else 'random weights'}): {cfg.views}x{cfg.times} grid of "
        f"{cfg.frame_h}x{cfg.frame_w}, dim {cfg.dim}, depth {cfg.depth}, sync {cfg.sync}; engine {dtype} on {dev}"
        + (" (e4m3 emulated on the CPU: for checking, no speed-up)" if dtype == FP8 and dev.type == "cpu" else ""))

    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.absolute().parent))
    try:
        manifest = _build_into(tmp, src, cfg, model32, dev, dt, dtype == FP8, steps, shift, runtime, onnx, ort_check,
                               parts, log, onnx_process)
        manifest["build"]["seconds"] = round(time.perf_counter() - t_start, 2)
        files = [p for p in sorted(tmp.iterdir()) if p.is_file() and p.name != MANIFEST]
        manifest["files"] = dict(zip((p.name for p in files), _pool().map(file_entry, files)))   # files in parallel
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"engine written to {out} in {manifest['build']['seconds']:.1f} s "
        f"(runtime: {manifest['runtime']['name']})")
    return manifest


def _build_into(d: Path, src, cfg, model32, dev, dt, fp8, steps, shift, runtime, onnx, ort_check, parts, log,
                onnx_process=None) -> dict:
    """Writes every engine file but the manifest into `d`; returns the manifest without `files`."""
    from . import onnx_export

    # -- ONNX: float32 on the CPU, the reference graph (for a GPU target: in a process of its own, beside the
    #    GPU work below, joined at the end) ----------------------------------------------------------------------
    onnx_info: dict = {"file": None}
    work = cfg.views * cfg.times * cfg.tokens_per_frame * cfg.dim * cfg.depth
    want_ort = ort_check == "on" or (ort_check == "auto" and work <= ORT_CHECK_MAX_WORK)
    onnx_job = None
    t_onnx = time.perf_counter()
    if onnx and (dev.type == "cuda" if onnx_process is None else onnx_process):
        cmd = [sys.executable, "-m", "fourreal_rt.export.onnx_export", "--model", str(src.directory or src.name),
               "--out", str(d / ONNX_FILE), "--grid", f"{cfg.views}x{cfg.times}", "--report", str(d / ".onnx.json")]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        with open(d / ".onnx.log", "w") as f:
            onnx_job = subprocess.Popen(cmd + (["--ort-check"] if want_ort else []), env=env, stdout=f,
                                        stderr=subprocess.STDOUT)
    elif onnx:
        inputs32 = onnx_export.example_inputs(cfg)
        onnx_info = onnx_export.export_onnx(model32, d / ONNX_FILE, inputs32)
        onnx_export.check_onnx(d / ONNX_FILE)
        onnx_info["checker"] = "ok"
        if want_ort:
            onnx_info["ort_check"] = _ort_check(d / ONNX_FILE, model32, inputs32, log)
        parts["onnx_s"] = round(time.perf_counter() - t_onnx, 2)

    try:
        manifest = _build_runtime(d, src, cfg, model32, dev, dt, fp8, steps, shift, runtime, parts, log)
    except BaseException:
        if onnx_job is not None:
            onnx_job.kill()
            onnx_job.wait()
        raise
    if onnx_job is not None:
        t0 = time.perf_counter()
        onnx_job.wait()
        parts["onnx_wait_s"] = round(time.perf_counter() - t0, 2)
        text = (d / ".onnx.log").read_text(errors="replace")
        (d / ".onnx.log").unlink()
        if onnx_job.returncode != 0:
            lines = [l for l in text.strip().splitlines() if l.strip()]
            raise EngineError(f"ONNX export failed: {lines[-1] if lines else onnx_job.returncode}")
        onnx_info = json.loads((d / ".onnx.json").read_text())
        (d / ".onnx.json").unlink()
        parts["onnx_s"] = round(time.perf_counter() - t_onnx, 2)
        if "ort_check" in onnx_info:
            r = onnx_info["ort_check"]
            log(f"ONNX Runtime vs PyTorch: rel L2 {r['rel_l2']:.2e}, max abs {r['max_abs']:.2e}")
    if onnx:
        log(f"ONNX: {onnx_info['nodes']['total']} nodes, {onnx_info['nodes'][onnx_export.DOMAIN]} "
            f"in {onnx_export.DOMAIN}, {parts['onnx_s']:.1f} s")
        if "ort_check" not in onnx_info:
            onnx_info["ort_check"] = {"skipped": f"one evaluation is too heavy for the CPU check (work {work:.2g} > "
                                                 f"{ORT_CHECK_MAX_WORK:.0e}); CI checks the graph on the tiny preset"}
    manifest["onnx"] = onnx_info
    return manifest


def _build_runtime(d: Path, src, cfg, model32, dev, dt, fp8, steps, shift, runtime, parts, log) -> dict:
    """Weights, σ tables and the chosen runtime (+ layer.pt2) into `d`; returns the manifest (no onnx, files).
    fp8: the block linears and attention in e4m3 (dt is then bf16), judged against the non-engine path with the same
    FP8 model."""
    from safetensors.torch import save_file

    from fourreal_rt.sampler.flow import sigma_schedule

    from . import onnx_export
    from .step import FoldedStep, runtime_state, sigma_tables

    # -- float32 reference of one evaluation on the target (for judging candidates), then weights + σ tables in
    #    the engine dtype ------------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    sigmas = sigma_schedule(steps, shift)                       # [steps + 1], the last (0) is never evaluated
    x, known, mask, _ = (t.to(dev) for t in onnx_export.example_inputs(cfg, seed=1))
    example = (x.to(dt), known.to(dt), mask, sigmas[:1].to(dt).to(dev))     # what the sampler hands the denoiser
    model32 = model32.to(dev).eval()
    with torch.no_grad():
        ref32 = model32(*(t.float() if t.is_floating_point() else t for t in example)).double()
    model = model32.to(dt)                                      # in place: the float32 copy is gone from here on
    tables = sigma_tables(model, sigmas[:-1], dt)
    if fp8:                                                     # quantized on the target as `generate --fp8` does;
        to_fp8(model)                                           # stored in e4m3 (half the bytes to load)
    save_file({k: v.contiguous().cpu() for k, v in runtime_state(model).items()}, str(d / WEIGHTS_FILE))
    save_file({k: v.contiguous().cpu() for k, v in tables.items()}, str(d / TABLES_FILE))
    label = FP8 if fp8 else dtype_name(dt)
    with torch.no_grad():
        base_err = _rel_err(model(*example), ref32)             # the non-engine path's own error in this dtype
    bound = 2 * base_err + CANDIDATE_ATOL[dt]
    log(f"non-engine {label} step vs float32: rel L2 {base_err:.2e}; candidates must stay under {bound:.2e}")
    parts["tables_weights_s"] = round(time.perf_counter() - t0, 2)

    # -- candidate runtimes: build, check against the eager model, time one step ---------------------------------
    kern = kernels_status() if dev.type == "cuda" else {"extension": False, "cuda_ops": []}
    sdpa, sdpa_times = pick_sdpa_backend(cfg, dt, dev, log)
    step = FoldedStep(model, tables, dtype=dt)
    have_kernels = bool(kern["cuda_ops"])
    cands = []                                                  # (name, layer kind, custom ops)
    if runtime in ("auto", "eager"):
        cands.append(("eager", "eager", False))
        if have_kernels:
            cands.append(("eager+kernels", "eager", True))
    # AOTInductor: on request for CUDA targets (its build died with SIGSEGV on an H100 with torch 2.11: see
    # benchmarks/RESULTS.md), by default on the CPU (where it is tested)
    if not fp8 and (runtime == "aoti" or (runtime == "auto" and dev.type == "cpu")):
        cands.append(("aoti", "aoti", False))
        if have_kernels and runtime == "aoti":   # opaque kernels leave inductor little to fuse: on request only
            cands.append(("aoti+kernels", "aoti", True))
    if runtime not in ("auto", "eager", "aoti"):
        raise EngineError(f"unknown runtime {runtime!r} (auto, eager, aoti)")
    graphs = dev.type == "cuda"
    results: dict = {}
    best = None
    for name, kind, custom in cands:
        if kind == "aoti" and (dev.type == "cuda" if ISOLATE_AOTI is None else ISOLATE_AOTI):
            # compiled code: a crash there must not end the build
            r = _candidate_in_process(d, name, custom, cfg, dt, dev, sdpa, graphs, bound, ref32, example, log)
        else:
            r = _try_candidate(d, name, kind, custom, model, tables, step, example, ref32, bound, sdpa, graphs,
                               dev, dt, log)
        results[name] = r
        if r["ok"] and (best is None or r["step_ms"] < results[best]["step_ms"]):
            best = name
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    from fourreal_rt.ops import use_custom_ops
    with torch.no_grad(), use_custom_ops(have_kernels):         # the non-engine step, same machine, for scale:
        timer = _time_cuda if dev.type == "cuda" else _time_cpu  # as `generate` runs it (kernels when built)
        base_ms = round(timer(lambda: model(*example)), 3)
    log(f"non-engine eager step (the model as `generate` runs it{', on our kernels' if have_kernels else ''}): "
        f"{base_ms:.1f} ms")
    if best is None:
        raise EngineError("no engine runtime could be built: " +
                          "; ".join(f"{k}: {v.get('error', 'rel err %.2e' % v.get('rel_err', float('nan')))}"
                                    for k, v in results.items()))
    chosen = results[best]
    if fp8 and dev.type == "cuda":                              # the FP8 attention plans the steps above built
        _save_attention_plans(d / ATTENTION_PLANS_FILE, cfg, dev, log)
    for p in d.glob(".*.pt2"):                                  # keep the winner only
        if chosen.get("file") == p.name:
            p.rename(d / LAYER_FILE)
        else:
            p.unlink()

    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "fourreal_rt": package_version(),
        "model": {"name": src.name, "trained": src.trained, "config": json.loads(cfg.to_json()),
                  "source_config": json.loads(src.cfg.to_json()),
                  "weights_sha256": sha256_file(src.weights_path) if src.trained else None,
                  "path": str(src.directory) if src.directory else None},
        "grid": [cfg.views, cfg.times], "frame": [cfg.frame_h, cfg.frame_w], "batch": 1,
        "steps": steps, "shift": shift, "sigmas": [float(s) for s in sigmas],
        "dtype": label,
        "device": device_info(dev),
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "runtime": {"name": best, "layer": chosen["layer"], "custom_ops": chosen["custom_ops"],
                    "cuda_graph": chosen.get("cuda_graph", False), "sdpa_backend": sdpa,
                    "attention": attention_description(chosen["custom_ops"], sdpa, dt, cfg.head_dim, fp8, dev),
                    "layer_file": LAYER_FILE if chosen["layer"] == "aoti" else None,
                    "step_ms": chosen["step_ms"], "rel_err": chosen["rel_err"]},
        "reference": {"non_engine_rel_err": base_err, "bound": bound},
        "candidates": results, "non_engine_step_ms": base_ms, "sdpa_backends_ms": sdpa_times, "kernels": kern,
        "build": {"parts": parts, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "host": platform.node()},
    }


def _save_attention_plans(path: Path, cfg, dev, log) -> None:
    """cuDNN's FP8 attention plans built on `dev` (ops/attention_fp8.py), serialized: loading them takes 0.04 s where
    building takes 0.6-1.4 s. Nothing is written when none was built (no cudnn-frontend, or the bf16 core ran)."""
    from safetensors.torch import save_file

    from fourreal_rt.ops import attention_fp8
    plans = attention_fp8.serialized_plans(cfg, dev)
    if not plans:
        log("fp8 attention: no cuDNN plan was built (the attention ran in bf16); none stored")
        return
    import cudnn
    save_file({k: torch.frombuffer(bytearray(v), dtype=torch.uint8) for k, v in plans.items()}, str(path),
              metadata={"cudnn": str(torch.backends.cudnn.version()), "cudnn_frontend": cudnn.__version__})
    log(f"fp8 attention: {len(plans)} cuDNN plan(s) stored ({', '.join(plans)})")


# ---- verify + load -------------------------------------------------------------------------------------------

def read_manifest(path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise EngineError(f"{path}: not an engine directory")
    try:
        m = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise EngineError(f"{path}: not an engine (no {MANIFEST})") from None
    except (OSError, ValueError) as e:
        raise EngineError(f"{path / MANIFEST}: unreadable ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise EngineError(f"{path}: {MANIFEST} is not a fourreal-rt engine manifest")
    if m.get("format_version") != FORMAT_VERSION:
        raise EngineError(f"{path}: engine format {m.get('format_version')}, this fourreal-rt reads format "
                          f"{FORMAT_VERSION}: rebuild the engine")
    return m


def engine_config(manifest: dict):
    from fourreal_rt.model.config import GridConfig
    try:
        return GridConfig.from_dict(manifest["model"]["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise EngineError(f"engine manifest has an unreadable model config ({e})") from None


def check_compatible(manifest: dict, device: torch.device | None = None) -> None:
    """Raises EngineError unless this install and machine can run the engine (package, device, torch)."""
    pv = package_version()
    if manifest.get("fourreal_rt") != pv:
        raise EngineError(f"engine built with fourreal-rt {manifest.get('fourreal_rt')}, this is fourreal-rt {pv}: "
                          "rebuild the engine")
    want = manifest.get("device", {})
    if device is None:
        device = torch.device("cuda" if want.get("type") == "cuda" and torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"this run asks for {device} but no CUDA device is available")
    if want.get("type") == "cuda":
        if device.type != "cuda":
            raise EngineError(f"engine built for {describe_device(want)}, this run is on "
                              f"{'cpu' if not torch.cuda.is_available() else str(device)}"
                              f"{'' if torch.cuda.is_available() else ' (no CUDA device)'}")
        have = device_info(device)
        if (have["name"], have["capability"]) != (want.get("name"), want.get("capability")):
            raise EngineError(f"engine built for {describe_device(want)}, this GPU is {describe_device(have)}: "
                              "rebuild the engine on this GPU")
    elif device.type != "cpu":
        raise EngineError(f"engine built for cpu, this run asks for {device}")
    rt = manifest.get("runtime", {})
    if rt.get("layer") == "aoti" and (manifest.get("torch"), manifest.get("cuda")) != (torch.__version__,
                                                                                       torch.version.cuda):
        raise EngineError(f"engine's compiled layer was built with torch {manifest.get('torch')} (CUDA "
                          f"{manifest.get('cuda')}), this is torch {torch.__version__} (CUDA {torch.version.cuda})"
                          ": rebuild the engine")


def check_request(manifest: dict, *, grid: tuple[int, int] | None = None, frame: tuple[int, int] | None = None,
                  steps: int | None = None, shift: float | None = None, dtype: torch.dtype | None = None,
                  cfg=None, weights_sha256: str | None = None, model_name: str | None = None) -> None:
    """Raises EngineError naming the first difference between what is asked for and what the engine was built
    for: grid (window), frame size, steps / σ shift, dtype, model config or weights."""
    V, T = manifest["grid"]
    H, W = manifest["frame"]
    if grid is not None and tuple(grid) != (V, T):
        raise EngineError(f"engine built for a {V}x{T} grid (views x times), asked for {grid[0]}x{grid[1]}")
    if frame is not None and tuple(frame) != (H, W):
        raise EngineError(f"engine built for {H}x{W} frames, asked for {frame[0]}x{frame[1]}")
    if steps is not None and steps != manifest["steps"]:
        raise EngineError(f"engine built for {manifest['steps']} steps, asked for {steps}: rebuild with --steps "
                          f"{steps} or leave --steps out")
    if shift is not None and abs(shift - manifest["shift"]) > 1e-12:
        raise EngineError(f"engine built for σ shift {manifest['shift']}, asked for {shift}")
    if dtype is not None and dtype_name(dtype) != manifest["dtype"]:
        raise EngineError(f"engine built for {manifest['dtype']}, asked for {dtype_name(dtype)}")
    if cfg is not None:
        src_cfg = manifest["model"].get("source_config") or manifest["model"]["config"]
        diffs = [f"{k} {src_cfg[k]} vs {v}" for k, v in json.loads(cfg.to_json()).items()
                 if k in src_cfg and src_cfg[k] != v and k not in ("views", "times")]
        if diffs:
            raise EngineError(f"engine built for model '{manifest['model']['name']}', --model "
                              f"{model_name or '?'} differs: {', '.join(diffs)}")
    if weights_sha256 is not None and weights_sha256 != manifest["model"].get("weights_sha256"):
        have = manifest["model"].get("weights_sha256")
        raise EngineError(f"engine built from other weights (sha256 {str(have)[:12]}…), --model "
                          f"{model_name or '?'} has {weights_sha256[:12]}…")


def engine_device(manifest: dict, device) -> torch.device:
    """The device a run uses: the engine's own kind for "auto" (cpu when it wants CUDA and none is here)."""
    if device != "auto":
        return torch.device(device)
    want = manifest.get("device", {}).get("type", "cpu")
    return torch.device("cuda" if want == "cuda" and torch.cuda.is_available() else "cpu")


def preflight(path, *, model_name: str | None = None, steps: int | None = None, shift: float | None = None,
              dtype: str = "auto", device: str = "auto"):
    """The cheap checks `generate --engine` runs before reading any video: manifest, package, device, and the
    options given explicitly (--model, --steps, --shift, --dtype). Returns (manifest, ModelSource of the engine's
    model).
    File checksums are checked by `load_engine`."""
    from fourreal_rt.model.weights import ModelNotFoundError, ModelSource, resolve

    manifest = read_manifest(path)
    dev = engine_device(manifest, device)
    check_compatible(manifest, dev)
    check_request(manifest, steps=steps, shift=shift, dtype=None if dtype in (None, "auto") else DTYPES.get(dtype))
    cfg = engine_config(manifest)
    if model_name is not None:
        try:
            src = resolve(model_name)
        except ModelNotFoundError as e:
            raise EngineError(str(e)) from None
        check_request(manifest, cfg=src.cfg, model_name=model_name,
                      weights_sha256=sha256_file(src.weights_path) if src.trained else None)
    m = manifest["model"]
    return manifest, ModelSource(m["name"], cfg, Path(path) if m.get("trained") else None)


PART_BYTES = 64 << 20   # files larger than this also get the sha256 of each 64 MiB part: verified in parallel at load


def file_entry(p: Path) -> dict:
    """The manifest's entry for one engine file: sha256 and size, and for large files the parts' sha256 (hashed
    in parallel threads beside the whole file's sha256, one thread's sequential read)."""
    size = p.stat().st_size
    if size <= PART_BYTES:
        return {"sha256": sha256_file(p), "bytes": size}
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        whole = ex.submit(sha256_file, p)
        parts = sha256_parts(p, PART_BYTES)
        return {"sha256": whole.result(), "bytes": size, "part_bytes": PART_BYTES, "parts_sha256": parts}


def verify_sizes(path, manifest: dict, names=None) -> None:
    """Files of the manifest (all, or `names`) present with their sizes; raises EngineError naming the first
    that is not (missing, damaged, or without a manifest entry)."""
    path = Path(path)
    files = manifest.get("files") or {}
    for n in (list(files) if names is None else names):
        if n not in files:
            raise EngineError(f"engine manifest lists no checksum for {n}")
        p = path / n
        if not p.is_file():
            raise EngineError(f"engine file {n} is missing from {path}")
        if p.stat().st_size != files[n]["bytes"]:
            raise EngineError(f"engine file {n} is damaged (size {p.stat().st_size} bytes, manifest says "
                              f"{files[n]['bytes']})")


def verify_files(path, manifest: dict, names=None, workers: int = 4, part_workers: int | None = None) -> dict:
    """sha256 of the engine's files (all, or `names`) against the manifest, `workers` files and `part_workers` parts
    of a large file at a time (None: as `sha256_parts`); raises EngineError naming the first missing or damaged file.
    Returns {name: seconds}."""
    path = Path(path)
    files = manifest.get("files") or {}
    names = list(files) if names is None else list(names)
    verify_sizes(path, manifest, names)

    def one(n):  # -> (name, what is damaged or None, seconds)
        t0 = time.perf_counter()
        f = files[n]
        if "parts_sha256" in f:                                  # every part, in parallel threads
            part = f["part_bytes"]
            hashes = sha256_parts(path / n, part, part_workers)
            bad = [i for i, (h, want) in enumerate(zip(hashes, f["parts_sha256"])) if h != want]
            damage = (f"bytes {bad[0] * part}-{min((bad[0] + 1) * part, f['bytes']) - 1} differ from the manifest's "
                      "sha256") if bad else None
        else:
            damage = "sha256 mismatch with the manifest" if sha256_file(path / n) != f["sha256"] else None
        return n, damage, time.perf_counter() - t0

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(names)))) as ex:
        got = list(ex.map(one, sorted(names, key=lambda n: -files[n]["bytes"])))
    for n, damage, _ in got:
        if damage:
            raise EngineError(f"engine file {n} is damaged ({damage})")
    return {n: round(s, 3) for n, _, s in got}


class Engine:
    """A loaded engine: `denoiser`, its `cfg`, `manifest`, `dtype`, `device`, and load timings.

    The files the step reads are verified before `load_engine` returns; the others (model.onnx and its data)
    are hashed in a background thread while the grid is generated: `finish_verify()` (also called by `info()`)
    waits for that and raises EngineError if one is damaged, before any output is written."""

    def __init__(self, path, manifest, cfg, model, denoiser, device, dtype, timings, pending=None):
        self.path, self.manifest, self.cfg, self.model = Path(path), manifest, cfg, model
        self.denoiser, self.device, self.dtype, self.timings = denoiser, device, dtype, timings
        self._pending = pending

    def finish_verify(self) -> None:
        if self._pending is not None:
            t0 = time.perf_counter()
            done = self._pending.result()                       # raises EngineError for a damaged file
            self.timings["verify_rest_s"] = done
            self.timings["verify_rest_wait_s"] = round(time.perf_counter() - t0, 3)
            self._pending = None

    def info(self) -> dict:
        self.finish_verify()
        m = self.manifest
        return {"path": str(self.path), "runtime": m["runtime"], "steps": m["steps"], "shift": m["shift"],
                "dtype": m["dtype"], "device": m["device"], "grid": m["grid"], "frame": m["frame"],
                "built": m["build"]["date"], "fourreal_rt": m["fourreal_rt"], "load_s": self.timings,
                "graph_s": getattr(self.denoiser.graphed, "timings", None)}


_verify_pool: dict = {}


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    if "pool" not in _verify_pool:
        _verify_pool["pool"] = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="engine-sha")
    return _verify_pool["pool"]


@dataclasses.dataclass
class EarlyStart:
    """What an engine's load can begin before the load itself (`start_early`): the model skeleton (with FP8Linear
    shells for an fp8 engine), and on CUDA a thread paying CUDA's start and the step's library first-use costs
    (`step.warm_up_libraries`), with `timings` of its parts."""
    skeleton: object
    warm_up: concurrent.futures.Future | None
    timings: dict

    def join(self) -> None:
        if self.warm_up is not None:
            self.warm_up.result()


def start_early(manifest: dict, device="auto") -> EarlyStart:
    """Builds the engine's model skeleton and starts the library warm-up thread, for one `load_engine(..., early=)`:
    `generate` calls it right after reading the manifest, so that the warm-up (~0.3 s on the H100 box, longer than
    reading the weights) runs beside its remaining imports and the videos' decoding. The interpreter's exit waits for
    the thread (a run that fails meanwhile is not cut off inside CUDA)."""
    dev = engine_device(manifest, device)
    dt = activation_dtype(manifest["dtype"])
    skeleton = _skeleton(engine_config(manifest))    # pure Python: built before any of the loader's threads start
    if manifest["dtype"] == FP8:       # the weights file holds the e4m3 block linears (as built): shells for them
        to_fp8(skeleton, quantize=False, out_dtype=dt)
    warm, timings = None, {}
    if dev.type == "cuda":
        from .step import warm_up_libraries

        def run():           # an optimisation: the step itself reports real errors
            try:
                warm_up_libraries(skeleton.base, dev, dt, timings)
            except Exception:  # noqa: BLE001
                pass
        warm = in_background(run, name="fourreal-warm-up", wait_at_exit=True)
    return EarlyStart(skeleton, warm, timings)


def load_engine(path, device: str | torch.device = "auto", verify: bool = True,
                early: EarlyStart | None = None) -> Engine:
    """Checks and loads the engine at `path` (a directory the user named). Raises EngineError.

    The weights and σ tables are read in parallel parts into one device buffer each (`tensorfile`), each part's
    sha256 checked on the bytes that are copied; on CUDA the step's library first-use costs are paid beside them
    (from `early`, a `start_early` of this engine's manifest and device, if given)."""
    from safetensors.torch import load as load_safetensors

    from . import tensorfile
    from .step import FoldedStep

    t0 = time.perf_counter()
    path = Path(path)
    manifest = read_manifest(path)
    dev = engine_device(manifest, device)
    check_compatible(manifest, dev)
    cfg = engine_config(manifest)
    dt = activation_dtype(manifest["dtype"])
    rt = manifest["runtime"]
    files = manifest.get("files") or {}
    timings: dict = {}
    fp8_plans = manifest["dtype"] == FP8 and dev.type == "cuda"
    read = [WEIGHTS_FILE, TABLES_FILE]                  # read into the device, checked part by part as they are read
    needed = [rt["layer_file"]] if rt.get("layer_file") else []                 # checked before they are used
    if fp8_plans and ATTENTION_PLANS_FILE in files:
        needed.append(ATTENTION_PLANS_FILE)
    rest = [n for n in files if n not in read + needed]                         # checked while the grid is made
    t1 = time.perf_counter()
    early = early or start_early(manifest, dev)
    timings["skeleton_s"] = round(time.perf_counter() - t1, 3)
    pending_needed = []
    try:
        if verify:  # sizes and presence of every file now
            verify_sizes(path, manifest, read + needed + rest)
            pending_needed = [_pool().submit(verify_files, path, manifest, [n], 1) for n in needed]
        if fp8_plans:   # cuDNN's FP8 attention: its stored plans loaded (after their checksum: native code), or built
            from fourreal_rt.ops import attention_fp8
            plans = None
            if ATTENTION_PLANS_FILE in needed:
                def plans():   # the bytes that are checked are the bytes that are loaded
                    data = (path / ATTENTION_PLANS_FILE).read_bytes()
                    if verify and hashlib.sha256(data).hexdigest() != files[ATTENTION_PLANS_FILE]["sha256"]:
                        raise EngineError(f"engine file {ATTENTION_PLANS_FILE} is damaged (sha256 mismatch with the "
                                          "manifest)")
                    return {k: v.numpy().tobytes() for k, v in load_safetensors(data).items()}
            attention_fp8.prepare(cfg, dev, plans=plans)         # in the background
        t1 = time.perf_counter()
        try:
            weights_file, tables_file = (tensorfile.DeviceFile(path / n, dev, files[n] if verify else None)
                                         for n in read)
            model = _runtime_model(cfg, weights_file.wait(), early.skeleton)
            tables = tables_file.wait()
        finally:
            t2 = time.perf_counter()
            early.join()
        timings.update(file_s=round(t2 - t1, 3), warm_up_wait_s=round(time.perf_counter() - t2, 3),
                       warm_up_s=early.timings)
        layer = None
        if rt.get("layer") == "aoti":
            t1 = time.perf_counter()
            if rt.get("custom_ops"):
                kernels_status()                                 # register the kernels the layer calls
            if verify:                                           # native code: loaded only once its sha256 checks
                pending_needed[needed.index(rt["layer_file"])].result()
            layer = AOTILayer(path / rt["layer_file"], dev)
            timings["layer_s"] = round(time.perf_counter() - t1, 3)
        elif rt.get("custom_ops"):
            kernels_status()
        step = FoldedStep(model, tables, layer=layer, dtype=dt)
        den = EngineDenoiser(step, custom_ops=bool(rt.get("custom_ops")), sdpa=rt.get("sdpa_backend"),
                             cuda_graph=bool(rt.get("cuda_graph")) and dev.type == "cuda")
    except Exception as e:
        early.join()                                             # before the checks below compete with it
        try:
            if verify:                                           # a damaged file explains a failed load best
                for f in pending_needed:
                    f.result()
                if not isinstance(e, (EngineError, tensorfile.DamagedError)):   # (those say what is wrong)
                    verify_files(path, manifest, read)
        except OSError as err:
            raise EngineError(f"engine at {path} could not be read: {err}") from None
        if isinstance(e, EngineError):
            raise
        if isinstance(e, tensorfile.TensorFileError):
            raise EngineError(f"engine file {e}") from None
        raise EngineError(f"engine at {path} could not be loaded: {type(e).__name__}: "
                          f"{(str(e).splitlines() or [''])[0][:200]}") from e
    pending = None
    if verify:
        t1 = time.perf_counter()
        timings["verify_s"] = {k: v for f in pending_needed for k, v in f.result().items()}
        timings["verify_wait_s"] = round(time.perf_counter() - t1, 3)
        # beside the denoising, on a quarter of the cores: on all 16 of the H100 box they slowed the first step's
        # CPU-bound dispatch (step 1 0.28-0.30 -> 0.21-0.26 s with 4; this hashing then takes 0.7 s, not 0.25 s)
        pending = _pool().submit(verify_files, path, manifest, rest, 1, max(1, cores() // 4)) if rest else None
    timings["total_s"] = round(time.perf_counter() - t0, 3)
    return Engine(path, manifest, cfg, model, den, dev, dt, timings, pending)


def engine_pipeline(engine: Engine):
    """A `runtime.pipeline.Pipeline` whose denoiser is the engine's (steps and σ shift fixed by the engine)."""
    from fourreal_rt.model.weights import ModelSource
    from fourreal_rt.runtime.pipeline import Pipeline

    class EnginePipeline(Pipeline):
        def model_info(self) -> dict:
            m = engine.manifest["model"]
            return {"name": m["name"], "trained": m["trained"], "config": m["config"], "fp8": self.fp8,
                    "path": m.get("path"), "weights_sha256": m.get("weights_sha256")}

        def denoise_window(self, known, mask, *, steps=None, seed=0, shift=None, progress=None):
            check_request(engine.manifest, steps=steps, shift=shift)   # None: the defaults, the engine's
            return super().denoise_window(known, mask, steps=steps, seed=seed, shift=shift, progress=progress)

    src = ModelSource(engine.manifest["model"]["name"], engine.cfg, None)
    pipe = EnginePipeline(engine.model, src, engine.device, engine.dtype)
    pipe.default_steps, pipe.default_shift = engine.manifest["steps"], engine.manifest["shift"]
    pipe.denoiser = engine.denoiser
    pipe.engine = engine
    pipe.fp8 = engine.manifest["dtype"] == FP8
    return pipe


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "candidate":
        raise SystemExit(_candidate_main(sys.argv[2], sys.argv[3]))
    raise SystemExit("usage: python -m fourreal_rt.export.engine candidate ENGINE_DIR JOB_DIR")
