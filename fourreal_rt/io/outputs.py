"""Writing a finished grid to OUT/ (DESIGN.md §5), all or nothing.

Everything is written into a temporary sibling directory `.OUT.tmp-XXXX` and renamed into place only when
every file is complete; on any error the temporary directory is removed.
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from ..runtime.threads import cores, in_background
from .video import InputError

GAP = 2  # pixels between tiles in grid.mp4
JPEG_QUALITY = 90  # viewer.html frames
CRF = 18  # libx264 quality: visually lossless for previews
X264_PRESET = "ultrafast"  # the videos are previews (the exact frames are in grid.npz): at CRF 18 on paper-size frames
                           # 2.2x faster than "veryfast" on natural frames (3.3x on noise), the same PSNR (37.5 dB),
                           # 1.6x the bytes (105 vs 65 KiB an 8-frame view video; benchmarks/RESULTS.md, issue 5)


class OutputExistsError(InputError):
    """OUT exists and overwrite was not asked for."""


def check_output_dir(out_dir, overwrite: bool = False, protect=()) -> Path:
    """Raises (one line) unless `out_dir` can be written; call before any expensive work.

    protect: paths (the inputs) that must survive: an output directory that is one of them, holds one of
    them, or holds the working directory is refused, since --overwrite replaces the whole directory.
    """
    out = Path(out_dir)
    if overwrite and out.exists():
        resolved = out.resolve()
        for p in [*protect, Path.cwd()]:
            p = Path(p).resolve()
            if p == resolved or resolved in p.parents:
                raise OutputExistsError(out, f"refusing to replace it: it holds {p}")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(out, "exists and is not a directory")
    if out.exists() and not overwrite:
        raise OutputExistsError(out, "output directory exists (use --overwrite to replace it)")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(out, f"cannot write in {parent}")
    return out


def video_codec() -> str:
    """libx264 when PyAV's FFmpeg has the encoder (PyAV 18's wheel does), else mpeg4."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:
        return "mpeg4"


def encode_mp4(path, frames: np.ndarray, fps: float, threads: int = 0) -> dict:
    """Encodes frames [F, h, w, 3] to an H.264 yuv420p mp4; odd sizes are edge-padded (bottom/right) to even.
    threads: the encoder's threads (0: its own choice, one or more per core)."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, h, w, 3], got {frames.dtype} {list(frames.shape)}")
    F, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")  # [F, h+ph, w+pw, 3]
    codec = video_codec()
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(100000),
                                      options={"crf": str(CRF), "preset": X264_PRESET} if codec == "libx264" else {})
        stream.width, stream.height, stream.pix_fmt = w + pw, h + ph, "yuv420p"
        stream.codec_context.thread_count = threads
        for img in frames:
            container.mux(stream.encode(_rgb_frame(img)))
        container.mux(stream.encode(None))
    return {"codec": codec, "pix_fmt": "yuv420p", "padded_size": [h + ph, w + pw]}


def _rgb_frame(img: np.ndarray) -> av.VideoFrame:
    """img [h, w, 3] as an rgb24 frame, copied straight into the frame's buffer by numpy (which lets other threads
    run meanwhile; `VideoFrame.from_ndarray` makes two copies holding the interpreter lock: 0.27 vs 0.02 ms a
    288 x 512 frame, and the videos are encoded in parallel threads)."""
    h, w, _ = img.shape
    frame = av.VideoFrame(w, h, "rgb24")
    plane = frame.planes[0]
    np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)[:, :w * 3] = img.reshape(h, w * 3)
    return frame


def tile(views: np.ndarray, gap: int = GAP) -> np.ndarray:
    """Tiles views [V, H, W, 3] in a near-square layout (cols = ceil(sqrt(V))) with `gap` black pixels."""
    V, H, W, _ = views.shape
    cols = math.ceil(math.sqrt(V))
    rows = math.ceil(V / cols)
    canvas = np.zeros((rows * H + (rows - 1) * gap, cols * W + (cols - 1) * gap, 3), np.uint8)
    for v in range(V):
        r, c = divmod(v, cols)
        canvas[r * (H + gap):r * (H + gap) + H, c * (W + gap):c * (W + gap) + W] = views[v]
    return canvas


def _jpeg_uri(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_VIEWER = """<!doctype html>
<html><head><meta charset="utf-8"><title>4D video __V__ views x __T__ times</title>
<style>
body { font-family: sans-serif; background: #1e1e1e; color: #eee; margin: 16px; }
img { display: block; width: __DW__px; height: __DH__px; background: #000; margin-bottom: 12px; }
.row { margin: 6px 0; } input[type=range] { width: 360px; vertical-align: middle; }
label { display: inline-block; width: 44px; } span { display: inline-block; width: 64px; }
</style></head>
<body>
<div>4D video: __V__ views &times; __T__ times (grid[view, time])</div>
<img id="frame" alt="grid frame">
<div class="row"><label for="view">view</label><input type="range" id="view" min="0" max="__VM__" value="0">
<span id="view_label"></span><button id="play_view">play view</button></div>
<div class="row"><label for="time">time</label><input type="range" id="time" min="0" max="__TM__" value="0">
<span id="time_label"></span><button id="play_time">play time</button></div>
<script>
const FRAMES = __FRAMES__;  // FRAMES[v][t]: JPEG data URI of grid[v, t]
const FPS = __FPS__;
const img = document.getElementById("frame");
const sliders = {view: document.getElementById("view"), time: document.getElementById("time")};
function show() {
  const v = +sliders.view.value, t = +sliders.time.value;
  img.src = FRAMES[v][t];
  document.getElementById("view_label").textContent = v + " / " + sliders.view.max;
  document.getElementById("time_label").textContent = t + " / " + sliders.time.max;
}
for (const axis of ["view", "time"]) {
  const slider = sliders[axis], button = document.getElementById("play_" + axis);
  let timer = null;
  slider.addEventListener("input", show);
  button.addEventListener("click", () => {
    if (timer) { clearInterval(timer); timer = null; button.textContent = "play " + axis; return; }
    button.textContent = "pause " + axis;
    timer = setInterval(() => {
      slider.value = (+slider.value + 1) % (+slider.max + 1);
      show();
    }, 1000 / FPS);
  });
}
// viewer.html#view=2&time=5 opens at grid[2, 5]
for (const [k, v] of new URLSearchParams(location.hash.slice(1))) if (k in sliders) sliders[k].value = v;
show();
</script>
</body></html>
"""


def jpeg_uris(frames: np.ndarray) -> list[str]:
    """The frames [F, H, W, 3] as base64 JPEG data URIs."""
    return [_jpeg_uri(f) for f in frames]


def viewer_html(frames: np.ndarray, fps: float, uris: list[list[str]] | None = None) -> str:
    """One self-contained page for frames [V, T, H, W, 3]: every frame a base64 JPEG, two sliders, play buttons.
    uris: `jpeg_uris(frames[v])` for each view v, if already made."""
    V, T, H, W, _ = frames.shape
    zoom = max(1, 512 // W)  # small model frames are shown enlarged
    uris = uris if uris is not None else [jpeg_uris(frames[v]) for v in range(V)]
    subs = {"__FPS__": repr(float(fps)), "__V__": str(V), "__T__": str(T), "__VM__": str(V - 1),
            "__TM__": str(T - 1), "__DW__": str(W * zoom), "__DH__": str(H * zoom),
            "__FRAMES__": "[" + ",".join("[" + ",".join(f'"{u}"' for u in row) + "]" for row in uris) + "]"}
    # (FRAMES last: the others then scan only the template; a data URI is base64, nothing in it to escape)
    html = _VIEWER
    for key, val in subs.items():
        html = html.replace(key, val)
    return html


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def _grid_mp4(path, frames: np.ndarray, fps: float) -> dict:
    tiled = np.stack([tile(frames[:, t]) for t in range(frames.shape[1])])  # [T, h, w, 3]
    return encode_mp4(path, tiled, fps)


RAW = ".frames.u8"   # the frames as raw bytes in OUT's temporary directory, for the writer processes to map


def _piece(kind: str, d: Path, frames, index: int, fps: float):
    """One independent piece of the outputs: "grid" (grid.mp4, x264's own threads), "view" / "time" (video
    `index`, one thread), "jpeg" (view `index`'s viewer frames: returns their data URIs). frames: uint8
    [V, T, H, W, 3], or (path, shape) of its raw copy (`RAW`), mapped here (in a writer process)."""
    if isinstance(frames, tuple):
        frames = np.memmap(frames[0], np.uint8, "r", shape=frames[1])
    if kind == "grid":
        return _grid_mp4(d / "grid.mp4", frames, fps)
    if kind == "view":                                                        # row v: [T, H, W, 3]
        return encode_mp4(d / f"view_{index:03d}.mp4", frames[index], fps, 1)
    if kind == "time":                                                        # column t: [V, H, W, 3]
        return encode_mp4(d / f"time_{index:03d}.mp4", frames[:, index], fps, 1)
    return jpeg_uris(frames[index])


def _write_pieces(d: Path, frames: np.ndarray, fps: float, procs) -> None:
    """grid.npz, the videos, the viewer: concurrently, the longest first; the encoders in `procs` (writer
    processes) if given, else in threads (libx264 and JPEG encoding release the GIL only in part). On a failure
    nothing more starts, and what runs is waited for (nothing writes into the directory once this returns)."""
    V, T = frames.shape[:2]
    src = frames
    if procs is not None:
        frames.tofile(d / RAW)
        src = (str(d / RAW), frames.shape)
    try:                                                      # (RAW: only with writer processes)
        with ThreadPoolExecutor(max_workers=min(32, cores())) as threads:
            ex = procs or threads
            jobs = [ex.submit(_piece, "grid", d, src, 0, fps),
                    threads.submit(np.savez, d / "grid.npz", frames=frames)]   # uncompressed: see write_outputs
            jobs += [ex.submit(_piece, kind, d, src, i, fps)
                     for kind, n in (("view", V), ("time", T)) for i in range(n)]
            uris = [ex.submit(_piece, "jpeg", d, src, v, fps) for v in range(V)]                 # viewer frames
            jobs += uris + [threads.submit(lambda: (d / "viewer.html").write_text(  # queued after its frames: it
                viewer_html(frames, fps, [u.result() for u in uris]), encoding="utf-8"))]  # only waits on running jobs
            try:
                wait(jobs, return_when=FIRST_EXCEPTION)
            finally:
                for job in jobs:                                  # a failure (or an interrupt): start nothing more,
                    job.cancel()
                wait(jobs)                                        # and let what runs finish
            for job in jobs:
                if not job.cancelled():
                    job.result()                                  # re-raises the failure
    finally:
        (d / RAW).unlink(missing_ok=True)


_writers: dict = {}   # "pool": the writer processes once they are up; "starting": the Future of starting them


def start_writers(workers: int | None = None) -> None:
    """Starts writer processes in the background, for every later `write_outputs` of this process: its encoders
    then run there rather than in threads, where they hold the interpreter lock part of the time (8 x 8 noise frames
    at 288 x 512 on the 16-core GPU box: 0.30 s in threads, 0.12 s in processes; benchmarks/RESULTS.md). Linux only:
    they are forked from a fresh interpreter ("forkserver"), never from this process, which may hold a CUDA
    context; like any multiprocessing child they import this process's __main__ (guard a script's work with
    `if __name__ == "__main__":`). They ignore Ctrl-C (this process handles it) and end with this process. Until
    they are up, threads write. The `fourreal-rt` program starts them after its first denoising step."""
    import multiprocessing
    if _writers or sys.platform != "linux" or "forkserver" not in multiprocessing.get_all_start_methods():
        return
    n = workers or min(32, cores())

    def start():
        from concurrent.futures import ProcessPoolExecutor
        pool = None
        try:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload([__name__])            # imported once, in the server the workers fork from
            pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_worker_init,
                                       initargs=(os.getpid(),))
            for f in [pool.submit(_up) for _ in range(n)]:    # at once, so that all n are started now
                f.result()
            _writers["pool"] = pool
        except Exception:  # noqa: BLE001  (no writer processes here: threads write)
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
    _writers["starting"] = in_background(start, name="fourreal-writers")


def _worker_init(parent: int) -> None:
    """A writer process ignores Ctrl-C (the parent handles it) and ends when the parent does, however that ends
    (killed too): multiprocessing alone would leave it waiting on its own task queue, its forkserver with it."""
    import select
    import signal
    import threading
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch():
        try:
            select.select([os.pidfd_open(parent)], [], [])  # readable once `parent` has exited
        except (AttributeError, OSError):                    # no pidfd (Linux < 5.3): look every second
            while True:
                time.sleep(1.0)
                try:
                    os.kill(parent, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
        os._exit(0)
    threading.Thread(target=watch, name="fourreal-writer-watch", daemon=True).start()


def _up() -> None:
    time.sleep(0.05)


def _write_all(d: Path, frames: np.ndarray, meta: dict, fps: float, processes: bool = True) -> None:
    V, T, H, W, _ = frames.shape
    procs = _writers.get("pool") if processes else None
    try:
        _write_pieces(d, frames, fps, procs)
    except BrokenProcessPool:                                 # a writer process died: threads from now on
        _writers.pop("pool", None)
        procs.shutdown(wait=True)                             # none of its workers writes any more
        _write_pieces(d, frames, fps, None)
    video = {"codec": video_codec(), "pix_fmt": "yuv420p", "crf": CRF if video_codec() == "libx264" else None,
             "odd_sizes": "edge-padded by one pixel at the bottom/right to even"}
    out_meta = {**meta, "axes": {"frames": ["view", "time", "height", "width", "rgb"]},
                "V": V, "T": T, "H": H, "W": W, "fps": float(fps), "video": video,
                "grid_mp4": {"layout": "views tiled row-major, cols = ceil(sqrt(V))", "gap_px": GAP}}
    (d / "meta.json").write_text(json.dumps(out_meta, indent=2, default=_json_default), encoding="utf-8")


def write_outputs(out_dir, frames: np.ndarray, meta: dict, *, fps: float = 8.0, overwrite: bool = False) -> Path:
    """Writes frames uint8 [V, T, H, W, 3] and `meta` to `out_dir` atomically; returns the final path.

    Files: grid.npz, meta.json, view_{v:03d}.mp4, time_{t:03d}.mp4, grid.mp4, viewer.html. grid.npz holds the exact
    frames uncompressed (np.savez): deflating them was the slowest part of writing (0.6-1.1 s for an 8 x 8 grid at
    288 x 512 on the GPU box, benchmarks/RESULTS.md) for a 3x smaller file on natural frames and none on noise; the
    videos are the compact copies.
    """
    out = check_output_dir(out_dir, overwrite)
    in_memory = not isinstance(frames, np.memmap)  # a grid spooled to disk is not copied again for writer processes
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [V, T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.absolute().parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        _write_all(tmp, frames, meta, fps, processes=in_memory)
        if out.exists():
            if not overwrite:  # appeared while we were writing
                raise OutputExistsError(out, "output directory exists (use --overwrite to replace it)")
            old = out.absolute().parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
