"""The trainer on the tiny preset: both stages run, stage 2 trains only the sync layers, chunks resume."""
import json

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from fourreal_rt.training.train import CKPT, ema_update, main, sample_sigma


TINY = ["--batch", "1", "--pool", "2", "--log-every", "1", "--preset", "tiny"]


def train(stage, out, steps, *extra, init=None):
    """One chunk on the tiny preset; stage 2 starts from the model of run `init`, soft sync."""
    args = ["--stage", str(stage), "--out", str(out), "--steps", str(steps), *TINY, *map(str, extra)]
    if init is not None:
        args += ["--init", str(init / "model"), "--sync", "soft"]
    main(args)


def weights(run, sub="model"):
    return load_file(str(run / sub / "model.safetensors"))


def info_of(run):
    with safe_open(str(run / CKPT), "pt") as f:
        return json.loads(f.metadata()["info"])


def test_two_stages_and_resume(tmp_path):
    torch.set_num_threads(1)
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    train(1, s1, 2)
    assert info_of(s1)["step"] == 2
    train(1, s1, 3)                                                          # a second chunk resumes
    info = info_of(s1)
    assert info["step"] == 3 and 0 < info["seed_next"] < 10_000_000          # train split only
    log = [json.loads(line) for line in (s1 / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["loss"] > 0 for r in log)

    train(2, s2, 2, "--pseudo-frac", 0.5, init=s1)
    w1, w2 = weights(s1), weights(s2)
    assert all(torch.equal(w1[k], w2[k]) for k in w1 if k.startswith("base."))  # blocks frozen
    assert any(not torch.equal(w1[k], w2[k]) for k in w1 if k.startswith("syncs."))  # syncs trained


def test_stage2_tune_blocks_trains_blocks_and_syncs(tmp_path):
    torch.set_num_threads(1)
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    train(1, s1, 1, "--lr", 1e-2)
    train(2, s2, 2, "--lr", 1e-2, "--tune-blocks", 1e-3, init=s1)
    w1, w2 = weights(s1), weights(s2)
    assert any(not torch.equal(w1[k], w2[k]) for k in w1 if k.startswith("base.blocks."))   # blocks trained
    assert any(not torch.equal(w1[k], w2[k]) for k in w1 if k.startswith("syncs."))
    train(2, s2, 3, "--lr", 1e-2, "--tune-blocks", 1e-3, init=s1)          # resumes with both groups' moments
    assert info_of(s2)["step"] == 3


def test_stage2_continues_a_stage2_model_whole(tmp_path):
    """--init with a stage-2 model of the same sync keeps its sync layers (and records what it continued);
    --fresh-sync starts new ones."""
    torch.set_num_threads(1)
    s1, s2, s3, s4 = (tmp_path / n for n in ("s1", "s2", "s3", "s4"))
    train(1, s1, 1)
    train(2, s2, 1, init=s1)
    train(2, s3, 0, init=s2)
    train(2, s4, 0, "--fresh-sync", init=s2)
    w2, w3, w4 = (weights(s) for s in (s2, s3, s4))
    assert w3.keys() == w2.keys() and all(torch.equal(w2[k], w3[k]) for k in w2)
    assert all(torch.equal(w2[k], w4[k]) for k in w2 if k.startswith("base."))
    assert any(not torch.equal(w2[k], w4[k]) for k in w4 if k.startswith("syncs."))
    meta3 = json.loads((s3 / "model" / "config.json").read_text())
    assert meta3["continued_from"]["train_steps"] == 1 and "continued_from" not in json.loads(
        (s4 / "model" / "config.json").read_text())


def test_ema_update_is_the_warmed_up_moving_average():
    a, w = [torch.zeros(3)], [torch.ones(3)]
    ema_update(a, w, 0.99, 0)                        # young average: decay (1 + 0) / 10 = 0.1
    assert torch.allclose(a[0], torch.full((3,), 0.9))
    ema_update(a, [torch.full((3,), 2.0)], 0.5, 100)  # old: the decay itself
    assert torch.allclose(a[0], torch.full((3,), 1.45))


def test_ema_exports_the_average_and_resumes_it(tmp_path):
    """--ema: model/ holds the average of the trained weights, model_online/ the raw ones; the checkpoint keeps
    the average, so a resumed chunk continues it rather than starting over."""
    torch.set_num_threads(1)
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    train(1, s1, 1, "--lr", 1e-2)
    train(2, s2, 2, "--lr", 1e-2, "--ema", 0.9, init=s1)
    w1, avg, online = weights(s1), weights(s2), weights(s2, "model_online")
    assert all(torch.equal(w1[k], avg[k]) and torch.equal(w1[k], online[k]) for k in w1 if k.startswith("base."))
    syncs = [k for k in avg if k.startswith("syncs.")]
    assert any(not torch.equal(avg[k], online[k]) for k in syncs)
    with safe_open(str(s2 / CKPT), "pt") as f:
        assert {f"ema/{k}" for k in syncs} <= set(f.keys())
    assert info_of(s2)["ema_updates"] == 2
    meta = json.loads((s2 / "model" / "config.json").read_text())
    assert meta["weights"] == "EMA 0.9 over 2 updates"
    train(2, s2, 3, "--lr", 1e-2, "--ema", 0.9, init=s1)
    assert info_of(s2)["ema_updates"] == 3
    train(2, s2, 4, "--lr", 1e-2, init=s1)                                 # resumed without --ema: kept going
    assert info_of(s2)["ema_updates"] == 4 and info_of(s2)["ema_decay"] == 0.9
    assert json.loads((s2 / "model" / "config.json").read_text())["weights"] == "EMA 0.9 over 4 updates"


def test_sigma_shift_moves_training_noise_up():
    gen = torch.Generator().manual_seed(0)
    plain, shifted = sample_sigma(20000, gen, "cpu"), sample_sigma(20000, gen, "cpu", shift=3.0)
    assert abs(plain.median().item() - 0.5) < 0.02 and abs(shifted.median().item() - 0.75) < 0.02
    assert 0 < shifted.min() and shifted.max() < 1


def test_data_parallel_two_processes_then_resume_alone(tmp_path):
    """torchrun with 2 CPU processes (gloo): each rank draws its own train seeds, rank 0 writes one checkpoint
    (float32 weights, bf16 AdamW moments), and a single process resumes it."""
    import subprocess
    import sys
    run = tmp_path / "ddp"
    args = ["--stage", "1", "--preset", "tiny", "--out", str(run), "--batch", "1", "--pool", "2", "--log-every", "1"]
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "fourreal_rt.training", "--steps", "2", *args],
                       capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    info = info_of(run)
    assert info["step"] == 2 and info["world"] == 2
    s0, s1 = info["seeds_next"]
    assert s0 != s1 and max(s0, s1) < 10_000_000                              # disjoint stretches of the train split
    state = load_file(str(run / CKPT))
    assert all(v.dtype == torch.bfloat16 for k, v in state.items() if k.startswith("opt/"))
    assert all(v.dtype == torch.float32 for k, v in state.items() if k.startswith("model/"))
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(r["grids_per_step"] == 2 for r in log)

    main(["--steps", "3", *args])                                            # one process continues the run
    info = info_of(run)
    assert info["step"] == 3 and info["world"] == 1 and info["seeds_next"][0] > max(s0, s1)
