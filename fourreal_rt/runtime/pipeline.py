"""The Python API: `Pipeline.from_pretrained(...)` and the `Grid` it returns."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import __version__
from ..model.config import GridConfig
from ..model.weights import ModelSource, load_model, resolve, sha256_file
from ..sampler import DEFAULT_SHIFT, fill  # noqa: F401  (DEFAULT_SHIFT: re-exported, part of this module's API)
from .threads import in_background

DEFAULT_STEPS = 16


@dataclass
class Grid:
    """A 4D video: frames[v, t] is the frame seen from viewpoint v at time t."""
    frames: np.ndarray                  # uint8 [V, T, H, W, 3]
    meta: dict = field(default_factory=dict)

    def view(self, v: int) -> np.ndarray:
        """The fixed-view video of viewpoint v: [T, H, W, 3]."""
        return self.frames[v]

    def time(self, t: int) -> np.ndarray:
        """The freeze-time video at time t: [V, H, W, 3]."""
        return self.frames[:, t]

    def save(self, directory, *, fps: float = 8.0, overwrite: bool = False) -> Path:
        from ..io.outputs import write_outputs
        return write_outputs(directory, self.frames, self.meta, fps=fps, overwrite=overwrite)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r} (auto, fp32, bf16, fp16)")
    return table[dtype]


class Pipeline:
    """Two videos in, a V x T grid out."""

    def __init__(self, model, source: ModelSource, device: torch.device, dtype: torch.dtype):
        self.model, self.source, self.device, self.dtype = model, source, device, dtype
        self.cfg: GridConfig = source.cfg
        self.denoiser: Callable = model     # an engine may replace this with a compiled step
        self.kernels = False                # our CUDA kernels in use (set by from_pretrained on CUDA)
        self.fp8 = False                    # block linears and attention in e4m3 (set by from_pretrained)
        self.default_steps = DEFAULT_STEPS  # steps when a call gives none (an engine: the ones it was built for)
        self.default_shift = DEFAULT_SHIFT  # σ shift when a call gives none (an engine: the one it was built for)
        self.engine = None                  # the engine whose step is the denoiser, if any (export.engine)
        self.first_step_s = None            # first step of the first window since reset to None, synchronized (s)
        self._weights_sha256 = None         # Future: the weights file's sha256 for meta.json, hashed while we denoise
        if source.trained:                  # (0.8 GB of paper-preset weights: 1.4 s that would follow the last step)
            self._weights_sha256 = in_background(sha256_file, source.weights_path)

    def _kernel_denoiser(self, *args):
        """The model with its grid ops routed to the `fourreal::` custom ops (our CUDA kernels)."""
        from .. import ops
        with ops.use_custom_ops():
            return self.model(*args)

    @classmethod
    def from_pretrained(cls, name_or_path: str = "small", device: str = "auto", dtype: str = "auto",
                        fp8: bool = False) -> "Pipeline":
        """fp8: the block linears (row-wise scales) and the attention cores (per-tensor scales) in e4m3 (ops/fp8.py,
        ops/attention_fp8.py; quality cost in RESULTS.md)."""
        src = resolve(name_or_path)
        dev = pick_device(device)
        dt = pick_dtype(dtype, dev)
        if fp8 and dev.type == "cuda":   # cuDNN's FP8 attention graphs build while the weights load
            from ..ops import attention_fp8
            attention_fp8.prepare(src.cfg, dev)
        model = load_model(src).to(dev, dt)
        if fp8:
            from ..ops.fp8 import convert_to_fp8
            convert_to_fp8(model)
        pipe = cls(model, src, dev, dt)
        pipe.fp8 = fp8
        if dev.type == "cuda":
            from ..ops import backend
            if backend.available():   # compiled kernels present: use them (else the PyTorch twins run)
                pipe.denoiser, pipe.kernels = pipe._kernel_denoiser, True
        return pipe

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.cfg.views, self.cfg.times

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.cfg.frame_h, self.cfg.frame_w

    def model_info(self) -> dict:
        src = self.source
        return {"name": src.name, "trained": src.trained, "config": dict(vars(self.cfg)), "cuda_kernels": self.kernels,
                "fp8": self.fp8,
                "path": str(src.directory) if src.directory else None,
                "weights_sha256": self._weights_sha256.result() if self._weights_sha256 else None}

    def denoise_window(self, known: np.ndarray, mask: np.ndarray, *, steps: int | None = None, seed: int = 0,
                       shift: float | None = None, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Fill the unknown frames of one model-sized window.

        known: uint8 [V, T, H, W, 3] (values where mask is False are ignored); mask: bool [V, T].
        Returns uint8 [V, T, H, W, 3]; frames where mask is True are returned exactly as given.
        """
        V, T = self.grid_shape
        H, W = self.frame_size
        if known.shape != (V, T, H, W, 3) or known.dtype != np.uint8:
            raise ValueError(f"known must be uint8 {(V, T, H, W, 3)}, got {known.dtype} {known.shape}")
        if mask.shape != (V, T):
            raise ValueError(f"mask must be {(V, T)}, got {mask.shape}")
        steps = self.default_steps if steps is None else steps
        shift = self.default_shift if shift is None else shift
        t0 = time.perf_counter()

        def step_done(i):  # the first step, synchronized once: one-time costs (plans, graph capture) show up here
            if i == 1 and self.first_step_s is None:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                self.first_step_s = round(time.perf_counter() - t0, 3)
            if progress is not None:
                progress(i)
        out = fill(self.denoiser, torch.from_numpy(known)[None],                              # [1, V, T, H, W, 3]
                   torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))[None],             # [1, V, T]
                   steps=steps, seed=seed, shift=shift, device=self.device, dtype=self.dtype, progress=step_done)
        return out[0].numpy()

    def __call__(self, row: np.ndarray, col: np.ndarray, *, steps: int | None = None, seed: int = 0,
                 shift: float | None = None, progress: Callable[[int], None] | None = None) -> Grid:
        """row: uint8 [T, H, W, 3] (view 0, fixed-view video); col: uint8 [V, H, W, 3] (time 0,
        freeze-time video). Frame [0, 0] is taken from the row. Returns the whole grid."""
        V, T = self.grid_shape
        H, W = self.frame_size
        if row.shape != (T, H, W, 3) or col.shape != (V, H, W, 3):
            raise ValueError(f"row must be [T={T}, {H}, {W}, 3] and col [V={V}, {H}, {W}, 3]; "
                             f"got {row.shape} and {col.shape}")
        known = np.zeros((V, T, H, W, 3), np.uint8)
        known[:, 0] = col
        known[0, :] = row
        mask = np.zeros((V, T), bool)
        mask[0, :] = mask[:, 0] = True
        t0 = time.perf_counter()
        steps = self.default_steps if steps is None else steps
        shift = self.default_shift if shift is None else shift
        self.first_step_s = None
        frames = self.denoise_window(known, mask, steps=steps, seed=seed, shift=shift, progress=progress)
        meta = {**self.run_meta(steps, seed, shift),
                "timings_s": {"denoise": round(time.perf_counter() - t0, 3), "first_step": self.first_step_s}}
        return Grid(frames, meta)

    def run_meta(self, steps: int, seed: int, shift: float) -> dict:
        """What a grid's meta.json records of the run (a whole grid or a windowed one)."""
        return {"fourreal_rt": __version__, "model": self.model_info(), "seed": seed, "steps": steps,
                "sigma_shift": shift, "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "engine": self.engine.info() if self.engine is not None else None, "torch": torch.__version__}
