"""Engines: the denoiser as an ONNX graph plus a compiled GPU artifact (installed as `fourreal_rt.export`).

- `onnx_export`: `torch.onnx.export(dynamo=True)` of one velocity evaluation under `use_custom_ops()`; the
  `fourreal::` ops become nodes of the `fourreal.ops` domain, everything else is standard ONNX (opset 18,
  static shapes: a TensorRT plugin path can be added where TensorRT exists).
- `ort_ops`: the `fourreal.ops` domain in ONNX Runtime through onnxruntime-extensions Python ops (CPU),
  each calling the op's PyTorch twin.
- `step`: one denoising step with every σ-only vector (adaLN / sync modulation, head) read from tables
  precomputed for the fixed σ schedule, and one functional layer (block on columns, block on rows, sync)
  that takes its weights as inputs, so that one compiled layer serves all L layers.
- `engine`: build / verify / load engine directories (manifest.json with sha256 of every file).

Nothing here is imported by `import fourreal_rt`; engines are code and are only loaded from paths a user
gives.
"""
