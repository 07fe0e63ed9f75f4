"""Quality against ground truth on held-out synthetic test grids (issue 3; paper §4.3 ablation).

For N test scenes (TEST_SEEDS, never trained on) the true 8x8 grid is rendered; row 0 and column 0
are given; every method fills the rest. Scores over generated frames only: PSNR, SSIM, and a
3D-consistency error (each generated view reprojected into its neighbour with the TRUE depth and
poses; mean absolute error in 8-bit levels over valid, unoccluded pixels).

    python benchmarks/quality.py --stage1 M1 --soft M2 --hard M3 --sequential M4 [--n 32] [--steps 16]

Methods: copy-nearest and additive baselines; the trained soft / hard / sequential models; the
training-free syncs (average, weighted) built on the stage-1 blocks.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fourreal_rt import ops  # noqa: E402
from fourreal_rt.data import quality  # noqa: E402
from fourreal_rt.data.scenes import TEST_SEEDS, VAL_SEEDS, render_batch  # noqa: E402
from fourreal_rt.model.twostream import TwoStreamModel  # noqa: E402
from fourreal_rt.model.weights import load_model, resolve  # noqa: E402
from fourreal_rt.ops import backend  # noqa: E402
from fourreal_rt.runtime.pipeline import DEFAULT_SHIFT, DEFAULT_STEPS  # noqa: E402


def consistency(pred_u8: np.ndarray, depth, K, c2w) -> float:
    """Reprojection MAE (8-bit levels) of a predicted grid under the true geometry."""
    from fourreal_rt.data.consistency import reprojection_error
    frames = torch.from_numpy(pred_u8).float() / 255.0
    r = reprojection_error(frames, depth.cpu(), K.cpu(), c2w.cpu())
    return float(r["mae"] * 255.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage1", help="stage-1 model dir (for the training-free syncs)")
    ap.add_argument("--soft"), ap.add_argument("--hard"), ap.add_argument("--sequential")
    ap.add_argument("--soft-tuned", help="soft sync trained with the blocks (training --tune-blocks)")
    ap.add_argument("--n", type=int, default=32, help="number of held-out grids")
    ap.add_argument("--split", default="test", choices=("test", "val"),
                    help="held-out scenes: test (report) or val (for choosing sampler settings)")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--shift", type=float, default=DEFAULT_SHIFT, help="σ schedule time shift (generate's default)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--fp8", action="store_true", help="also the soft model with FP8 linears (CUDA), and its "
                    "PSNR against the bf16 grid of the same seed")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--results-md", help="replace the quality table in this RESULTS.md")
    ap.add_argument("--from-json", nargs="+", metavar="JSON",
                    help="write the table of finished runs (their --json; rows merged by method) instead of running")
    ap.add_argument("--pick-best", nargs="+", metavar="JSON",
                    help="of finished runs (their --json), print the --soft model and --shift of the best soft PSNR "
                         "on stdout (each run's on stderr) instead of running")
    args = ap.parse_args()
    if args.pick_best:
        model, shift, _ = pick_best([json.loads(Path(p).read_text()) for p in args.pick_best], log=sys.stderr)
        print(model, shift)
        return
    print(vars(args), flush=True)
    if args.from_json:
        return report([json.loads(Path(p).read_text()) for p in args.from_json], args.results_md)
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32

    seeds = list((TEST_SEEDS if args.split == "test" else VAL_SEEDS)[:args.n])
    r = render_batch(seeds, 8, 8, 72, 128, device=dev)
    truth = (r["frames"] * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()   # [N, V, T, H, W, 3]

    methods = {"copy-nearest": lambda: np.stack([quality.copy_nearest(g) for g in truth]),
               "additive": lambda: np.stack([quality.additive(g) for g in truth])}

    def kernels():
        """Our compiled kernels where `generate` would use them (CUDA with fourreal_rt._C): FP8 attention is theirs."""
        if dev.type == "cuda" and backend.available():
            return ops.use_custom_ops()
        return contextlib.nullcontext()

    def model_method(path, sync=None, fp8=False):
        def run():
            src = resolve(path)
            m = load_model(src)
            if sync is not None:     # training-free syncs on the stage-1 blocks
                m = TwoStreamModel(src.cfg.replace(sync=sync), base=m.base)
            m = m.to(dev, dtype).eval()
            if fp8:                  # the block linears in e4m3 (what `generate --fp8` runs)
                from fourreal_rt.ops.fp8 import convert_to_fp8
                convert_to_fp8(m)
            with kernels():
                return quality.fill_grids(m, truth, steps=args.steps, device=dev, dtype=dtype, batch=args.batch,
                                          shift=args.shift)
        return run

    if args.stage1:
        methods["average (training-free)"] = model_method(args.stage1, "average")
        methods["weighted (training-free)"] = model_method(args.stage1, "weighted")
    for name in ("sequential", "hard", "soft"):
        if getattr(args, name):
            methods[f"{name} (trained)"] = model_method(getattr(args, name))
    if args.soft_tuned:
        methods["soft (trained, blocks fine-tuned)"] = model_method(args.soft_tuned)
    if args.fp8:
        methods["soft (trained), FP8 e4m3"] = model_method(args.soft, fp8=True)

    rows, preds = [], {}
    for name, fn in methods.items():
        t0 = time.time()
        pred = preds[name] = fn()
        gen_s = time.time() - t0
        p = [quality.psnr(a, b) for a, b in zip(pred, truth)]
        s = [quality.ssim(a, b) for a, b in zip(pred, truth)]
        c = [consistency(pred[i], r["depth"][i], r["K"], r["cam_to_world"][i]) for i in range(len(truth))]
        rows.append({"method": name, "psnr": float(np.mean(p)), "psnr_std": float(np.std(p)),
                     "ssim": float(np.mean(s)), "reproj_mae": float(np.mean(c)), "seconds": round(gen_s, 1)})
        print(json.dumps(rows[-1]), flush=True)
    truth_c = float(np.mean([consistency(truth[i], r["depth"][i], r["K"], r["cam_to_world"][i])
                             for i in range(len(truth))]))
    rows.append({"method": "ground truth (reference)", "psnr": float("inf"), "psnr_std": 0.0, "ssim": 1.0,
                 "reproj_mae": truth_c, "seconds": 0.0})
    extra = {}
    if args.fp8:                 # FP8 against bf16, same seed, generated cells only (issue 4, criterion 4)
        a, b = preds["soft (trained), FP8 e4m3"], preds["soft (trained)"]
        extra["fp8_vs_bf16_psnr"] = float(np.mean([quality.psnr(x, y) for x, y in zip(a, b)]))
        print(f"FP8 vs bf16 (same seed): {extra['fp8_vs_bf16_psnr']:.2f} dB", flush=True)
    commit = os.environ.get("FOURREAL_COMMIT") or subprocess.run(   # the tree's commit where its .git is stale
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    device_name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    result = {"rows": rows, "n": args.n, "split": args.split, "steps": args.steps, "shift": args.shift, "device": device_name,
              "commit": commit,
              "date": datetime.date.today().isoformat(), "argv": sys.argv[1:], **extra}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    report([result], args.results_md)


def pick_best(results: list[dict], log=None) -> tuple[str, float, float]:
    """(--soft model, --shift, PSNR) of the run whose trained soft model scored the highest PSNR."""
    runs = []
    for r in results:
        argv = r["argv"]
        psnr = [row["psnr"] for row in r["rows"] if row["method"] == "soft (trained)"][0]
        runs.append((argv[argv.index("--soft") + 1], r["shift"], psnr))
        if log is not None:
            print(f"{r['split']} {runs[-1][0]} shift {r['shift']:g}: {psnr:.2f} dB", file=log, flush=True)
    return max(runs, key=lambda run: run[2])


def report(results: list[dict], results_md: str | None):
    """Print the table of one or more runs (rows merged by method, the first run's row kept, the reference
    row last); with results_md, replace the quality section of that file."""
    rows = {}
    for result in results:
        for row in result["rows"]:
            rows.setdefault(row["method"], row)
    ref = [rows.pop(k) for k in [k for k in rows if "reference" in k]]
    table = ["| method | PSNR (dB) ↑ | SSIM ↑ | reprojection MAE (8-bit) ↓ |", "|---|---|---|---|"]
    for row in [*rows.values(), *ref]:
        ps = "—" if row["psnr"] == float("inf") else f"{row['psnr']:.2f} ± {row['psnr_std']:.2f}"
        table.append(f"| {row['method']} | {ps} | {row['ssim']:.3f} | {row['reproj_mae']:.2f} |")
    print("\n".join(table))
    if results_md:
        notes = []
        for r in results:
            split = r.get("split", "test")
            notes.append(f"{r['n']} held-out {split} grids ({split.upper()}_SEEDS[:{r['n']}]), 8x8 at 72x128, {r['steps']} Euler "
                         f"steps, σ shift {r.get('shift', 1.0):g}, device {r['device']}, date {r['date']}, commit {r['commit']}: "
                         f"`python benchmarks/quality.py {' '.join(r['argv'])}`"
                         + (f"; FP8 (e4m3 block linears) against bf16, same seed: {r['fp8_vs_bf16_psnr']:.2f} dB "
                            "PSNR over the generated cells" if "fp8_vs_bf16_psnr" in r else "") + ".")
        write_section(Path(results_md), "quality", "\n".join(table) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")


def write_section(path: Path, key: str, body: str):
    """Replace the text between <!-- key:begin --> and <!-- key:end --> (appending the markers if absent)."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        text = text[:text.index(begin) + len(begin)] + "\n" + body + text[text.index(end):]
    else:
        text += f"\n{begin}\n{body}{end}\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
