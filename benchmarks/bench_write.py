"""Where does writing a finished grid spend its time? (`io.outputs.write_outputs`, the last part of `generate`.)

For a noise grid (what random weights generate: the worst case for H.264) and a rendered held-out scene (natural
frames) of the preset's size: the whole `write_outputs` in threads, each of its pieces alone, timed the way they
run there (the small videos one encoder thread each, all at once on the pool; grid.mp4 with the encoder's own
threads), then the whole `write_outputs` again with the writer processes (`start_writers`, as `generate` runs it).
Median of --reps; CPU only.

    python benchmarks/bench_write.py --preset paper [--reps 3] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def frames_of(kind: str, preset: str) -> np.ndarray:
    """uint8 [V, T, H, W, 3]: uniform noise, or the scene bench_e2e renders its inputs from."""
    from fourreal_rt.model import PRESETS
    cfg = PRESETS[preset]
    if kind == "noise":
        return np.random.default_rng(0).integers(0, 256, (cfg.views, cfg.times, cfg.frame_h, cfg.frame_w, 3), np.uint8)
    import torch

    from bench_e2e import TEST_SCENE
    from fourreal_rt.data.scenes import render_grid
    g = render_grid(TEST_SCENE, cfg.views, cfg.times, cfg.frame_h, cfg.frame_w, device="cpu")
    return (g["frames"].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def timed(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 4)


def pieces(frames: np.ndarray, d: Path, reps: int) -> dict:
    from fourreal_rt.io import outputs as O
    V, T = frames.shape[:2]
    with ThreadPoolExecutor(max_workers=min(32, O.cores())) as pool:   # as _write_pieces's
        return _pieces(frames, d, reps, pool, O, V, T) | {"cores": O.cores()}


def _pieces(frames, d: Path, reps: int, pool, O, V: int, T: int) -> dict:
    def small_videos():
        jobs = [pool.submit(O.encode_mp4, d / f"view_{v}.mp4", frames[v], 8.0, 1) for v in range(V)]
        jobs += [pool.submit(O.encode_mp4, d / f"time_{t}.mp4", frames[:, t], 8.0, 1) for t in range(T)]
        for j in jobs:
            j.result()

    def jpegs():
        return [f.result() for f in [pool.submit(O.jpeg_uris, frames[v]) for v in range(V)]]
    uris = jpegs()
    return {
        "write_outputs": timed(lambda: O.write_outputs(d / "out", frames, {}, overwrite=True), reps),
        "grid_mp4": timed(lambda: O._grid_mp4(d / "grid.mp4", frames, 8.0), reps),
        "grid_mp4_tiling": timed(lambda: [O.tile(frames[:, t]) for t in range(T)], reps),
        "one_small_mp4_1_thread": timed(lambda: O.encode_mp4(d / "one.mp4", frames[0], 8.0, 1), reps),
        f"{V + T}_small_mp4_in_parallel": timed(small_videos, reps),
        "grid_npz": timed(lambda: np.savez(d / "grid.npz", frames=frames), reps),
        "one_view_jpegs": timed(lambda: O.jpeg_uris(frames[0]), reps),
        "all_jpegs_in_parallel": timed(jpegs, reps),
        "viewer_html": timed(lambda: (d / "viewer.html").write_text(O.viewer_html(frames, 8.0, uris)), reps),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=None, help="write bench_write.json here")
    a = ap.parse_args()
    print(f"bench_write: preset {a.preset}, reps {a.reps}", flush=True)
    from fourreal_rt.io import outputs as O
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        grids = {kind: frames_of(kind, a.preset) for kind in ("noise", "natural")}
        for kind, frames in grids.items():                  # in threads
            res[kind] = pieces(frames, Path(tmp), a.reps)
            print(f"{kind} {list(frames.shape)}: " + ", ".join(f"{k} {v}" for k, v in res[kind].items()), flush=True)
        t0 = time.perf_counter()
        O.start_writers()                                     # then with the writer processes, as `generate` does
        O._writers["starting"].join()
        up = round(time.perf_counter() - t0, 3)
        for kind, frames in grids.items():
            res[kind]["writer_processes_up_s"] = up
            res[kind]["write_outputs_processes"] = timed(
                lambda: O.write_outputs(Path(tmp) / "out", frames, {}, overwrite=True), a.reps)
            print(f"{kind}: writer processes up in {up} s; write_outputs with them "
                  f"{res[kind]['write_outputs_processes']}", flush=True)
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "bench_write.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
