"""Engines on the CPU (issue 5): the ONNX graph in ONNX Runtime vs PyTorch, the folded step vs the model,
`build-engine` + `generate --engine` vs `generate --model`, and refusal of damaged or mismatched engines."""
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_video, smooth_frames

from fourreal_rt.cli import main
from fourreal_rt.model import PRESETS, TwoStreamModel
from fourreal_rt.model.weights import save_model

pytest.importorskip("onnxruntime_extensions")
from fourreal_rt.export import engine as E  # noqa: E402
from fourreal_rt.export import onnx_export, ort_ops  # noqa: E402
from fourreal_rt.export.step import FoldedStep, sigma_tables  # noqa: E402

torch.set_grad_enabled(False)
V, T, H, W = 4, 4, 16, 24   # the tiny preset's window and frame size
STEPS = 2

# ORT vs PyTorch, both float32 on the CPU: only the order of operations differs (ORT's MatMul / LayerNorm /
# Softmax kernels vs ATen's; the fourreal.ops nodes run the same twins). Measured on the tiny preset: rel L2
# 1-3e-6, max abs 2-4e-5 with max |ref| ~ 9. Bounds with ~4x headroom:
ONNX_REL_L2 = 1e-5
ONNX_MAX_ABS = 1e-5     # times (1 + max |ref|)


def random_model(sync="soft", seed=0):
    """Tiny two-stream model with non-zero weights everywhere (zero-init layers would hide errors)."""
    torch.manual_seed(seed)
    m = TwoStreamModel(PRESETS["tiny"].replace(sync=sync)).eval()
    g = torch.Generator().manual_seed(seed)
    for p in m.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return m


@pytest.mark.parametrize("sync", ["soft", "hard"])
def test_onnx_graph_runs_in_onnx_runtime_and_matches_pytorch(tmp_path, sync):
    import onnx

    model = random_model(sync)
    inputs = onnx_export.example_inputs(model.cfg)
    rep = onnx_export.export_onnx(model, tmp_path / "model.onnx", inputs)
    onnx_export.check_onnx(tmp_path / "model.onnx")
    m = onnx.load(str(tmp_path / "model.onnx"))
    domains = {n.domain for n in m.graph.node}
    assert domains == {"", onnx_export.DOMAIN}                       # ours + standard ONNX, nothing else
    assert {o.domain: o.version for o in m.opset_import}[""] >= 18
    custom = rep["nodes"][onnx_export.DOMAIN]
    L = model.cfg.depth
    assert custom["GridAttention"] == 2 * L                           # each block, both streams
    assert custom["SoftSync" if sync == "soft" else "HardSync"] == L
    for vi in m.graph.input:                                          # static shapes (TensorRT-friendly)
        assert all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim), vi.name
    r = ort_ops.compare(tmp_path / "model.onnx", model, inputs)
    assert r["finite"]
    assert r["rel_l2"] <= ONNX_REL_L2, r
    assert r["max_abs"] <= ONNX_MAX_ABS * (1 + r["max_abs_ref"]), r


@pytest.mark.parametrize("sync", ["soft", "hard", "average", "weighted"])
def test_folded_step_equals_the_model(sync):
    """σ-only work from the tables + the functional layer give the model's velocity, bit for bit (float32)."""
    from fourreal_rt.ops import use_custom_ops
    from fourreal_rt.sampler.flow import sigma_schedule

    model = random_model(sync, seed=1)
    sig = sigma_schedule(3)[:-1]
    step = FoldedStep(model, sigma_tables(model, sig, torch.float32))
    x, known, mask, _ = onnx_export.example_inputs(model.cfg, seed=2)
    for s in sig.flip(0):                                             # any order: the row is looked up by σ
        ref = model(x, known, mask, s.reshape(1))
        assert torch.equal(step(x, known, mask, s.reshape(1)), ref)
        with use_custom_ops():                                        # the fourreal:: ops (twins on the CPU)
            assert torch.equal(step(x, known, mask, s.reshape(1)), ref)


# ---- build-engine + generate --engine -------------------------------------------------------------------------

def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine")
    model_dir = save_model(random_model("soft", seed=3), d / "model")
    row = smooth_frames(V, H, W, seed=1)
    col = smooth_frames(V, H, W, seed=2)
    col[0] = row[0]
    videos = make_video(d / "in_row.mp4", row, 8), make_video(d / "in_col.mp4", col, 8)
    r = run("build-engine", "--model", model_dir, "--steps", STEPS, "--device", "cpu", "--runtime", "eager",
            "--onnx-check", "off", "-o", d / "E")
    assert r.exit_code == 0, r.output
    return {"dir": d, "model": model_dir, "videos": videos, "engine": d / "E"}


def copy_engine(built, tmp_path):
    return shutil.copytree(built["engine"], tmp_path / "E")


def generate(built, out, *extra):
    row, col = built["videos"]
    return run("generate", row, col, "-o", out, "--quiet", "--seed", 5, *extra)


def test_engine_directory_and_manifest(built):
    e = built["engine"]
    m = json.loads((e / "manifest.json").read_text())
    assert m["format_version"] == E.FORMAT_VERSION and m["fourreal_rt"] == E.package_version()
    assert m["grid"] == [V, T] and m["frame"] == [H, W] and m["steps"] == STEPS and len(m["sigmas"]) == STEPS + 1
    assert m["dtype"] == "fp32" and m["device"]["type"] == "cpu" and m["torch"] == torch.__version__
    assert m["model"]["weights_sha256"] == E.sha256_file(built["model"] / "model.safetensors")
    assert set(m["files"]) == {p.name for p in e.iterdir() if p.name != "manifest.json"}
    assert {"model.onnx", "weights.safetensors", "sigma_tables.safetensors"} <= set(m["files"])
    assert m["runtime"]["name"] == "eager" and m["candidates"]["eager"]["rel_err"] == 0.0
    assert m["runtime"]["attention"] == "torch SDPA, default backend"        # the twins' path, CPU
    assert E.attention_description(True, None, torch.bfloat16, 128).startswith("fourreal_C.grid_attention, ")
    assert E.attention_description(True, None, torch.float32, 128) == "fourreal_C.grid_attention, sdpa core"
    E.verify_files(e, m)


def test_generate_with_engine_equals_generate_with_model(built, tmp_path):
    r = generate(built, tmp_path / "a", "--engine", built["engine"], "--json")
    assert r.exit_code == 0, r.output
    r = generate(built, tmp_path / "b", "--model", built["model"], "--steps", STEPS, "--device", "cpu")
    assert r.exit_code == 0, r.output
    a = np.load(tmp_path / "a" / "grid.npz")["frames"]
    b = np.load(tmp_path / "b" / "grid.npz")["frames"]
    assert np.array_equal(a, b)                                         # float32 on the CPU: the same frames
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["engine"]["runtime"]["name"] == "eager" and meta["steps"] == STEPS
    assert meta["sigma_shift"] == meta["engine"]["shift"] == json.loads((tmp_path / "b" / "meta.json").read_text())[
        "sigma_shift"]                                                  # the engine's σ schedule, recorded
    assert meta["model"]["weights_sha256"] == E.sha256_file(built["model"] / "model.safetensors")


def test_engine_pipeline_from_python_takes_the_engine_steps_and_shift(built):
    """From Python, the engine's pipeline defaults to the steps and σ shift it was built for, records the engine,
    and refuses other steps with the engine's message."""
    pipe = E.engine_pipeline(E.load_engine(built["engine"], device="cpu"))
    row = smooth_frames(T, H, W, seed=1)
    col = smooth_frames(V, H, W, seed=2)
    grid = pipe(row, col, seed=5)
    m = E.read_manifest(built["engine"])
    assert grid.meta["steps"] == STEPS == pipe.default_steps and grid.meta["sigma_shift"] == m["shift"]
    assert grid.meta["engine"]["runtime"]["name"] == "eager"
    with pytest.raises(E.EngineError, match=f"engine built for {STEPS} steps, asked for {STEPS + 1}"):
        pipe(row, col, steps=STEPS + 1)


@pytest.mark.parametrize("damage,words", [
    ("flip", ["weights.safetensors", "damaged", "sha256"]),             # read by the step: checked before use
    ("flip-onnx", ["model.onnx", "damaged", "sha256"]),                 # not read: checked before any output
    ("truncate", ["model.onnx", "damaged", "size"]),
    ("delete", ["sigma_tables.safetensors", "missing"]),
])
def test_damaged_engine_is_refused(built, tmp_path, damage, words):
    e = copy_engine(built, tmp_path)
    if damage.startswith("flip"):
        p = e / ("model.onnx" if damage == "flip-onnx" else "weights.safetensors")
        b = bytearray(p.read_bytes())
        b[-7] ^= 0x01                                                    # one bit of one weight
        p.write_bytes(bytes(b))
    elif damage == "truncate":
        p = e / "model.onnx"
        p.write_bytes(p.read_bytes()[:-10])
    else:
        (e / "sigma_tables.safetensors").unlink()
    r = generate(built, tmp_path / "o", "--engine", e)
    assert r.exit_code == 5, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and all(w in line for w in words), line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("change", ["drop", "add"])
def test_weights_file_of_another_layout_is_refused(built, tmp_path, change):
    """A weights file (checksums aside) lacking a weight the step reads, or holding one the model lacks, is refused:
    a missing weight would otherwise run on uninitialised memory."""
    from safetensors.torch import load_file, save_file
    e = copy_engine(built, tmp_path)
    state = load_file(str(e / "weights.safetensors"))
    if change == "drop":
        del state["base.blocks.0.fc1.weight"]
    else:
        state["base.blocks.0.fc1.weight_q"] = state["base.blocks.0.fc1.weight"].clone()
    save_file(state, str(e / "weights.safetensors"))
    with pytest.raises(E.EngineError, match="does not match its model config") as err:
        E.load_engine(e, device="cpu", verify=False)
    assert "fc1.weight" in str(err.value)


def test_large_files_are_verified_by_parts(tmp_path, monkeypatch):
    """Files over PART_BYTES carry the sha256 of each part (hashed in parallel at load); a damaged part is named."""
    monkeypatch.setattr(E, "PART_BYTES", 4096)
    p = tmp_path / "model.onnx.data"
    p.write_bytes(bytes(range(256)) * 40)                                    # 10,240 bytes: 3 parts
    entry = E.file_entry(p)
    assert entry["part_bytes"] == 4096 and len(entry["parts_sha256"]) == 3
    assert entry["sha256"] == E.sha256_file(p)                               # the whole file's, for provenance
    manifest = {"files": {p.name: entry}}
    E.verify_files(tmp_path, manifest)
    b = bytearray(p.read_bytes())
    b[5000] ^= 0x01
    p.write_bytes(bytes(b))
    with pytest.raises(E.EngineError, match=r"model.onnx.data is damaged \(bytes 4096-8191 differ"):
        E.verify_files(tmp_path, manifest)


def edit_manifest(e, fn):
    p = e / "manifest.json"
    m = json.loads(p.read_text())
    fn(m)
    p.write_text(json.dumps(m))


@pytest.mark.parametrize("case", ["package", "gpu", "format", "steps", "shift", "dtype", "model"])
def test_mismatched_engine_is_refused(built, tmp_path, case):
    e = copy_engine(built, tmp_path)
    extra = []
    if case == "package":
        edit_manifest(e, lambda m: m.update(fourreal_rt="0.0.1"))
        words = ["fourreal-rt 0.0.1", f"fourreal-rt {E.package_version()}"]
    elif case == "gpu":
        edit_manifest(e, lambda m: m.update(device={"type": "cuda", "name": "NVIDIA H100 80GB HBM3",
                                                    "capability": "9.0"}))
        words = ["NVIDIA H100 80GB HBM3 (sm_90)"]
    elif case == "format":
        edit_manifest(e, lambda m: m.update(format_version=99))
        words = ["format 99"]
    elif case == "steps":
        extra, words = ["--steps", STEPS + 1], [f"built for {STEPS} steps", f"asked for {STEPS + 1}"]
    elif case == "shift":
        shift = E.read_manifest(e)["shift"]
        extra, words = ["--shift", shift + 1], [f"built for σ shift {shift}", f"asked for {shift + 1}"]
    elif case == "dtype":
        extra, words = ["--dtype", "bf16"], ["built for fp32", "bf16"]
    else:
        extra, words = ["--model", "small"], ["--model small differs", "dim"]
    r = generate(built, tmp_path / "o", "--engine", e, *extra)
    assert r.exit_code == 5, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and all(w in line for w in words), line


def test_request_for_another_grid_is_refused(built):
    m = E.read_manifest(built["engine"])
    E.check_request(m, grid=(V, T), frame=(H, W), steps=STEPS)
    with pytest.raises(E.EngineError, match=r"built for a 4x4 grid .* asked for 8x8"):
        E.check_request(m, grid=(8, 8))
    with pytest.raises(E.EngineError, match=r"built for 16x24 frames, asked for 72x128"):
        E.check_request(m, frame=(72, 128))


def test_build_engine_refuses_existing_directory(built, tmp_path):
    (tmp_path / "E").mkdir()
    r = run("build-engine", "--model", built["model"], "--device", "cpu", "-o", tmp_path / "E")
    assert r.exit_code == 4 and "exists" in r.output
    r = run("build-engine", "--model", built["model"], "--device", "cpu", "--dtype", "fp8", "--runtime", "aoti",
            "-o", tmp_path / "F")
    assert r.exit_code == 5 and "fp8 engines run the eager layer" in r.output and not (tmp_path / "F").exists()


def test_fp8_engine_equals_generate_fp8(built, tmp_path):
    """An fp8 engine (block linears in e4m3, emulated on the CPU) stores those linears in e4m3, gives `generate
    --fp8`'s frames, records fp8, and refuses a request for another dtype."""
    from safetensors import safe_open
    r = run("build-engine", "--model", built["model"], "--steps", STEPS, "--device", "cpu", "--dtype", "fp8",
            "--onnx-check", "off", "-o", tmp_path / "E8")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "E8" / "manifest.json").read_text())
    assert m["dtype"] == "fp8" and m["runtime"]["name"] == "eager" and m["candidates"]["eager"]["ok"]
    with safe_open(str(tmp_path / "E8" / "weights.safetensors"), "pt") as f:
        stored = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    for name in ("qkv", "fc1", "fc2"):
        assert stored[f"base.blocks.0.{'attn.' if name == 'qkv' else ''}{name}.weight_q"] == "F8_E4M3", stored
    assert not any(k.endswith(("qkv.weight", "fc1.weight", "fc2.weight")) for k in stored)
    r = generate(built, tmp_path / "a", "--engine", tmp_path / "E8")
    assert r.exit_code == 0, r.output
    r = generate(built, tmp_path / "b", "--model", built["model"], "--steps", STEPS, "--device", "cpu", "--dtype",
                 "bf16", "--fp8")
    assert r.exit_code == 0, r.output
    a = np.load(tmp_path / "a" / "grid.npz")["frames"]
    b = np.load(tmp_path / "b" / "grid.npz")["frames"]
    assert np.array_equal(a, b)
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["model"]["fp8"] and meta["engine"]["dtype"] == "fp8"
    r = generate(built, tmp_path / "c", "--engine", tmp_path / "E8", "--dtype", "bf16")
    assert r.exit_code == 5 and "engine built for fp8, asked for bf16" in r.output


def test_tensorfile_loads_as_safetensors_does_and_names_a_damaged_part(tmp_path, monkeypatch):
    """`tensorfile.load` (one buffer, parallel parts, each part's sha256 checked) gives safetensors' own tensors, for
    every dtype an engine stores and odd shapes, with and without part checksums; a flipped byte names its part."""
    from safetensors.torch import load_file, save_file

    from fourreal_rt.export import tensorfile
    g = torch.Generator().manual_seed(3)
    state = {"w_bf16": torch.randn(7, 13, generator=g).bfloat16(), "s_f32": torch.randn(5, generator=g),
             "q_e4m3": (torch.randn(3, 11, generator=g) * 50).to(torch.float8_e4m3fn), "i": torch.arange(9),
             "b": torch.rand(6, generator=g) > 0.5, "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4)}
    p = tmp_path / "w.safetensors"
    save_file(state, str(p), metadata={"note": "x"})
    ref = load_file(str(p))
    for part in (None, 64, 256):                  # whole-file sha256, then parts smaller than the tensors
        if part is not None:
            monkeypatch.setattr(E, "PART_BYTES", part)
        check = E.file_entry(p)
        assert ("parts_sha256" in check) == (part is not None)
        got = tensorfile.load(p, "cpu", check)
        assert set(got) == set(ref)
        for k in ref:
            assert got[k].dtype == ref[k].dtype and got[k].shape == ref[k].shape
            assert torch.equal(got[k].reshape(-1).view(torch.uint8), ref[k].reshape(-1).view(torch.uint8)), k
    monkeypatch.setattr(tensorfile, "READ_PART", 100)
    assert torch.equal(tensorfile.load(p, "cpu")["w_bf16"], ref["w_bf16"])  # unchecked, in parts
    b = bytearray(p.read_bytes())
    b[-5] ^= 0x01                                 # in the data, in the last 256-byte part
    p.write_bytes(bytes(b))
    last = (len(b) - 1) // 256 * 256
    with pytest.raises(tensorfile.DamagedError, match=rf"w.safetensors is damaged \(bytes {last}-{len(b) - 1} differ"):
        tensorfile.load(p, "cpu", check)
    p.write_bytes(b"\xff" * 8 + bytes(b[8:]))   # a header length past the end
    with pytest.raises(tensorfile.TensorFileError, match="not a safetensors file"):
        tensorfile.load(p, "cpu")


def test_engine_with_a_damaged_weights_header_is_refused_as_damaged(built, tmp_path):
    """A header that no longer parses is reported by the checksums, as any other damage; unchecked, as unreadable."""
    e = copy_engine(built, tmp_path)
    p = e / "weights.safetensors"
    b = bytearray(p.read_bytes())
    assert b[8] == ord("{")
    b[8] = ord("[")                                              # the header's JSON no longer parses
    p.write_bytes(bytes(b))
    with pytest.raises(E.EngineError, match=r"weights.safetensors is damaged \(sha256"):
        E.load_engine(e, device="cpu")
    with pytest.raises(E.EngineError, match=r"engine file weights.safetensors: unreadable safetensors header"):
        E.load_engine(e, device="cpu", verify=False)
