"""The denoiser as ONNX: one velocity evaluation, `fourreal::` ops as nodes of the `fourreal.ops` domain.

    velocity = model(x_noisy [B, V, T, H, W, 3] f32, known [B, V, T, H, W, 3] f32, mask [B, V, T] bool,
                     sigma [B] f32)

Exported with `torch.onnx.export(..., dynamo=True)` inside `use_custom_ops()`; a custom translation table
maps each `torch.ops.fourreal.*` op to one node of domain `fourreal.ops` (op types below, attributes from
the op's non-tensor arguments). Every other node is standard ONNX at opset 18, and every shape is static,
so the graph stays TensorRT-friendly (a plugin per `fourreal.ops` type is all TensorRT would need).
The schemas of the domain are registered with `onnx.defs` so that onnxscript and the checker know them.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

DOMAIN = "fourreal.ops"
DOMAIN_VERSION = 1
OPSET = 18
INPUT_NAMES = ["x_noisy", "known", "mask", "sigma"]
OUTPUT_NAMES = ["velocity"]

# torch op name -> (ONNX op type, tensor inputs, outputs, attributes {name: AttrType name})
OPS = {
    "grid_attention": ("GridAttention", ["q", "k", "v", "cos", "sin"], ["out"], {"axis": "STRING"}),
    "modulated_layernorm": ("ModulatedLayerNorm", ["x", "shift", "scale"], ["out"], {"eps": "FLOAT"}),
    "gated_residual": ("GatedResidual", ["x", "y", "gate"], ["out"], {}),
    "soft_sync": ("SoftSync", ["y_v", "y_t", "mod", "weight", "bias"], ["x_v", "x_t"], {"eps": "FLOAT"}),
    "hard_sync": ("HardSync", ["y_v", "y_t", "mod", "weight", "bias"], ["out"], {}),
}

_registered: dict = {}


def register_schemas() -> None:
    """Registers the `fourreal.ops` schemas with onnx (once per process)."""
    if _registered.get("schemas"):
        return
    from onnx import defs
    from onnx.defs import OpSchema

    for name, (op_type, ins, outs, attrs) in OPS.items():
        if defs.has(op_type, DOMAIN):
            continue
        schema = OpSchema(
            op_type, DOMAIN, DOMAIN_VERSION,
            doc=f"fourreal::{name}; reference semantics: fourreal_rt.ops.twins.{name}",
            inputs=[OpSchema.FormalParameter(i, "T") for i in ins],
            outputs=[OpSchema.FormalParameter(o, "T") for o in outs],
            type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "float tensors")],
            attributes=[OpSchema.Attribute(a, getattr(OpSchema.AttrType, t), "", required=True)
                        for a, t in attrs.items()])
        defs.register_schema(schema)
    _registered["schemas"] = True


def translation_table() -> dict:
    """{torch.ops.fourreal.<op>.default: onnxscript function emitting one `fourreal.ops` node}."""
    import onnxscript

    import fourreal_rt.ops.custom  # noqa: F401  (defines torch.ops.fourreal.*)

    register_schemas()
    fo = onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION)
    F = torch.ops.fourreal

    def grid_attention(q, k, v, cos, sin, axis: str):
        return fo.GridAttention(q, k, v, cos, sin, axis=axis)

    def modulated_layernorm(x, shift, scale, eps: float):
        return fo.ModulatedLayerNorm(x, shift, scale, eps=eps)

    def gated_residual(x, y, gate):
        return fo.GatedResidual(x, y, gate)

    def soft_sync(y_v, y_t, mod, weight, bias, eps: float):
        return fo.SoftSync(y_v, y_t, mod, weight, bias, eps=eps)

    def hard_sync(y_v, y_t, mod, weight, bias):
        return fo.HardSync(y_v, y_t, mod, weight, bias)

    return {F.grid_attention.default: grid_attention, F.modulated_layernorm.default: modulated_layernorm,
            F.gated_residual.default: gated_residual, F.soft_sync.default: soft_sync,
            F.hard_sync.default: hard_sync}


def example_inputs(cfg, batch: int = 1, seed: int = 0, dtype=torch.float32, device="cpu"):
    """Random (non-zero) denoiser inputs for `cfg`: x_noisy, known, mask (row 0 and column 0 known), sigma."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, cfg.views, cfg.times, cfg.frame_h, cfg.frame_w, 3)
    x = torch.randn(shape, generator=g)
    known = torch.rand(shape, generator=g) * 2 - 1
    mask = torch.zeros(batch, cfg.views, cfg.times, dtype=torch.bool)
    mask[:, 0] = mask[:, :, 0] = True
    known = known * mask[..., None, None, None]
    sigma = torch.rand(batch, generator=g) * 0.9 + 0.05
    return tuple(t.to(device, dtype) if t.is_floating_point() else t.to(device) for t in (x, known, mask, sigma))


def export_onnx(model, path, inputs=None, *, external_data: bool | None = None) -> dict:
    """Exports `model` (a TwoStreamModel, float32, CPU) to `path`; returns a report.

    inputs: example (x_noisy, known, mask, sigma); default `example_inputs(model.cfg)`. Weights go to
    `<path>.data` when `external_data` (default: when they exceed 1 GiB; protobuf caps a file at 2 GiB).
    """
    from fourreal_rt.ops import use_custom_ops

    path = Path(path)
    model = model.eval()
    inputs = inputs if inputs is not None else example_inputs(model.cfg)
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if external_data is None:
        external_data = n_bytes > (1 << 30)
    t0 = time.perf_counter()
    with use_custom_ops(), torch.no_grad():
        program = torch.onnx.export(model, tuple(inputs), dynamo=True, opset_version=OPSET,
                                    custom_translation_table=translation_table(),
                                    input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                                    optimize=True, verify=False, report=False, verbose=False)
    t_export = time.perf_counter() - t0
    program.save(str(path), external_data=external_data)
    files = [path.name] + ([path.name + ".data"] if (path.parent / (path.name + ".data")).exists() else [])
    return {"file": path.name, "files": files, "opset": OPSET, "domain": DOMAIN, "external_data": external_data,
            "export_s": round(t_export, 2), "nodes": count_nodes(path)}


def count_nodes(path) -> dict:
    """{"total": n, "fourreal.ops": {op_type: n}} of the ONNX file's main graph (weights not loaded)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    custom: dict = {}
    for n in m.graph.node:
        if n.domain == DOMAIN:
            custom[n.op_type] = custom.get(n.op_type, 0) + 1
    return {"total": len(m.graph.node), DOMAIN: custom}


def check_onnx(path) -> None:
    """onnx.checker on the file (path-based, so external data over 2 GiB is fine); raises on failure."""
    import onnx

    register_schemas()
    onnx.checker.check_model(str(path))


def main(argv=None) -> int:
    """`python -m fourreal_rt.export.onnx_export --model M --out model.onnx [--grid VxT] [--ort-check]`: the
    export as its own process (build-engine runs it beside the GPU work); writes a JSON report."""
    import argparse
    import json

    from fourreal_rt.model.weights import resolve, with_grid

    from .engine import load_source

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--grid", default=None, help="VxT window (default: the model's)")
    ap.add_argument("--ort-check", action="store_true")
    ap.add_argument("--report", required=True)
    a = ap.parse_args(argv)
    src = resolve(a.model)
    model = load_source(src)
    if a.grid:
        V, T = (int(x) for x in a.grid.split("x"))
        model = with_grid(model, V, T)
    inputs = example_inputs(model.cfg)
    rep = export_onnx(model, a.out, inputs)
    check_onnx(a.out)
    rep["checker"] = "ok"
    if a.ort_check:
        from .ort_ops import compare
        rep["ort_check"] = compare(a.out, model, inputs)
    with open(a.report, "w") as f:
        json.dump(rep, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
