"""One denoising step of the two-stream model, rearranged for an engine.

`TwoStreamModel.forward` (eq. 4 with a sync layer after every block) spends part of every step on work
that depends on σ alone: the σ and context embeddings, every block's adaLN vectors (for both streams),
every sync layer's modulation and the head's adaLN. The σ schedule of an engine is fixed, so that work is
done once at build time (`sigma_tables`); a step looks its row up on the device (no host sync) and runs

    x = embed(x_noisy, known, mask)                                   # [B, V, T, N, D]
    for l in 0..L-1:  x^v, x^t = layer(x^v, x^t, tables[l], weights[l])
    velocity = (head(x^v, c^v) + head(x^t, c^t)) / 2

`Layer` is one layer as a function of its inputs *and its weights*: block φ_l on the columns (view
stream), φ_l on the rows (time stream), then the sync layer; every layer has the same shapes, so one
compiled `Layer` serves all L of them. A block's residual branches are `Block`'s own (`block_residuals`); the
attention and sync restate `Attention.forward` / the sync modules with the weights as inputs (the tests hold the
step to the model's output, bit for bit).
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from fourreal_rt import ops
from fourreal_rt.model.blocks import DYNAMIC, FREEZE_TIME, block_residuals, input_features, velocity
from fourreal_rt.ops.fp8 import FP8Linear
from fourreal_rt.ops.fused import gated_linear, linear_mlp, linear_residual, mlp
from fourreal_rt.ops.streams import both

SUPPORTED_SYNC = ("soft", "hard", "average", "weighted")
LAYER_WEIGHTS = ("qkv_w", "qkv_b", "proj_w", "proj_b", "fc1_w", "fc1_b", "fc2_w", "fc2_b", "sync_w", "sync_b")
# state-dict keys the step does not need at run time: they only make σ-only vectors (folded into tables)
FOLDED_PREFIXES = ("base.sigma_embed.", "base.context_embed.", "base.final_ada.")
FOLDED_INFIXES = (".ada.",)


def runtime_state(model) -> dict:
    """The model's state dict without the weights whose work is folded into the σ tables."""
    return {k: v for k, v in model.state_dict().items()
            if not k.startswith(FOLDED_PREFIXES) and not any(s in k for s in FOLDED_INFIXES)}


@torch.no_grad()
def sigma_tables(model, sigmas: torch.Tensor, dtype: torch.dtype) -> dict:
    """Every σ-only vector of the model for each σ in `sigmas` [S], batch 1, as the model computes them.

    σ is rounded to `dtype` first, as the sampler hands it to the denoiser (`sample(..., dtype=)`), and
    every vector is computed by the model's own modules on the model's device and dtype, one σ at a
    time, so that the engine's modulation is the non-engine path's, bit for bit. Returns float tensors:
      sigma [S] (float32 of the rounded σ), block [S, L, 2, 1, 6D] (view stream, time stream),
      sync [S, L, 1, k D] (k = 4 soft, 2 hard, 0 otherwise), head [S, 2, 1, 2D] (view, time).
    """
    base, cfg = model.base, model.cfg
    dev = base.patch_embed.weight.device
    rounded = sigmas.to(dtype)
    rows = {"block": [], "sync": [], "head": []}
    for sig in rounded:
        sig = sig.reshape(1).to(dev)                                           # [1]
        s, c_t = base.conditioning(sig, DYNAMIC)                               # [1, D] each
        c_v = s + base.context_embed.weight[FREEZE_TIME]
        rows["block"].append(torch.stack([torch.stack([blk.ada(F.silu(c_v)), blk.ada(F.silu(c_t))])
                                          for blk in base.blocks]))            # [L, 2, 1, 6D]
        if cfg.sync in ("soft", "hard"):
            rows["sync"].append(torch.stack([sy.ada(F.silu(s)) for sy in model.syncs]))   # [L, 1, kD]
        else:
            rows["sync"].append(torch.zeros(cfg.depth, 1, 0, device=dev, dtype=dtype))
        rows["head"].append(torch.stack([base.final_ada(F.silu(c_v)), base.final_ada(F.silu(c_t))]))  # [2, 1, 2D]
    out = {k: torch.stack(v).contiguous() for k, v in rows.items()}
    out["sigma"] = rounded.float().to(dev)
    return out


def block_apply(x, mod, cos, sin, axis: str, heads: int, qkv_w, qkv_b, proj_w, proj_b, fc1_w, fc1_b, fc2_w, fc2_b):
    """`Block.forward` with its adaLN vector and weights given. x: [B, V, T, N, D]; mod: [B, 6D].
    A weight is a tensor, or in FP8 engines an FP8Linear layer (ops/fp8.py) with its bias None; FP8 engines run the
    attention core in e4m3 too (ops.grid_attention_fp8), as `generate --fp8` does."""
    fp8 = isinstance(qkv_w, FP8Linear)                                          # an FP8 engine's layer

    def attend(h, x, g):                                                        # `Attention.forward`
        B, V, T, N, D = h.shape
        qkv = qkv_w(h) if fp8 else F.linear(h, qkv_w, qkv_b)                    # [B, V, T, N, 3D]
        q, k, v = qkv.view(B, V, T, N, 3, heads, D // heads).unbind(4)         # [B, V, T, N, H, hd]
        o = (ops.grid_attention_fp8 if fp8 else ops.grid_attention)(q, k, v, cos, sin, axis).flatten(-2)  # [B, V, T, N, D]
        if isinstance(proj_w, FP8Linear):                                       # x + g ⊙ proj(o)
            return gated_linear(x, o, proj_w, g)
        return linear_residual(x, o, proj_w, proj_b, g)

    def feed_forward(h, x, g):                                                  # x + g ⊙ MLP(h)
        if isinstance(fc1_w, FP8Linear):
            return mlp(h, fc1_w, fc2_w, x, g)
        return linear_mlp(h, fc1_w, fc1_b, fc2_w, fc2_b, x, g)
    return block_residuals(x, mod, attend, feed_forward, fp8 and isinstance(fc1_w, FP8Linear))


class Layer(nn.Module):
    """Layer l of the two-stream model as a pure function (no parameters): view-stream block, time-stream
    block, sync (eqs. 8-10 / supplement eqs. 1-2).

    forward(x_v, x_t [B, V, T, N, D], mod_v, mod_t [B, 6D], mod_s [B, kD], cos_v, sin_v [V, N, hd/2],
            cos_t, sin_t [T, N, hd/2], qkv_w, qkv_b, proj_w, proj_b, fc1_w, fc1_b, fc2_w, fc2_b,
            sync_w, sync_b) -> (x_v, x_t)
    sync_w / sync_b: the sync's linear (soft [2D, 2D] / [2D], hard [D, 2D] / [D]); for "weighted", sync_w
    is w_l as a 0-d tensor; for "average" both are unused.
    """

    def __init__(self, heads: int, sync: str):
        super().__init__()
        if sync not in SUPPORTED_SYNC:
            raise ValueError(f"engines support sync {SUPPORTED_SYNC}; '{sync}' is an ablation baseline")
        self.heads, self.sync = heads, sync

    def forward(self, x_v, x_t, mod_v, mod_t, mod_s, cos_v, sin_v, cos_t, sin_t,
                qkv_w, qkv_b, proj_w, proj_b, fc1_w, fc1_b, fc2_w, fc2_b, sync_w, sync_b):
        w = (qkv_w, qkv_b, proj_w, proj_b, fc1_w, fc1_b, fc2_w, fc2_b)
        y_v, y_t = both(x_v.device,
                        lambda: block_apply(x_v, mod_v, cos_v, sin_v, "view", self.heads, *w),   # view stream: columns
                        lambda: block_apply(x_t, mod_t, cos_t, sin_t, "time", self.heads, *w))   # time stream: rows
        if self.sync == "soft":
            return ops.soft_sync(y_v, y_t, mod_s, sync_w, sync_b)
        if self.sync == "hard":
            x = ops.hard_sync(y_v, y_t, mod_s, sync_w, sync_b)
            return x, x.clone()
        if self.sync == "average":
            x = (y_v + y_t) / 2
            return x, x.clone()
        wl = sync_w.to(y_v.dtype)                                                # weighted: w_l
        return (1 - wl) * y_v + wl * y_t, (1 - wl) * y_t + wl * y_v


def layer_weights(model, dtype=None, device=None) -> list[tuple]:
    """Per layer, the weights `Layer` takes (LAYER_WEIGHTS order), in `dtype` on `device`. A block linear that is
    an FP8Linear (FP8 engines) is passed as the layer itself, its bias slot None."""
    cfg = model.cfg

    def linear(lin):
        return (lin, None) if isinstance(lin, FP8Linear) else (lin.weight, lin.bias)

    def cast(x):
        if not isinstance(x, torch.Tensor):
            return x
        return x.detach().to(device=device or x.device, dtype=dtype if x.is_floating_point() and x.dim() else x.dtype)

    out = []
    for l, blk in enumerate(model.base.blocks):
        t = [*linear(blk.attn.qkv), *linear(blk.attn.proj), *linear(blk.fc1), *linear(blk.fc2)]
        ref = model.base.patch_embed.weight                                     # never FP8: a plain tensor
        if cfg.sync in ("soft", "hard"):
            t += [model.syncs[l].linear.weight, model.syncs[l].linear.bias]
        elif cfg.sync == "weighted":
            t += [torch.tensor(model.syncs[l].w, dtype=torch.float32), ref.new_zeros(0)]
        else:
            t += [ref.new_zeros(0), ref.new_zeros(0)]
        out.append(tuple(cast(x) for x in t))
    return out


class FoldedStep:
    """The denoiser `(x_noisy, known, mask, sigma) -> velocity` of an engine: batch 1, σ from the table.

    layer: a callable with `Layer`'s signature (the eager `Layer`, or a compiled one returning a list).
    """

    def __init__(self, model, tables: dict, layer=None, dtype=None):
        cfg = model.cfg
        if cfg.sync not in SUPPORTED_SYNC:
            raise ValueError(f"engines support sync {SUPPORTED_SYNC}; '{cfg.sync}' is an ablation baseline")
        self.model, self.cfg, self.base = model, cfg, model.base
        dev = model.base.patch_embed.weight.device
        self.dtype = dtype or model.base.patch_embed.weight.dtype
        self.tables = {k: v.to(dev) for k, v in tables.items()}
        self.weights = layer_weights(model, self.dtype, dev)
        self.rope_v = self.base.rope(cfg.views, dev)                            # cos, sin [V, N, hd/2]
        self.rope_t = self.base.rope(cfg.times, dev)                            # cos, sin [T, N, hd/2]
        self.layer = layer if layer is not None else Layer(cfg.heads, cfg.sync)

    def rows(self, sigma: torch.Tensor):
        """Table rows of σ (the sampler's σ [B], all equal): nearest tabulated σ, found on the device."""
        idx = (self.tables["sigma"] - sigma[:1].float()).abs().argmin().view(1)  # [1]
        return (self.tables["block"].index_select(0, idx)[0],                   # [L, 2, 1, 6D]
                self.tables["sync"].index_select(0, idx)[0],                    # [L, 1, kD]
                self.tables["head"].index_select(0, idx)[0])                    # [2, 1, 2D]

    def __call__(self, x_noisy, known, mask, sigma):
        base = self.base
        blk, syn, head = self.rows(sigma)
        x = base.embed_input(x_noisy, known, mask)                              # [1, V, T, N, D]
        x_v = x_t = x
        for l, w in enumerate(self.weights):
            out = self.layer(x_v, x_t, blk[l, 0], blk[l, 1], syn[l], *self.rope_v, *self.rope_t, *w)
            x_v, x_t = out[0], out[1]
        out = (self._head(x_v, head[0]) + self._head(x_t, head[1])) / 2       # [1, V, T, H, W, 3]
        return velocity(out, x_noisy, known, mask, sigma, self.cfg.prediction)

    def _head(self, x, mod):
        sh, sc = mod.chunk(2, -1)                                               # [1, D] each
        return self.base.unpatchify(self.base.final(ops.modulated_layernorm(x, sh, sc)))


def warm_up_libraries(base, device: torch.device, dtype: torch.dtype, timings: dict | None = None) -> None:
    """Pays the first-use costs of the PyTorch and cuBLAS code a step runs around its layers — the patch embedding and
    head GEMMs at the step's own shapes (cuBLAS's set-up and kernels), the σ-row lookup, the input masking and the
    velocity — on zeros, with no weights (`base` only lends its config and reshapes). Meant for a thread of its own
    while an engine's weights load: measured on the H100, the first step spent 130 ms of CPU in its first GEMMs, 40 ms
    in its first index_select and ~40 ms in its first elementwise ops (benchmarks/RESULTS.md). PyTorch hands a
    finished thread's cuBLAS handles to the next thread that asks. timings: filled with each part's seconds
    (synchronized with the current stream, which other threads may be using too): CUDA's start (the first
    allocation), the lookup, the GEMMs, the rest."""
    cfg = base.cfg
    shape = (1, cfg.views, cfg.times, cfg.frame_h, cfg.frame_w, 3)
    timings = {} if timings is None else timings
    t = [time.perf_counter()]

    def lap(name):
        torch.cuda.current_stream(device).synchronize()
        t.append(time.perf_counter())
        timings[name] = round(t[-1] - t[-2], 3)

    def zeros(*size, dt=dtype):
        return torch.zeros(*size, device=device, dtype=dt)
    with torch.no_grad():
        x, mask, sigma = zeros(*shape), torch.ones(shape[:3], dtype=torch.bool, device=device), zeros(1)
        lap("cuda_start_s")
        table = zeros(4, 2, dt=torch.float32)                                   # as FoldedStep.rows
        table.index_select(0, (table[:, 0] - sigma[:1].float()).abs().argmin().view(1))
        lap("lookup_s")
        w_in, w_out = base.patch_embed.weight, base.final.weight                # as embed_input
        tokens = F.linear(base.patchify(input_features(x, x, mask)), zeros(*w_in.shape), zeros(w_in.shape[0]))
        out = base.unpatchify(F.linear(tokens, zeros(*w_out.shape), zeros(w_out.shape[0])))      # as _head
        lap("gemms_s")
        velocity(out, x, x, mask, sigma, cfg.prediction)
        lap("velocity_s")


class GraphedStep:
    """A step captured into one CUDA graph and replayed for every σ (inputs copied into static buffers;
    the σ row is looked up inside the graph, so one graph serves the whole schedule).

    The warm-up runs the step eagerly on the example inputs (lazy initialisation must happen outside a capture);
    its result is kept for `take_first()`, the step's output for those inputs, so the first call need not replay.
    `timings`: the CPU seconds of the warm-up and of the capture."""

    def __init__(self, step, example, warmup: int = 1):
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (lazy set-up has to happen outside the capture), got {warmup}")
        self.step = step
        t0 = time.perf_counter()
        self.static = [t.clone() for t in example]                               # x_noisy, known, mask, sigma
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s), torch.no_grad():
            for _ in range(warmup):
                self.first = step(*self.static)
        torch.cuda.current_stream().wait_stream(s)
        self.first.record_stream(torch.cuda.current_stream())                    # read on this stream later
        t1 = time.perf_counter()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():     # synchronizes and empties the cache first: the
            self.out = step(*self.static)                       # graph's pool reuses the warm-up's memory
        self.timings = {"warmup_s": round(t1 - t0, 3), "capture_s": round(time.perf_counter() - t1, 3)}

    def take_first(self) -> torch.Tensor:
        """The warm-up's output (the step on the example inputs), handed over once."""
        out, self.first = self.first, None
        return out

    def __call__(self, x_noisy, known, mask, sigma):
        for dst, src in zip(self.static, (x_noisy, known, mask, sigma)):
            if dst.data_ptr() != src.data_ptr():
                dst.copy_(src)
        self.graph.replay()
        return self.out.clone()
