"""Tests of the sliding-window plan and its runner (fourreal_rt.runtime.windows): tiny preset, random weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import make_video, smooth_frames
from fourreal_rt.runtime import windows as win
from fourreal_rt.runtime.pipeline import Pipeline
from fourreal_rt.runtime.windows import (axis_starts, check_plan, generate_grid, parse_grid, plan_windows,
                                         window_seed)

STEPS = 2

# (V, T, window, overlap): the 16x24, the small model's 8x8 window up to 64x64, odd sizes, odd windows
PLANS = [(4, 4, (4, 4), None), (16, 24, (4, 4), None), (16, 24, (8, 8), None), (8, 8, (8, 8), None),
         (9, 13, (8, 8), 3), (64, 64, (8, 8), None), (64, 64, (8, 8), 1), (17, 8, (8, 8), 7),
         (11, 23, (5, 7), (2, 3)), (31, 10, (8, 8), 4)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model is all small ops: one thread is several times faster than two on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_pretrained("tiny", device="cpu")


def inputs(V, T, H=16, W=24, seed=0):
    """Random row uint8 [T, H, W, 3] and column [V, H, W, 3] sharing frame [0, 0]."""
    rng = np.random.default_rng(seed)
    row = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    col = rng.integers(0, 256, (V, H, W, 3), dtype=np.uint8)
    col[0] = row[0]
    return row, col


class Recorder:
    """Wraps a pipeline and records every denoise_window call: (known, mask, out)."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []

    def __getattr__(self, name):                 # everything else: the pipeline's
        return getattr(self.pipe, name)

    def denoise_window(self, known, mask, **kw):
        out = self.pipe.denoise_window(known, mask, **kw)
        assert "shift" not in kw                 # None: the pipeline's (or an engine's fixed) σ shift
        self.calls.append((known.copy(), mask.copy(), out.copy(), kw["seed"]))
        return out


# ---- the plan ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("V,T,window,overlap", PLANS)
def test_plan_covers_every_cell_exactly_once(V, T, window, overlap):
    plan = plan_windows(V, T, window, overlap, seed=3)
    check_plan(plan)
    given = np.zeros((V, T), bool)
    given[0] = given[:, 0] = True
    generated = np.zeros((V, T), int)
    for w in plan.windows:
        assert 0 <= w.v0 and w.v0 + w.nv <= V and 0 <= w.t0 and w.t0 + w.nt <= T and (w.nv, w.nt) == window
        generated[w.views, w.times] += w.generate
    assert (generated[given] == 0).all()                        # a given frame is never generated
    assert (generated[~given] == 1).all()                       # every other cell exactly once
    assert plan.generated_frames + given.sum() == V * T


@pytest.mark.parametrize("V,T,window,overlap", PLANS)
def test_each_window_knows_its_first_row_and_column_before_it_runs(V, T, window, overlap):
    plan = plan_windows(V, T, window, overlap)
    known = np.zeros((V, T), bool)
    known[0] = known[:, 0] = True
    for w in plan.windows:
        now = known[w.views, w.times]
        assert np.array_equal(w.known, now)                     # conditioned on everything known inside it
        assert now[0].all() and now[:, 0].all()                 # its first row and column are finished
        assert (~now).any()                                     # and it has something to do
        known[w.views, w.times] = True
    assert known.all()


@pytest.mark.parametrize("n,w,o", [(8, 8, 2), (9, 8, 2), (16, 8, 2), (16, 8, 1), (24, 4, 1), (64, 8, 2),
                                   (23, 7, 3), (100, 8, 7)])
def test_axis_starts_are_the_fewest_windows_with_enough_overlap(n, w, o):
    s = axis_starts(n, w, o)
    assert s[0] == 0 and s[-1] == n - w and s == sorted(set(s))
    assert all(b - a <= w - o for a, b in zip(s, s[1:]))        # neighbours overlap by >= o
    assert len(s) == 1 or (len(s) - 2) * (w - o) + w < n        # one window fewer could not cover n


def test_plan_is_a_pure_function_of_its_arguments():
    # the plan is integer arithmetic: the same on every machine and device (golden values pin the policy)
    assert axis_starts(16, 8, 2) == [0, 4, 8]
    assert axis_starts(64, 8, 2) == [0, 5, 11, 16, 22, 28, 33, 39, 44, 50, 56]
    assert window_seed(7, 0) == 7
    assert window_seed(0, 1) == 8514611595135926838
    assert window_seed(0, 2) == 6745496414556587486
    assert window_seed(-1, 3) == window_seed(2 ** 64 - 1, 3)
    seeds = {window_seed(s, k) for s in range(4) for k in range(1, 50)}
    assert len(seeds) == 4 * 49 and all(0 <= x < 2 ** 63 for x in seeds)
    a, b = plan_windows(16, 24, (8, 8), seed=5), plan_windows(16, 24, (8, 8), seed=5)
    assert json.dumps(a.to_dict()) == json.dumps(b.to_dict())


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="shorter than the model window"):
        plan_windows(7, 16, (8, 8))
    with pytest.raises(ValueError, match="overlap"):
        plan_windows(16, 16, (8, 8), overlap=8)
    assert parse_grid("16x24") == (16, 24) and parse_grid("8X8") == (8, 8)
    for bad in ("16", "16x", "ax8", "16x24x2", "-1x8"):
        with pytest.raises(ValueError):
            parse_grid(bad)


# ---- running it ----------------------------------------------------------------------------------------------

def test_16x24_grid_from_a_24_frame_row_and_a_16_frame_column(pipe):
    row, col = inputs(16, 24)
    rec = Recorder(pipe)
    grid = generate_grid(rec, row, col, steps=STEPS, seed=11)
    f = grid.frames
    assert f.shape == (16, 24, 16, 24, 3) and f.dtype == np.uint8
    assert np.array_equal(f[0], row) and np.array_equal(f[:, 0], col)     # given frames come out unchanged
    plan = plan_windows(16, 24, pipe.grid_shape, seed=11)
    assert len(rec.calls) == len(plan) == grid.meta["windows"]["count"]
    known = plan.given.copy()
    for w, (k, m, out, seed) in zip(plan.windows, rec.calls):
        assert seed == w.seed
        assert np.array_equal(m, known[w.views, w.times])             # the mask is what was known then
        cell = f[w.views, w.times]                                      # [nv, nt, H, W, 3]
        assert np.array_equal(k[m], cell[m])                            # conditioned on the finished frames
        assert not k[~m].any()                                          # and on nothing else
        assert np.array_equal(out[~m], cell[~m])                        # its frames are the grid's, unchanged
        known[w.views, w.times] = True
    # content: generated frames are the model's output, not left empty or copied from the inputs
    gen = ~plan.given
    assert all(f[v, t].std() > 0 for v, t in zip(*np.nonzero(gen)))
    assert grid.meta["windows"]["generated_frames"] == int(gen.sum())


def test_deterministic_per_seed_and_store(pipe, tmp_path):
    row, col = inputs(9, 11, seed=1)
    a = generate_grid(pipe, row, col, steps=STEPS, seed=4).frames
    b = generate_grid(pipe, row, col, steps=STEPS, seed=4).frames
    c = generate_grid(pipe, row, col, steps=STEPS, seed=5).frames
    d = generate_grid(pipe, row, col, steps=STEPS, seed=4, store="disk", scratch_dir=tmp_path).frames
    assert np.array_equal(a, b) and np.array_equal(a, d)
    assert not np.array_equal(a[1:, 1:], c[1:, 1:])
    assert np.array_equal(a[0], c[0]) and np.array_equal(a[:, 0], c[:, 0])
    assert isinstance(d, np.memmap) and not d.flags.writeable
    assert list(tmp_path.iterdir()) == []                              # the scratch file is already unlinked


def test_a_window_sized_grid_is_what_the_pipeline_gives(pipe):
    V, T = pipe.grid_shape
    row, col = inputs(V, T, seed=2)
    one = pipe(row, col, steps=STEPS, seed=9).frames
    assert np.array_equal(generate_grid(pipe, row, col, steps=STEPS, seed=9).frames, one)


def test_disk_store_round_trip(tmp_path):
    store = win.open_store((5, 6, 4, 3, 3), "disk", tmp_path)
    plan = plan_windows(5, 6, (4, 4), 1)
    rng = np.random.default_rng(0)
    want = np.zeros((5, 6, 4, 3, 3), np.uint8)
    for w in plan.windows:
        frames = rng.integers(0, 256, (4, 4, 4, 3, 3), dtype=np.uint8)
        assert np.array_equal(store.read(w, w.known), np.where(w.known[..., None, None, None],
                                                               want[w.views, w.times], 0))
        store.write(w, frames, w.generate)
        want[w.views, w.times][w.generate] = frames[w.generate]
    got = store.finish()
    assert np.array_equal(got, want) and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        win.open_store((1, 1, 1, 1, 3), "ram")


def test_auto_store_goes_to_disk_over_the_budget(monkeypatch, tmp_path):
    monkeypatch.setattr(win, "memory_budget", lambda: 1000)
    assert win.open_store((2, 2, 10, 10, 3), "auto", tmp_path).kind == "disk"          # 1200 bytes
    assert win.open_store((2, 2, 10, 5, 3), "auto", tmp_path).kind == "memory"         # 600 bytes


# ---- the command line ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    row = make_video(d / "in_row.mp4", smooth_frames(24, 16, 24, seed=0), 8)
    col = make_video(d / "in_col.mp4", smooth_frames(16, 16, 24, seed=0), 8)   # same frame [0, 0]
    return str(row), str(col)


def test_cli_dry_run_prints_the_plan_without_loading_weights(videos, monkeypatch, tmp_path):
    from fourreal_rt import cli
    from fourreal_rt.model import weights

    def boom(*a, **k):
        raise AssertionError("weights were loaded")
    monkeypatch.setattr(Pipeline, "from_pretrained", boom)
    monkeypatch.setattr(weights, "load_model", boom)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli.main, ["generate", *videos, "--model", "tiny", "--dry-run", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "grid 16x24" in r.output and "40 windows" in r.output and not out.exists()
    r = CliRunner().invoke(cli.main, ["generate", *videos, "--model", "tiny", "--dry-run", "--json",
                                      "--grid", "8x12", "--overlap", "2"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["grid"] == [8, 12] and d["overlap"] == [2, 2] and len(d["windows"]) == 3 * 5
    r = CliRunner().invoke(cli.main, ["generate", *videos, "--model", "tiny", "--dry-run", "--grid", "20x24"])
    assert r.exit_code == 3 and "needs 20" in r.output
    r = CliRunner().invoke(cli.main, ["generate", *videos, "--model", "tiny", "--dry-run", "--grid", "3x8"])
    assert r.exit_code == 2


def test_cli_generates_every_frame_the_inputs_have(videos, tmp_path):
    from fourreal_rt import cli
    from fourreal_rt.io import read_inputs
    out = tmp_path / "out"
    r = CliRunner().invoke(cli.main, ["generate", *videos, "--model", "tiny", "--steps", "1", "-o", str(out),
                                      "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["frames"] == [16, 24, 16, 24, 3] and summary["windows"] == 40
    frames = np.load(out / "grid.npz")["frames"]
    row, col, _ = read_inputs(*videos, 16, 24, (16, 24))
    assert np.array_equal(frames[0], row) and np.array_equal(frames[:, 0], col)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["windows"]["count"] == 40 and len(meta["windows"]["per_window_s"]) == 40
    assert len(list(out.glob("view_*.mp4"))) == 16 and len(list(out.glob("time_*.mp4"))) == 24
