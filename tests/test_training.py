"""The trainer on the tiny preset: both stages run, stage 2 trains only the sync layers, chunks resume."""
import json

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from fourreal_rt.training.train import CKPT, main


def info_of(run):
    with safe_open(str(run / CKPT), "pt") as f:
        return json.loads(f.metadata()["info"])


def test_two_stages_and_resume(tmp_path):
    torch.set_num_threads(1)
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    common = ["--batch", "1", "--pool", "2", "--log-every", "1", "--preset", "tiny"]
    main(["--stage", "1", "--out", str(s1), "--steps", "2", *common])
    assert info_of(s1)["step"] == 2
    main(["--stage", "1", "--out", str(s1), "--steps", "3", *common])         # a second chunk resumes
    info = info_of(s1)
    assert info["step"] == 3 and 0 < info["seed_next"] < 10_000_000          # train split only
    log = [json.loads(line) for line in (s1 / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["loss"] > 0 for r in log)

    main(["--stage", "2", "--init", str(s1 / "model"), "--sync", "soft", "--out", str(s2), "--steps", "2",
          "--pseudo-frac", "0.5", *common])
    w1, w2 = load_file(str(s1 / "model" / "model.safetensors")), load_file(str(s2 / "model" / "model.safetensors"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1 if k.startswith("base."))  # blocks frozen
    assert any(not torch.equal(w1[k], w2[k]) for k in w1 if k.startswith("syncs."))  # syncs trained


def test_stage2_tune_blocks_trains_blocks_and_syncs(tmp_path):
    torch.set_num_threads(1)
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    common = ["--batch", "1", "--pool", "2", "--log-every", "1", "--preset", "tiny", "--lr", "1e-2"]
    main(["--stage", "1", "--out", str(s1), "--steps", "1", *common])
    main(["--stage", "2", "--init", str(s1 / "model"), "--sync", "soft", "--out", str(s2), "--steps", "2",
          "--tune-blocks", "1e-3", *common])
    w1, w2 = load_file(str(s1 / "model" / "model.safetensors")), load_file(str(s2 / "model" / "model.safetensors"))
    assert any(not torch.equal(w1[k], w2[k]) for k in w1 if k.startswith("base.blocks."))   # blocks trained
    assert any(not torch.equal(w1[k], w2[k]) for k in w1 if k.startswith("syncs."))
    main(["--stage", "2", "--init", str(s1 / "model"), "--sync", "soft", "--out", str(s2), "--steps", "3",
          "--tune-blocks", "1e-3", *common])                                   # resumes with both groups' moments
    assert info_of(s2)["step"] == 3
