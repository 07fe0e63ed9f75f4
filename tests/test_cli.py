"""`fourreal-rt generate` end to end on the tiny preset: outputs, exactness, seeds, bad input."""
import importlib.util
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_video, smooth_frames

from fourreal_rt.cli import main
from fourreal_rt.sampler import DEFAULT_SHIFT

H, W = 16, 24               # the tiny preset's frame size (its window is 4 x 4)
V, T = 5, 6                 # the grid the fixture videos give: as many frames as the inputs have


@pytest.fixture()
def videos(tmp_path):
    row = smooth_frames(6, H, W, seed=1)
    col = smooth_frames(5, H, W, seed=2)
    col[0] = row[0]
    return make_video(tmp_path / "in_row.mp4", row, 8), make_video(tmp_path / "in_col.mp4", col, 8)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def generate(row, col, out, *extra):
    return run("generate", row, col, "-o", out, "--model", "tiny", "--steps", 2, "--quiet", *extra)


def test_generate_writes_every_output_and_keeps_inputs_exact(videos, tmp_path):
    row, col = videos
    out = tmp_path / "OUT"
    r = generate(row, col, out)
    assert r.exit_code == 0, r.output
    names = {p.name for p in out.iterdir()}
    expected = {"grid.npz", "meta.json", "grid.mp4", "viewer.html"} | \
        {f"view_{v:03d}.mp4" for v in range(V)} | {f"time_{t:03d}.mp4" for t in range(T)}
    assert names == expected
    frames = np.load(out / "grid.npz")["frames"]
    assert frames.dtype == np.uint8 and frames.shape == (V, T, H, W, 3)
    from fourreal_rt.io.video import read_frames
    row_in, _ = read_frames(row, T, (H, W))
    col_in, _ = read_frames(col, V, (H, W))
    assert np.array_equal(frames[0], row_in)                 # row 0 is the (resized) row input, exactly
    assert np.array_equal(frames[1:, 0], col_in[1:])         # column 0 is the column input, exactly
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["steps"] == 2 and meta["model"]["name"] == "tiny"
    assert meta["inputs"]["row"]["sha256"] and "timings_s" in meta


def test_same_seed_same_frames_different_seed_different(videos, tmp_path):
    row, col = videos
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert generate(row, col, tmp_path / name, "--seed", seed).exit_code == 0
    a, b, c = (np.load(tmp_path / n / "grid.npz")["frames"] for n in "abc")
    assert np.array_equal(a, b)
    assert not np.array_equal(a[1:, 1:], c[1:, 1:])


def test_shift_option_changes_the_schedule_and_is_recorded(videos, tmp_path):
    import torch
    from fourreal_rt.model import PRESETS, TwoStreamModel
    from fourreal_rt.model.weights import save_model
    row, col = videos
    torch.manual_seed(0)
    model = TwoStreamModel(PRESETS["tiny"])
    with torch.no_grad():                       # non-zero everywhere: the random preset's zero-init head would
        for p in model.parameters():            # give every schedule the same (noise) frames
            p.copy_(torch.randn(p.shape) * 0.2)
    save_model(model, tmp_path / "m")
    assert generate(row, col, tmp_path / "a", "--model", tmp_path / "m", "--shift", 3).exit_code == 0
    assert generate(row, col, tmp_path / "b", "--model", tmp_path / "m").exit_code == 0
    a, b = (np.load(tmp_path / n / "grid.npz")["frames"] for n in "ab")
    assert not np.array_equal(a[1:, 1:], b[1:, 1:])
    meta_a, meta_b = (json.loads((tmp_path / n / "meta.json").read_text()) for n in "ab")
    assert meta_a["sigma_shift"] == 3.0 and meta_b["sigma_shift"] == DEFAULT_SHIFT
    r = generate(row, col, tmp_path / "d", "--model", tmp_path / "m", "--shift", 5, "--json")
    assert r.exit_code == 0 and json.loads(r.output.strip().splitlines()[-1])["sigma_shift"] == 5.0
    r = generate(row, col, tmp_path / "c", "--shift", 0)
    assert r.exit_code == 2 and not (tmp_path / "c").exists()


def test_help_states_the_sampler_default_shift():
    """The CLI imports no torch, so its --shift help restates DEFAULT_SHIFT: it must be the same number."""
    import re
    for command in ("generate", "build-engine"):
        text = " ".join(CliRunner().invoke(main, [command, "--help"]).output.split())
        assert re.search(rf"\[default: (generate's, )?{DEFAULT_SHIFT:g}\b", text), text


def test_existing_output_needs_overwrite(videos, tmp_path):
    row, col = videos
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = generate(row, col, out)
    assert r.exit_code == 4 and "exists" in r.output and "--overwrite" in r.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # untouched
    assert generate(row, col, out, "--overwrite").exit_code == 0
    assert (out / "grid.npz").exists() and not (out / "keep.txt").exists()


def bad_input_cases(tmp_path, good):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    truncated = tmp_path / "cut.mp4"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    short = make_video(tmp_path / "short.mp4", smooth_frames(2, H, W), 8)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    return {"missing": (tmp_path / "nope.mp4", "no such file"), "text": (text, "not a video"),
            "truncated": (truncated, ""), "short": (short, "has 2 frames"), "empty": (empty, "")}


@pytest.mark.parametrize("case", ["missing", "text", "truncated", "short", "empty"])
@pytest.mark.parametrize("which", ["row", "col"])
def test_bad_input_is_one_line_nonzero_and_leaves_nothing(videos, tmp_path, case, which):
    row, col = videos
    bad, words = bad_input_cases(tmp_path, row)[case]
    args = (bad, col) if which == "row" else (row, bad)
    out = tmp_path / "OUT"
    r = generate(*args, out)
    assert r.exit_code == 3, r.output
    err = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and str(bad.name) in err[0] and words in err[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".OUT")]   # no temp dir left


def test_odd_sizes_and_mismatched_inputs_are_handled_and_recorded(tmp_path):
    row = make_video(tmp_path / "row.mp4", smooth_frames(5, 37, 51), 12)     # odd size, 12 fps
    col = make_video(tmp_path / "col.mp4", smooth_frames(5, 40, 40, seed=5), 8)   # other size and fps
    r = generate(row, col, tmp_path / "OUT")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "OUT" / "meta.json").read_text())
    assert meta["inputs"]["warnings"]           # different sizes/fps and frame [0,0] mismatch are recorded
    frames = np.load(tmp_path / "OUT" / "grid.npz")["frames"]
    assert frames.shape == (5, 5, H, W, 3)     # both inputs have 5 frames


def test_unknown_model_fails_before_reading(videos, tmp_path):
    row, col = videos
    r = run("generate", row, col, "-o", tmp_path / "OUT", "--model", "no-such-model")
    assert r.exit_code == 5 and "no such model" in r.output


def test_info_runs():
    r = run("info", "--json")
    assert r.exit_code == 0
    d = json.loads(r.output)
    from fourreal_rt.ops import backend
    assert "small" in d["presets"] and "small" in d["shipped_models"]
    assert d["compiled_kernels"]["present"] == (backend.load() is not None)
    assert d["fp8_attention"].startswith("cuDNN FP8") == (
        torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)
        and importlib.util.find_spec("cudnn") is not None)


def test_fp8_path_runs_and_stays_close(videos, tmp_path):
    """--fp8 (emulated on the CPU): inputs exact, generated frames changed by e4m3 rounding but close."""
    import torch
    from test_model import randomize

    from fourreal_rt.model import PRESETS, TwoStreamModel
    from fourreal_rt.model.weights import save_model
    model = randomize(TwoStreamModel(PRESETS["tiny"]))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)                                          # a tame random model: outputs in range
    save_model(model, tmp_path / "m")
    row, col = videos
    assert generate(row, col, tmp_path / "a", "--seed", 1, "--model", tmp_path / "m").exit_code == 0
    r = generate(row, col, tmp_path / "b", "--seed", 1, "--model", tmp_path / "m", "--fp8")
    assert r.exit_code == 0, r.output
    a, b = (np.load(tmp_path / n / "grid.npz")["frames"].astype(np.float64) for n in "ab")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[:, 0], b[:, 0])
    assert json.loads((tmp_path / "b" / "meta.json").read_text())["model"]["fp8"] is True
    assert not np.array_equal(a, b)                              # the FP8 linears really ran
    mse = ((a - b) ** 2).mean()
    assert 10 * np.log10(255 ** 2 / mse) > 25                    # e4m3 rounding of a random model, 2 steps


def test_overwrite_never_deletes_the_inputs(tmp_path):
    """-o pointing at the inputs' own directory (or an ancestor) is refused even with --overwrite."""
    clips = tmp_path / "clips"
    clips.mkdir()
    row = make_video(clips / "row.mp4", smooth_frames(4, H, W), 8)
    col = make_video(clips / "col.mp4", smooth_frames(4, H, W, seed=3), 8)
    for out in (clips, tmp_path):
        r = generate(row, col, out, "--overwrite")
        assert r.exit_code == 4 and "refusing" in r.output
    assert row.exists() and col.exists()


@pytest.mark.parametrize("damage", ["truncated", "wrong_shape"])
def test_damaged_model_is_exit_5_and_writes_nothing(videos, tmp_path, damage):
    from fourreal_rt.model import PRESETS, TwoStreamModel
    from fourreal_rt.model.weights import save_model
    d = save_model(TwoStreamModel(PRESETS["tiny"]), tmp_path / "m")
    if damage == "truncated":
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    else:  # the config says something else than the tensors
        meta = json.loads((d / "config.json").read_text())
        meta["config"]["dim"] = 48
        meta["config"]["heads"] = 3
        (d / "config.json").write_text(json.dumps(meta))
    row, col = videos
    r = run("generate", row, col, "-o", tmp_path / "OUT", "--model", d, "--quiet")
    assert r.exit_code == 5, r.output
    assert "model.safetensors" in r.output and not (tmp_path / "OUT").exists()


def test_cuda_start_needs_no_torch():
    """generate starts CUDA's context through the driver alone, beside `import torch` (runtime/cuda_driver.py): it
    imports no torch, and where there is no driver (CPU machines) it is a no-op."""
    import subprocess
    import sys
    code = ("import sys; from fourreal_rt.runtime import cuda_driver; f = cuda_driver.start(); "
            "assert 'torch' not in sys.modules; print(None if f is None else f.result(timeout=60))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in (("True",) if torch.cuda.is_available() else ("None", "False", "True")), r.stdout
