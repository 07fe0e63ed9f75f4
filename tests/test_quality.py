"""The shipped model against ground truth (issue 3, criterion 2): on held-out test scenes, at reduced steps on
the CPU, its grids must score a higher PSNR than the additive baseline I[v,t] = I[v,0] + I[0,t] - I[0,0]."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fourreal_rt.data import TEST_SEEDS, render_batch
from fourreal_rt.data import quality
from fourreal_rt.model.weights import load_model, resolve

STEPS = 8                                        # half the default 16, at generate's σ shift
SCENES = [TEST_SEEDS[0], TEST_SEEDS[1]]          # never trained on (training uses TRAIN_SEEDS only)


@pytest.fixture(scope="module")
def graded():
    model = load_model(resolve("small")).float().eval()
    cfg = model.cfg
    r = render_batch(SCENES, cfg.views, cfg.times, cfg.frame_h, cfg.frame_w, device="cpu")
    truth = (r["frames"] * 255).round().clamp(0, 255).to(torch.uint8).numpy()   # [2, V, T, H, W, 3]
    pred = quality.fill_grids(model, truth, steps=STEPS, seed=0)
    return truth, pred


def test_given_frames_are_the_truth(graded):
    truth, pred = graded
    given = quality.given_mask(*truth.shape[1:3])
    assert np.array_equal(pred[:, given], truth[:, given])


@pytest.mark.parametrize("i", range(len(SCENES)))
def test_shipped_model_beats_additive_baseline(graded, i):
    truth, pred = graded
    ours = quality.psnr(pred[i], truth[i])
    additive = quality.psnr(quality.additive(truth[i]), truth[i])
    assert ours > additive, f"test scene {SCENES[i]}: model {ours:.2f} dB <= additive {additive:.2f} dB"


def test_quality_pick_best_chooses_the_trained_model(tmp_path):
    """`benchmarks/quality.py --pick-best` (what training/gpu_train.sh's VAL sweep uses) prints the --soft model and
    --shift of the best run: the shipped model over an untrained one of the same preset, whatever the shift."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from fourreal_rt.model import PRESETS, TwoStreamModel
    from fourreal_rt.model.weights import save_model

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "quality.py"
    torch.manual_seed(0)
    untrained = save_model(TwoStreamModel(PRESETS["small"]), tmp_path / "untrained")
    for i, (model, shift) in enumerate([(str(untrained), 60.0), ("small", 20.0)]):
        out = tmp_path / f"val_{i}.json"
        p = subprocess.run([sys.executable, str(script), "--soft", model, "--split", "val", "--n", "1", "--steps", "1",
                            "--shift", str(shift), "--device", "cpu", "--json", str(out)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
        assert json.loads(out.read_text())["shift"] == shift
    p = subprocess.run([sys.executable, str(script), "--pick-best", *(str(tmp_path / f"val_{i}.json") for i in range(2))],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    model, shift = p.stdout.split()
    assert (model, float(shift)) == ("small", 20.0), (p.stdout, p.stderr)
    assert p.stderr.count(" dB") == 2                                     # each run's soft PSNR, on stderr
