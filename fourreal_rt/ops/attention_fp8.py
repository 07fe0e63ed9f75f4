"""FP8 grid attention on CUDA: our RoPE + pack kernel writes q, k, v as e4m3 with one scale per tensor
(`fourreal_C::rope_pack_fp8`), cuDNN's FP8 SDPA computes the attention (through cudnn-frontend's Python graph API,
package `nvidia-cudnn-frontend`: PyTorch exposes no FP8 attention), and our gather kernel writes its e4m3 output back
to the grid layout in bf16 (`fourreal_C::grid_gather_fp8`). Semantics: `twins.grid_attention_fp8`.

On the H100 at the paper preset's shape ([8 sequences, 8 heads, 4608 tokens, 128]) cuDNN's FP8 core takes 0.72 ms
against 1.05 ms for its bf16 one (benchmarks/RESULTS.md). Hopper's FP8 SDPA writes an e4m3 output; the scales
(csrc/grid_attention.h) come from this call's own amax, so nothing saturates and no state carries between calls.
Every call runs on the current stream, its buffers allocated per call (stream-ordered), so it can be captured in a
CUDA graph and run on two streams at once. Building cuDNN's graph for a shape takes 0.6-1.4 s (its kernel is compiled
at run time): an fp8 engine stores the built plans (`serialized_plans`, 0.1 MB each), which load in 0.04 s:
`prepare(cfg, device, plans)` loads them, or builds what is missing, in a background thread when a model or engine is
loaded.
"""
from __future__ import annotations

import math
import threading
import warnings
from concurrent.futures import Future

import torch

from .twins import AXES

N_SCALARS = 10         # csrc/grid_attention.h Fp8AttentionScalar: descale q, k, v, descale s, scale s, scale o,
DESCALE_O = 6          # descale o, amax q, k, v
# the graph's tensors by uid (fixed, so that a deserialized plan is fed the same way): q, k, v, the six scalars, o,
# amax of the probabilities and of o
UID_Q, UID_SCALARS, UID_O, UID_AMAX = 1, 4, 10, 11

_graphs: dict = {}     # (device, S, H, L, hd) -> (graph, workspace bytes)
_building: dict = {}   # (device, S, H, L, hd) -> Future of a build under way (by `prepare` or a first call)
loaded: set = set()    # the keys whose graph came from a stored plan
_lock = threading.Lock()       # guards the dicts above
_cudnn_lock = threading.Lock() # one user of the cuDNN handles at a time: a background build and a call's execute
_handles: dict = {}    # device index -> cuDNN handle
_unusable: dict = {}   # (device, hd) -> why not (str)


class Unsupported(RuntimeError):
    """cuDNN declined to build the FP8 attention graph for a shape."""


def _cuda(device) -> torch.device:
    """torch.device("cuda") with its index made explicit (the keys here are device indices)."""
    device = torch.device(device)
    return torch.device("cuda", torch.cuda.current_device()) if device.index is None else device


def _cudnn():
    import cudnn  # nvidia-cudnn-frontend
    return cudnn


def why_not(q: torch.Tensor) -> str | None:
    """None if cuDNN's FP8 attention takes q's head size on q's device, else why not (one line)."""
    return why_not_on(q.device, q.shape[-1]) if q.is_cuda else "not a CUDA tensor"


def why_not_on(device: torch.device, hd: int) -> str | None:
    """As `why_not`, for head size hd on a CUDA device."""
    device = _cuda(device)
    key = (device.index, hd)
    if key not in _unusable:
        reason = None
        if torch.cuda.get_device_capability(device) < (9, 0):
            reason = "cuDNN's FP8 attention needs compute capability 9.0 or newer"
        elif hd % 16:
            reason = f"head_dim {hd} is not a multiple of 16"
        else:
            try:
                _cudnn()
            except ImportError as e:
                reason = f"cudnn-frontend is not installed (pip install nvidia-cudnn-frontend): {e}"
        _unusable[key] = reason
    return _unusable[key]


def usable(q: torch.Tensor) -> bool:
    """Whether grid_attention_fp8 runs cuDNN's FP8 core for q (else the caller takes the bf16 core; warned once)."""
    reason = why_not(q)
    if reason is not None:
        warnings.warn(f"fourreal FP8 attention unavailable, attention runs in bf16: {reason}", stacklevel=3)
    return reason is None


def decline(q: torch.Tensor, e: Unsupported) -> None:
    """Remembers that cuDNN declined q's head size on its device (so later calls go to the bf16 core directly)."""
    _unusable[(q.device.index, q.shape[-1])] = str(e)
    warnings.warn(f"fourreal FP8 attention unavailable, attention runs in bf16: {e}", stacklevel=3)


def _handle(device: torch.device):
    with _lock:
        if device.index not in _handles:
            with torch.cuda.device(device):
                _handles[device.index] = _cudnn().create_handle()
        return _handles[device.index]


def prepare(cfg, device: torch.device, batch: int = 1, plans=None) -> None:
    """Starts building the graphs a [batch, V, T] grid of `cfg` (a GridConfig) attends with, both axes, in a
    background thread; the first call of a shape waits for its graph. plans: a function returning serialized plans
    (`serialized_plans`) to load instead of building (an engine's checked file); if it raises, that is warned about
    and the graphs are built. Nothing happens where the FP8 core is unusable."""
    if torch.device(device).type != "cuda":
        return
    device = _cuda(device)
    if why_not_on(device, cfg.head_dim) is not None:
        return
    futs = {}
    with _lock:
        for key in grid_keys(cfg, device, batch):
            if key not in _graphs and key not in _building:
                futs[key] = _building[key] = Future()
    if not futs:
        return
    try:
        threading.Thread(target=_prepare, args=(futs, device, plans), daemon=True,
                         name="fourreal-cudnn-fp8-prepare").start()
    except BaseException as e:  # no thread: nobody may wait on these
        _prepare_failed(futs, e)
        raise


def _prepare_failed(futs: dict, e: BaseException) -> None:
    with _lock:
        for key, fut in futs.items():
            if _building.get(key) is fut:
                del _building[key]
            fut.set_exception(e)


def _plan_key(device: torch.device, name: str) -> tuple:
    """(device index, S, H, L, hd) of a `_plan_name`; ValueError if it is not one."""
    S, H, L, hd = (int(n) for n in name.removeprefix("sdpa_fp8_").split("x"))
    return device.index, S, H, L, hd


def _prepare(futs: dict, device: torch.device, plans) -> None:
    blobs = {}
    if plans is not None:
        try:
            raw = plans()
        except BaseException as e:  # noqa: BLE001  (a damaged file: load_engine reports it; nothing of it is loaded)
            warnings.warn(f"fourreal FP8 attention: stored plans not used ({e}); building them", stacklevel=1)
            raw = {}
        for name, blob in raw.items():
            try:
                blobs[_plan_key(device, name)] = blob
            except ValueError:
                warnings.warn(f"fourreal FP8 attention: ignoring {name!r} among the stored plans", stacklevel=1)
    for key, fut in futs.items():
        try:
            if key in blobs:
                try:
                    graph = _build(device, *key[1:], plan=blobs[key])
                    loaded.add(key)
                    fut.set_result(graph)
                    continue
                except Unsupported as e:  # another cuDNN, a damaged plan: build it instead
                    warnings.warn(f"fourreal FP8 attention: stored plan not used, building it: {e}", stacklevel=1)
            fut.set_result(_build(device, *key[1:]))
        except BaseException as e:  # noqa: BLE001  (delivered to the first call of this shape)
            fut.set_exception(e)


def grid_keys(cfg, device: torch.device, batch: int = 1) -> set:
    """The graph keys a [batch, V, T] grid of `cfg` attends with: (device index, S, H, L, hd) of both axes."""
    device, N = _cuda(device), cfg.tokens_per_frame
    return {(device.index, S, cfg.heads, L, cfg.head_dim)
            for S, L in ((batch * cfg.views, cfg.times * N), (batch * cfg.times, cfg.views * N))}


def _graph(device: torch.device, S: int, H: int, L: int, hd: int):
    """cuDNN FP8 SDPA over q, k, v, o: [S, L, H, hd] e4m3 (seen as [S, H, L, hd]), built once per shape: by `prepare`'s
    thread if it started one (waited for here), else here. A failed build is not kept (the next call tries again)."""
    key = (device.index, S, H, L, hd)
    graph = _graphs.get(key)
    if graph is not None:
        return graph
    with _lock:
        fut = _building.get(key)
        mine = fut is None
        if mine:
            fut = _building[key] = Future()
    if mine:
        try:
            fut.set_result(_build(device, S, H, L, hd))
        except BaseException as e:  # noqa: BLE001  (raised just below, to this caller)
            fut.set_exception(e)
    try:
        graph = fut.result()
        with _lock:
            _graphs[key] = graph
    finally:
        with _lock:
            if _building.get(key) is fut:
                del _building[key]
    return graph


def _build(device: torch.device, S: int, H: int, L: int, hd: int, plan: bytes | None = None):
    """Builds the graph (any thread), or deserializes `plan` (from `serialized_plans`): (graph, workspace bytes);
    Unsupported if cuDNN declines the shape or the plan."""
    cudnn = _cudnn()
    e4m3, fp32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
    handle = _handle(device)
    with torch.cuda.device(device), _cudnn_lock:
        graph = cudnn.pygraph(io_data_type=e4m3, intermediate_data_type=fp32, compute_data_type=fp32,
                              handle=handle)
        try:
            if plan is not None:
                graph.deserialize(handle, plan)
            else:
                dim, stride = [S, H, L, hd], [L * H * hd, hd, H * hd, 1]
                q, k, v = (graph.tensor(name=n, dim=dim, stride=stride, data_type=e4m3, uid=UID_Q + i)
                           for i, n in enumerate("qkv"))
                scalars = [graph.tensor(name=n, dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=fp32,
                                        uid=UID_SCALARS + i)
                           for i, n in enumerate(("descale_q", "descale_k", "descale_v", "descale_s", "scale_s",
                                                  "scale_o"))]
                o, _, amax_s, amax_o = graph.sdpa_fp8(q=q, k=k, v=v, descale_q=scalars[0], descale_k=scalars[1],
                                                      descale_v=scalars[2], descale_s=scalars[3], scale_s=scalars[4],
                                                      scale_o=scalars[5], generate_stats=False,
                                                      attn_scale=1.0 / math.sqrt(hd), use_causal_mask=False)
                o.set_output(True).set_dim(dim).set_stride(stride).set_data_type(e4m3).set_uid(UID_O)
                for i, a in enumerate((amax_s, amax_o)):   # written by the kernel; unused (our scales come first)
                    a.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(fp32)
                    a.set_uid(UID_AMAX + i)
                graph.validate()
                graph.build_operation_graph()
                graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
                graph.check_support()
                graph.build_plans()
        except Exception as e:  # cudnn-frontend raises its own error types; any of them means "not this shape"
            what = "plan could not be loaded" if plan is not None else "declined"
            raise Unsupported(f"cuDNN FP8 attention {what} [{S}, {H}, {L}, {hd}]: {e}") from e
    return graph, max(graph.get_workspace_size(), 1)


def _plan_name(S: int, H: int, L: int, hd: int) -> str:
    return f"sdpa_fp8_{S}x{H}x{L}x{hd}"


def serialized_plans(cfg, device: torch.device, batch: int = 1) -> dict[str, bytes]:
    """The execution plans of a grid's graphs built on `device` so far (`grid_keys`), by shape name: cuDNN's
    serialized form, which holds the compiled kernel (loading native code: only from a file whose checksum is known,
    e.g. an engine's)."""
    keys = grid_keys(cfg, device, batch)
    return {_plan_name(*key[1:]): graph.serialize(as_bytes=True)
            for key, (graph, *_) in list(_graphs.items()) if key in keys}


def grid_attention_fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                       axis: str) -> torch.Tensor:
    """q, k, v: [B, V, T, N, H, hd] bf16 (hd contiguous; views into the qkv projection are fine); cos, sin:
    [F, N, hd/2]. Returns [B, V, T, N, H, hd] in q's dtype, contiguous."""
    B, V, T, N, H, hd = q.shape
    a = AXES.index(axis)
    S, L = (B * V, T * N) if axis == "time" else (B * T, V * N)
    C = torch.ops.fourreal_C
    graph, workspace_bytes = _graph(q.device, S, H, L, hd)       # Unsupported before anything runs
    # per call, from the caching allocator (stream-ordered): the two streams of a layer may attend at once
    workspace = torch.empty(workspace_bytes, dtype=torch.uint8, device=q.device)
    amax_out = torch.empty(2, dtype=torch.float32, device=q.device)                                      # unused
    packed = [torch.empty(S, L, H, hd, dtype=torch.float8_e4m3fn, device=q.device) for _ in range(3)]  # q8, k8, v8
    scalars = torch.empty(N_SCALARS, dtype=torch.float32, device=q.device)
    C.rope_pack_fp8(q, k, v, cos, sin, a, *packed, scalars)
    o8 = torch.empty(S, L, H, hd, dtype=torch.float8_e4m3fn, device=q.device)                          # [S, L, H, hd]
    pack = {UID_Q + i: t for i, t in enumerate(packed)}
    pack.update({UID_SCALARS + i: scalars[i:i + 1].view(1, 1, 1, 1) for i in range(6)})
    pack.update({UID_O: o8, UID_AMAX: amax_out[0:1].view(1, 1, 1, 1), UID_AMAX + 1: amax_out[1:2].view(1, 1, 1, 1)})
    handle = _handle(q.device)
    cudnn = _cudnn()
    with _cudnn_lock:
        cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream(q.device).cuda_stream)
        graph.execute(pack, workspace, handle=handle)
    out = torch.empty(B, V, T, N, H, hd, dtype=q.dtype, device=q.device)
    C.grid_gather_fp8(o8, scalars[DESCALE_O:DESCALE_O + 1], a, out)
    return out
