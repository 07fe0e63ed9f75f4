"""The paper's structure, checked on the tiny preset with random (non-zero) weights."""
import pytest
import torch

from fourreal_rt.model import DYNAMIC, FREEZE_TIME, PRESETS, TwoStreamModel
from fourreal_rt.model.blocks import AXIS_OF_CONTEXT



@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def randomize(model, seed=0):
    """Non-zero weights everywhere except the sync layers, whose init is what is under test."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("syncs."):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def grid_inputs(cfg, B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (B, cfg.views, cfg.times, cfg.frame_h, cfg.frame_w, 3)
    x, known = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    mask = torch.zeros(B, cfg.views, cfg.times, dtype=torch.bool)
    mask[:, 0] = mask[:, :, 0] = True
    return x, known, mask, torch.tensor([0.3, 0.8])[:B]


def run_block_stack(model, x_tokens, c, axis, frames):
    rope = model.base.rope(frames, x_tokens.device)
    for blk in model.base.blocks:
        x_tokens = blk(x_tokens, c, rope, axis)
    return x_tokens


def test_time_stream_equals_base_model_on_each_fixed_view_video():
    cfg = PRESETS["tiny"]
    model = randomize(TwoStreamModel(cfg.replace(sync="soft"))).eval()
    x, known, mask, sigma = grid_inputs(cfg)
    # two-stream with an untrained (zero) soft sync: streams run independently
    (x_v, x_t), (c_v, c_t) = model.streams(x, known, mask, sigma)
    for v in range(cfg.views):  # each row alone, as a fixed-view video (V = 1) in the dynamic context
        row_out = model.base.forward(x[:, v:v + 1], known[:, v:v + 1], mask[:, v:v + 1], sigma, DYNAMIC)
        two_stream_row = model.base.head(x_t[:, v:v + 1], c_t)
        torch.testing.assert_close(two_stream_row, row_out, rtol=1e-5, atol=1e-5)


def test_view_stream_equals_base_model_on_each_freeze_time_video():
    cfg = PRESETS["tiny"]
    model = randomize(TwoStreamModel(cfg.replace(sync="soft"))).eval()
    x, known, mask, sigma = grid_inputs(cfg)
    (x_v, x_t), (c_v, c_t) = model.streams(x, known, mask, sigma)
    for t in range(cfg.times):  # each column alone, as a freeze-time video (T = 1)
        col_out = model.base.forward(x[:, :, t:t + 1], known[:, :, t:t + 1], mask[:, :, t:t + 1], sigma, FREEZE_TIME)
        torch.testing.assert_close(model.base.head(x_v[:, :, t:t + 1], c_v), col_out, rtol=1e-5, atol=1e-5)


def test_streams_differ_without_sync_and_axes_matter():
    cfg = PRESETS["tiny"]
    model = randomize(TwoStreamModel(cfg)).eval()
    x, known, mask, sigma = grid_inputs(cfg)
    (x_v, x_t), _ = model.streams(x, known, mask, sigma)
    assert (x_v - x_t).abs().max() > 1e-2   # rows and columns really attend differently
    assert AXIS_OF_CONTEXT == {DYNAMIC: "time", FREEZE_TIME: "view"}


def test_soft_sync_at_init_changes_nothing():
    cfg = PRESETS["tiny"]
    soft = randomize(TwoStreamModel(cfg.replace(sync="soft"))).eval()
    y_v, y_t = torch.randn(2, 4, 4, 6, 32), torch.randn(2, 4, 4, 6, 32)
    s = torch.randn(2, 32)
    for sync in soft.syncs:
        x_v, x_t = sync(y_v, y_t, s)
        assert torch.equal(x_v, y_v) and torch.equal(x_t, y_t)
    # and after training moves the weights, it does exchange information
    torch.nn.init.normal_(soft.syncs[0].linear.weight, std=0.1)
    x_v, _ = soft.syncs[0](y_v, y_t, s)
    assert not torch.allclose(x_v, y_v)


def test_hard_sync_at_init_is_the_average():
    cfg = PRESETS["tiny"]
    hard = randomize(TwoStreamModel(cfg.replace(sync="hard"))).eval()
    y_v, y_t, s = torch.randn(2, 4, 4, 6, 32), torch.randn(2, 4, 4, 6, 32), torch.randn(2, 32)
    for sync in hard.syncs:
        x_v, x_t = sync(y_v, y_t, s)
        torch.testing.assert_close(x_v, (y_v + y_t) / 2)
        assert torch.equal(x_v, x_t)


def test_average_and_weighted_syncs():
    cfg = PRESETS["tiny"].replace(depth=4)
    y_v, y_t = torch.randn(1, 4, 4, 6, 32), torch.randn(1, 4, 4, 6, 32)
    avg = TwoStreamModel(cfg.replace(sync="average"))
    torch.testing.assert_close(avg.syncs[2](y_v, y_t, None)[0], (y_v + y_t) / 2)
    wtd = TwoStreamModel(cfg.replace(sync="weighted"))
    ws = [s.w for s in wtd.syncs]
    assert ws == pytest.approx([0.1, 0.2, 0.3, 0.4])          # w_l = 0.1 + 0.4 l / L
    x_v, x_t = wtd.syncs[3](y_v, y_t, None)
    torch.testing.assert_close(x_v, 0.6 * y_v + 0.4 * y_t)
    torch.testing.assert_close(x_t, 0.6 * y_t + 0.4 * y_v)


def test_sequential_applies_view_then_time_update():
    cfg = PRESETS["tiny"].replace(sync="sequential")
    model = randomize(TwoStreamModel(cfg)).eval()
    x, known, mask, sigma = grid_inputs(cfg)
    (x_v, x_t), (c_v, c_t) = model.streams(x, known, mask, sigma)
    # eq. 5 by hand: y = x + φ^v(x; c^v), x' = y + φ^t(y; c^t), per layer
    h = model.base.embed_input(x, known, mask)
    rope_v, rope_t = model.base.rope(cfg.views, h.device), model.base.rope(cfg.times, h.device)
    for l, blk in enumerate(model.base.blocks):
        y = blk(h, c_v, rope_v, "view")
        h = blk(y, c_t, rope_t, "time", attn=model.time_attn[l])
    torch.testing.assert_close(x_t, h)
    torch.testing.assert_close(x_v, h)
    # the order matters: time-then-view differs
    h2 = model.base.embed_input(x, known, mask)
    for l, blk in enumerate(model.base.blocks):
        h2 = blk(blk(h2, c_t, rope_t, "time", attn=model.time_attn[l]), c_v, rope_v, "view")
    assert not torch.allclose(h2, h, atol=1e-3)


def test_masked_conditioning_ignores_noise_on_known_frames():
    cfg = PRESETS["tiny"]
    model = randomize(TwoStreamModel(cfg)).eval()
    x, known, mask, sigma = grid_inputs(cfg)
    x2 = x.clone()
    x2[mask] = torch.randn_like(x2[mask])    # change only the noisy input of known frames
    torch.testing.assert_close(model(x, known, mask, sigma), model(x2, known, mask, sigma))


def test_paper_preset_size_on_meta_device():
    cfg = PRESETS["paper"]
    assert cfg.tokens_per_frame == 576 and cfg.grid_hw == (18, 32)      # 288x512 at patch 16
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.head_dim) == (1024, 24, 8, 128)
    with torch.device("meta"):
        model = TwoStreamModel(cfg)
        n = sum(p.numel() for p in model.parameters())
        assert 550e6 < n < 700e6, n                                      # ≈ 600M
        x = torch.empty(1, 8, 8, 288, 512, 3)
        tokens = model.base.embed_input(x, x, torch.zeros(1, 8, 8, dtype=torch.bool))
        assert tokens.shape == (1, 8, 8, 576, 1024)
        out = model(x, x, torch.zeros(1, 8, 8, dtype=torch.bool), torch.zeros(1))
        assert out.shape == x.shape


def test_x_prediction_head_gives_the_velocity():
    """prediction="x": the head predicts clean frames x̂_0, the model returns (x_σ - x̂_0) / σ."""
    cfg = PRESETS["tiny"].replace(prediction="x")
    model = randomize(TwoStreamModel(cfg)).eval()
    x, known, mask, sigma = grid_inputs(cfg)
    (x_v, x_t), (c_v, c_t) = model.streams(x, known, mask, sigma)
    x0_hat = (model.base.head(x_v, c_v) + model.base.head(x_t, c_t)) / 2
    x_in = torch.where(mask[..., None, None, None], known, x)
    v = model(x, known, mask, sigma)
    torch.testing.assert_close(v, (x_in - x0_hat) / sigma.view(-1, 1, 1, 1, 1, 1))
    # one Euler step from σ to 0 lands exactly on x̂_0
    torch.testing.assert_close(x_in - sigma.view(-1, 1, 1, 1, 1, 1) * v, x0_hat, rtol=1e-5, atol=1e-5)


def test_with_grid_keeps_weights_for_another_window():
    from fourreal_rt.model.weights import with_grid
    torch.manual_seed(0)
    m = TwoStreamModel(PRESETS["tiny"]).eval()
    assert with_grid(m, m.cfg.views, m.cfg.times) is m
    r = with_grid(m, 3, 5)
    assert (r.cfg.views, r.cfg.times) == (3, 5) and not r.training
    a, b = m.state_dict(), r.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(1, 3, 5, r.cfg.frame_h, r.cfg.frame_w, 3)
    mask = torch.zeros(1, 3, 5, dtype=torch.bool)
    mask[:, 0] = mask[:, :, 0] = True
    with torch.no_grad():
        assert torch.isfinite(r(x, x, mask, torch.full((1,), 0.5))).all()


def test_prefetched_noise_is_the_seeded_draw():
    """prefetch_noise draws exactly initial_noise's tensor, is taken once, only for its own shape and seed, and a
    newer prefetch drops one not taken."""
    from fourreal_rt.sampler import flow
    shape, seed = (1, 2, 3, 4, 5, 3), 1234
    fresh = flow.initial_noise(shape, seed)
    flow.prefetch_noise(shape, seed)
    flow.initial_noise((1, 2, 3, 4, 5, 2), seed)                             # another shape: not taken
    assert (tuple(shape), seed) in flow._prefetched
    assert torch.equal(flow.initial_noise(shape, seed), fresh)
    assert (tuple(shape), seed) not in flow._prefetched                      # taken once
    flow.prefetch_noise(shape, seed + 1)
    flow.prefetch_noise(shape, seed + 2)
    assert list(flow._prefetched) == [(tuple(shape), seed + 2)]              # the older one dropped
    assert not torch.equal(flow.initial_noise(shape, seed + 2), fresh)
    assert not flow._prefetched


def test_exit_while_noise_is_drawn_keeps_its_status():
    """A run that fails while its first window's noise is still being drawn (a bad video, a damaged engine) exits with
    its own status: a draw cut off inside torch at exit would abort the process (status 134)."""
    import subprocess
    import sys
    code = ("import sys; from fourreal_rt.sampler.flow import prefetch_noise; "
            "prefetch_noise((1, 8, 8, 288, 512, 3), 0); prefetch_noise((1, 8, 8, 288, 512, 3), 1); sys.exit(3)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    assert "terminate" not in r.stderr


def test_background_work_that_never_started_does_not_hold_the_exit():
    """in_background(..., wait_at_exit=True) whose thread cannot start raises to its caller, and the exit then has
    nothing to wait for (it waited forever on the Future before)."""
    import subprocess
    import sys
    code = ("import sys, threading; from fourreal_rt.runtime import threads\n"
            "def refuse(self): raise RuntimeError(\"can't start new thread\")\n"
            "threading.Thread.start = refuse\n"
            "try:\n    threads.in_background(print, wait_at_exit=True)\nexcept RuntimeError:\n    sys.exit(4)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 4, r.stderr


def test_to_model_range_is_the_cpu_formula_for_every_byte():
    from fourreal_rt.sampler import to_model_range, to_uint8
    b = torch.arange(256, dtype=torch.uint8).reshape(4, 8, 8)          # odd shape, every byte
    x = to_model_range(b)
    assert x.dtype == torch.float32 and x.shape == b.shape
    assert torch.equal(x, b.float() / 127.5 - 1.0) and torch.equal(to_uint8(x), b)
