"""The `fourreal.ops` domain in ONNX Runtime (CPU) through onnxruntime-extensions Python ops.

onnxruntime-extensions registers every Python op (`@onnx_op`) in its one domain, `ai.onnx.contrib`
(`default_opset_domain()`, fixed in its native library). So a model is loaded as a copy whose
`fourreal.ops` nodes are moved to that domain; the file on disk keeps `fourreal.ops`. Each op calls the
PyTorch twin of `fourreal_rt.ops.twins`, the same reference semantics as the kernels.

The extensions hand a Python op's outputs back through Python lists, so this path is for checking graphs
(tests, small presets), not for speed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .onnx_export import DOMAIN, OPS, register_schemas

_state: dict = {}


def _t(a):
    import torch
    return torch.from_numpy(np.ascontiguousarray(a))


def _n(t):
    return t.detach().contiguous().numpy()


def register() -> str:
    """Defines the Python ops once per process; returns the extensions' domain name."""
    if "domain" in _state:
        return _state["domain"]
    from onnxruntime_extensions import PyCustomOpDef, default_opset_domain, onnx_op

    from fourreal_rt.ops import twins

    f32 = PyCustomOpDef.dt_float

    def attrs(name):
        return {a: {"STRING": PyCustomOpDef.dt_string, "FLOAT": PyCustomOpDef.dt_float}[t]
                for a, t in OPS[name][3].items()}

    def op(name):
        op_type, ins, outs, _ = OPS[name]
        return onnx_op(op_type=op_type, inputs=[f32] * len(ins), outputs=[f32] * len(outs), attrs=attrs(name))

    @op("grid_attention")
    def _grid_attention(q, k, v, cos, sin, axis):
        return _n(twins.grid_attention(_t(q), _t(k), _t(v), _t(cos), _t(sin), axis))

    @op("modulated_layernorm")
    def _modulated_layernorm(x, shift, scale, eps):
        return _n(twins.modulated_layernorm(_t(x), _t(shift), _t(scale), float(eps)))

    @op("gated_residual")
    def _gated_residual(x, y, gate):
        return _n(twins.gated_residual(_t(x), _t(y), _t(gate)))

    @op("soft_sync")
    def _soft_sync(y_v, y_t, mod, weight, bias, eps):
        x_v, x_t = twins.soft_sync(_t(y_v), _t(y_t), _t(mod), _t(weight), _t(bias), float(eps))
        return _n(x_v), _n(x_t)

    @op("hard_sync")
    def _hard_sync(y_v, y_t, mod, weight, bias):
        return _n(twins.hard_sync(_t(y_v), _t(y_t), _t(mod), _t(weight), _t(bias)))

    _state["domain"] = default_opset_domain()
    return _state["domain"]


def for_extensions(model, domain: str):
    """A copy of the ModelProto with `fourreal.ops` nodes (and the opset import) moved to `domain`."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for node in m.graph.node:
        if node.domain == DOMAIN:
            node.domain = domain
    imports = [o for o in m.opset_import if o.domain not in (DOMAIN, domain)]
    del m.opset_import[:]
    m.opset_import.extend(imports + [onnx.helper.make_operatorsetid(domain, 1)])
    return m


def session(path, threads: int | None = None):
    """An ONNX Runtime CPU session for the ONNX file at `path`, with the `fourreal.ops` Python ops."""
    import onnx
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    register_schemas()
    domain = register()
    model = for_extensions(onnx.load(str(path), load_external_data=True), domain)
    so = ort.SessionOptions()
    so.register_custom_ops_library(get_library_path())
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run(path, inputs, threads: int | None = None) -> np.ndarray:
    """Velocity from the ONNX file for inputs (x_noisy, known, mask, sigma) (torch tensors or arrays)."""
    from .onnx_export import INPUT_NAMES

    sess = session(path, threads)
    feed = {name: (x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x))
            for name, x in zip(INPUT_NAMES, inputs)}
    return sess.run(None, feed)[0]


def compare(path, model, inputs) -> dict:
    """ORT (this file) vs PyTorch eager (model, twins) on the same inputs, float32 on the CPU."""
    import torch

    ref = model(*inputs).detach().float().numpy() if not torch.is_grad_enabled() else None
    if ref is None:
        with torch.no_grad():
            ref = model(*inputs).float().numpy()
    out = run(path, inputs)
    diff = np.abs(out.astype(np.float64) - ref)
    return {"max_abs": float(diff.max()), "max_abs_ref": float(np.abs(ref).max()),
            "rel_l2": float(np.linalg.norm(diff) / max(np.linalg.norm(ref), 1e-30)),
            "finite": bool(np.isfinite(out).all()), "shape": list(out.shape), "file": Path(path).name}
