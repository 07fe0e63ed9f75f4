"""Tests of fourreal_rt.io: reading the input videos and writing OUT/ all-or-nothing."""
from __future__ import annotations

import json
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import make_video, smooth_frames
from fourreal_rt.io import (InputError, OutputExistsError, check_output_dir, probe, read_frames, read_inputs,
                            write_outputs)
from fourreal_rt.io import outputs, video


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def nearest_source(frames: np.ndarray, src: np.ndarray) -> list[int]:
    """For each frame [F, H, W, 3], the index of the closest source frame [S, H, W, 3]."""
    d = np.abs(frames[:, None].astype(np.int16) - src[None].astype(np.int16)).mean(axis=(2, 3, 4))  # [F, S]
    return d.argmin(axis=1).tolist()


def assert_one_line(err: Exception, name: str):
    msg = str(err)
    assert "\n" not in msg and name in msg, msg


# ---- bad inputs -------------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file") as e:
        probe(tmp_path / "in_row.mp4")
    assert_one_line(e.value, "in_row.mp4")


def test_directory(tmp_path):
    (tmp_path / "in_row.mp4").mkdir()
    with pytest.raises(InputError, match="directory") as e:
        probe(tmp_path / "in_row.mp4")
    assert_one_line(e.value, "in_row.mp4")


def test_text_file_renamed_mp4(tmp_path):
    path = tmp_path / "in_col.mp4"
    path.write_text("this is not a video\n" * 20)
    with pytest.raises(InputError, match="not a video file") as e:
        probe(path)
    assert_one_line(e.value, "in_col.mp4")
    with pytest.raises(InputError):
        read_frames(path, 1, (8, 8))


@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_mp4(tmp_path, faststart):
    # moov at the end (default): the index is cut off and opening fails; moov first (faststart): the index
    # survives but lists more frames than are left.
    path = make_video(tmp_path / "in_row.mp4", np.random.default_rng(0).integers(0, 255, (20, 48, 64, 3),
                                                                                 dtype=np.uint8), 10,
                      faststart=faststart)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(InputError, match="corrupt") as e:
        probe(path)
    assert_one_line(e.value, "in_row.mp4")


def test_video_without_frames(tmp_path):
    # With no frame encoded, the mp4 muxer writes a file with no track at all.
    path = tmp_path / "empty.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()  # writes the header although no packet follows
    assert path.stat().st_size > 0
    with pytest.raises(InputError, match="no video stream") as e:
        probe(path)
    assert_one_line(e.value, "empty.mp4")


def test_video_with_no_decodable_frames(tmp_path):
    # A real video stream whose frame data (the mdat payload) is zeroed: the index is fine, nothing decodes.
    path = make_video(tmp_path / "zeros.mp4", smooth_frames(5, 48, 64), 10)
    data = bytearray(path.read_bytes())
    i = data.find(b"mdat")
    size = struct.unpack(">I", data[i - 4:i])[0]
    data[i + 4:i - 4 + size] = bytes(size - 8)
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="no decodable frames") as e:
        probe(path)
    assert_one_line(e.value, "zeros.mp4")


def test_fewer_frames_than_needed(tmp_path):
    path = make_video(tmp_path / "in_row.mp4", smooth_frames(5, 48, 64), 10)
    with pytest.raises(InputError) as e:
        read_frames(path, 8, (48, 64))
    assert str(e.value) == f"{path}: has 5 frames, the grid needs 8"
    col = make_video(tmp_path / "in_col.mp4", smooth_frames(8, 48, 64), 10)
    with pytest.raises(InputError, match="has 5 frames, the grid needs 8") as e:
        read_inputs(path, col, 8, 8, (48, 64))
    assert_one_line(e.value, "in_row.mp4")


def test_read_inputs_probes_before_decoding(tmp_path, monkeypatch):
    row = make_video(tmp_path / "in_row.mp4", smooth_frames(8, 48, 64), 10)
    col = make_video(tmp_path / "in_col.mp4", smooth_frames(3, 48, 64), 10)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before both inputs were validated")

    monkeypatch.setattr(video, "read_frames", no_decoding)
    with pytest.raises(InputError, match="in_col.mp4: has 3 frames, the grid needs 6"):
        read_inputs(row, col, 6, 8, (48, 64))


# ---- frame choice, resize, rotation ------------------------------------------------------------------------

def test_frames_chosen_by_timestamp_with_b_frames(tmp_path):
    src = smooth_frames(12, 48, 64)  # [12, 48, 64, 3]
    path = make_video(tmp_path / "v.mp4", src, 24)  # libx264 defaults use B-frames
    info = probe(path)
    assert (info.width, info.height, info.frame_count, info.rotation) == (64, 48, 12, 0)
    assert info.fps == pytest.approx(24.0) and info.duration_s == pytest.approx(0.5, abs=0.05)
    frames, report = read_frames(path, 6, (48, 64), start=3)
    assert frames.shape == (6, 48, 64, 3) and frames.dtype == np.uint8
    assert nearest_source(frames, src) == [3, 4, 5, 6, 7, 8]
    assert report["frame_times_s"] == pytest.approx([k / 24 for k in range(3, 9)], abs=1e-3)
    assert psnr(frames, src[3:9]) > 30
    everything, _ = read_frames(path, None, (48, 64))
    assert nearest_source(everything, src) == list(range(12))


def test_variable_frame_rate(tmp_path):
    src = smooth_frames(6, 48, 64)
    times = [0.0, 0.1, 0.15, 0.4, 0.5, 0.6]
    path = make_video(tmp_path / "vfr.mp4", src, 10, times=times)
    frames, report = read_frames(path, None, (48, 64))
    fps = report["fps"]
    # frame k: the first frame at or after k / fps (less the documented tolerance); a frame may repeat.
    expect = [next(i for i, t in enumerate(times) if t >= (k - video.PTS_TOLERANCE) / fps)
              for k in range(len(frames))]
    assert report["frame_times_s"] == pytest.approx([times[i] for i in expect], abs=1e-3)
    assert nearest_source(frames, src) == expect
    assert expect != list(range(len(expect)))  # the test really exercises a gap


def test_odd_size_cover_and_centre_crop(tmp_path):
    src = smooth_frames(4, 75, 97)  # odd H and W
    path = make_video(tmp_path / "odd.mp4", src, 12)
    info = probe(path)
    assert (info.width, info.height) == (97, 75)
    frames, report = read_frames(path, 4, (40, 64))
    assert frames.shape == (4, 40, 64, 3)
    # cover: 75x97 -> scale max(40/75, 64/97) = 0.66 -> 49x64, crop rows 4..44
    assert report["scaled_size"] == [49, 64] and report["crop_box_ltrb"] == [0, 4, 64, 44]
    assert report["source_size"] == [75, 97] and report["resize_policy"] == video.RESIZE_POLICY
    expect = np.stack([video.cover_crop(f, (40, 64))[0] for f in src])
    assert psnr(frames, expect) > 30
    # odd target sizes work too
    frames, _ = read_frames(path, 2, (33, 21))
    assert frames.shape == (2, 33, 21, 3)


def test_upright_on_arrays():
    img = np.zeros((2, 3, 3), np.uint8)
    img[0, 0] = 255  # marker top-left of a 2x3 frame
    assert np.argwhere(video.upright(img, 90)[..., 0])[0].tolist() == [2, 0]  # counter-clockwise: bottom-left
    assert np.argwhere(video.upright(img, 270)[..., 0])[0].tolist() == [0, 1]  # clockwise: top-right
    assert np.argwhere(video.upright(img, 180)[..., 0])[0].tolist() == [1, 2]
    assert video.upright(img, 0) is img


@pytest.mark.parametrize("rotation, corner", [(90, "bottom-left"), (-90, "top-right"), (180, "bottom-right")])
def test_rotation_metadata(tmp_path, rotation, corner):
    # PyAV 18 writes the display matrix with VideoStream.set_display_rotation (counter-clockwise degrees).
    src = np.full((3, 48, 64, 3), 40, np.uint8)
    src[:, :12, :12] = 255  # white marker in the stored top-left corner
    path = make_video(tmp_path / "rot.mp4", src, 10, rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation % 360
    assert (info.width, info.height) == ((48, 64) if rotation % 180 else (64, 48))
    H, W = (64, 48) if rotation % 180 else (48, 64)
    frames, report = read_frames(path, 3, (H, W))
    assert report["rotation_applied"] == rotation % 360
    ys, xs = np.nonzero(frames[0, ..., 0] > 200)
    got = ("top" if ys.mean() < H / 2 else "bottom") + "-" + ("left" if xs.mean() < W / 2 else "right")
    assert got == corner


def test_read_inputs_mismatched_row_and_column(tmp_path):
    row_src = smooth_frames(6, 48, 64, seed=1)
    col_src = smooth_frames(5, 75, 97, seed=2)  # other size, other fps, other first frame
    row = make_video(tmp_path / "in_row.mp4", row_src, 10)
    col = make_video(tmp_path / "in_col.mp4", col_src, 24)
    r, c, report = read_inputs(row, col, 5, 6, (36, 48))
    assert r.shape == (6, 36, 48, 3) and c.shape == (5, 36, 48, 3)
    assert np.array_equal(c[0], r[0])  # the row wins frame [0, 0]
    assert nearest_source(c[1:], np.stack([video.cover_crop(f, (36, 48))[0] for f in col_src])) == [1, 2, 3, 4]
    w = " | ".join(report["warnings"])
    assert "frame rates differ" in w and "frame sizes differ" in w and "disagree on frame [0,0]" in w
    assert report["frame00_mean_abs_diff"] > video.FRAME00_MAD_THRESHOLD
    assert report["row"]["fps"] == pytest.approx(10) and report["col"]["fps"] == pytest.approx(24)
    assert report["col"]["source_size"] == [75, 97] and len(report["row"]["sha256"]) == 64
    json.dumps(report)  # goes into meta.json


def test_read_inputs_agreeing_inputs(tmp_path):
    src = smooth_frames(6, 48, 64)
    row = make_video(tmp_path / "in_row.mp4", src, 10)
    col = make_video(tmp_path / "in_col.mp4", np.concatenate([src[:1], src[::-1][:4]]), 10)
    r, c, report = read_inputs(row, col, 5, 6, (48, 64))
    assert report["warnings"] == []
    assert report["frame00_mean_abs_diff"] < video.FRAME00_MAD_THRESHOLD
    assert np.array_equal(c[0], r[0])


# ---- outputs ------------------------------------------------------------------------------------------------

def make_grid(V=3, T=4, H=35, W=50) -> np.ndarray:
    return np.stack([smooth_frames(T, H, W, seed=v) for v in range(V)])  # [V, T, H, W, 3]


def decode(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])  # [F, h, w, 3]


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_write_outputs_round_trip(tmp_path):
    grid = make_grid()  # odd H: the mp4s get padded
    V, T, H, W, _ = grid.shape
    out = write_outputs(tmp_path / "OUT", grid, {"seed": 7, "inputs": {"row": "in_row.mp4"}}, fps=8.0)
    assert out == tmp_path / "OUT" and leftovers(tmp_path) == []
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["grid.npz", "meta.json", "grid.mp4", "viewer.html"]
                           + [f"view_{v:03d}.mp4" for v in range(V)] + [f"time_{t:03d}.mp4" for t in range(T)])
    with np.load(out / "grid.npz") as z:
        assert z["frames"].dtype == np.uint8 and np.array_equal(z["frames"], grid)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 7 and meta["inputs"] == {"row": "in_row.mp4"}
    assert meta["axes"] == {"frames": ["view", "time", "height", "width", "rgb"]}
    assert (meta["V"], meta["T"], meta["H"], meta["W"], meta["fps"]) == (V, T, H, W, 8.0)
    assert meta["video"]["codec"] == "libx264"
    for v in range(V):
        frames = decode(out / f"view_{v:03d}.mp4")  # [T, H+1, W, 3]
        assert frames.shape == (T, H + 1, W, 3)
        assert psnr(frames[:, :H], grid[v]) > 30
    for t in range(T):
        frames = decode(out / f"time_{t:03d}.mp4")  # [V, H+1, W, 3]
        assert frames.shape[0] == V and psnr(frames[:, :H], grid[:, t]) > 30
    with av.open(str(out / "view_000.mp4")) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.format.name == "yuv420p" and s.average_rate == 8
    tiled = decode(out / "grid.mp4")  # 3 views: 2x2 tiles, 2-px gaps (2 * 35 + 2 is even: no padding)
    assert tiled.shape == (T, 2 * H + 2, 2 * W + 2, 3)
    # (this synthetic grid's tiles come back at ~30 dB through H.264 CRF 18; a misplaced view
    # scores 7-10 dB)
    assert psnr(tiled[:, :H, W + 2:], grid[1]) > 28  # row-major: view 1 at row 0, column 1
    assert psnr(tiled[:, H + 2:2 * H + 2, :W], grid[2]) > 28  # view 2 at row 1, column 0


def test_tile_layout():
    views = np.full((5, 4, 6, 3), 200, np.uint8)
    canvas = outputs.tile(views)  # 5 views -> 3 columns x 2 rows
    assert canvas.shape == (2 * 4 + 2, 3 * 6 + 2 * 2, 3)
    assert (canvas[4:6] == 0).all() and (canvas[:, 6:8] == 0).all()  # the gaps
    assert (canvas[6:, 14:] == 0).all()  # the empty sixth tile


def test_viewer_is_self_contained(tmp_path):
    grid = make_grid(V=2, T=5, H=16, W=24)
    out = write_outputs(tmp_path / "OUT", grid, {}, fps=4.0)
    html = (out / "viewer.html").read_text()
    assert "http://" not in html and "https://" not in html and "<link" not in html and " src=\"" not in html
    assert html.count("data:image/jpeg;base64,") == 2 * 5
    assert 'id="view"' in html and 'id="time"' in html and 'max="1"' in html and 'max="4"' in html
    assert 'id="play_view"' in html and 'id="play_time"' in html


def test_existing_output_dir_is_left_alone(tmp_path):
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(OutputExistsError) as e:
        check_output_dir(out, overwrite=False)
    assert_one_line(e.value, "OUT")
    with pytest.raises(OutputExistsError):
        write_outputs(out, make_grid(1, 1, 8, 8), {})
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"
    assert leftovers(tmp_path) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="not a directory"):
        check_output_dir(tmp_path / "file", overwrite=True)


def test_overwrite_replaces(tmp_path):
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert check_output_dir(out, overwrite=True) == out
    write_outputs(out, make_grid(2, 2, 8, 8), {}, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "grid.npz").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, existing):
    out = tmp_path / "OUT"
    if existing:
        out.mkdir()
        (out / "old.txt").write_text("old")
    calls = []
    real = outputs.encode_mp4

    def failing_encode(path, frames, fps, threads=0):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(path, frames, fps, threads)

    monkeypatch.setattr(outputs, "encode_mp4", failing_encode)
    monkeypatch.setattr(outputs, "_writers", {})                # encoders in threads, where the patch applies
    with pytest.raises(RuntimeError, match="disk full"):
        write_outputs(out, make_grid(2, 2, 8, 8), {}, overwrite=existing)
    assert len(calls) >= 3 and calls[0].parent != out  # it really wrote files somewhere else first
    assert leftovers(tmp_path) == []
    if existing:
        assert [p.name for p in out.iterdir()] == ["old.txt"]
    else:
        assert not out.exists()


def test_bad_frames_rejected_before_writing(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_outputs(tmp_path / "OUT", np.zeros((2, 2, 8, 8, 3), np.float32), {})
    assert list(tmp_path.iterdir()) == []


def test_fractional_fps(tmp_path):
    out = write_outputs(tmp_path / "OUT", make_grid(1, 3, 8, 8), {}, fps=30000 / 1001)
    with av.open(str(out / "view_000.mp4")) as c:
        assert c.streams.video[0].average_rate == Fraction(30000, 1001)


@pytest.fixture
def writers():
    """Writer processes (`outputs.start_writers`) up for one test, shut down after it."""
    import multiprocessing
    import sys
    if sys.platform != "linux" or "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("writer processes are Linux only")
    saved = dict(outputs._writers)
    outputs._writers.clear()
    outputs.start_writers(2)
    outputs._writers["starting"].result(timeout=120)
    if "pool" not in outputs._writers:
        pytest.skip("writer processes could not start here")
    yield outputs._writers
    pool = outputs._writers.pop("pool", None)
    if pool is not None:
        pool.shutdown()
    outputs._writers.clear()
    outputs._writers.update(saved)


def test_writer_processes_write_what_threads_write(tmp_path, writers):
    """The same files, byte for byte, from the writer processes as from threads; their raw frame copy is gone."""
    grid = make_grid(V=3, T=5, H=35, W=50)
    pool = writers.pop("pool")                                   # threads first
    by_threads = write_outputs(tmp_path / "threads", grid, {"seed": 1}, fps=4.0)
    writers["pool"] = pool
    by_procs = write_outputs(tmp_path / "procs", grid, {"seed": 1}, fps=4.0)
    names = sorted(p.name for p in by_threads.iterdir())
    assert names == sorted(p.name for p in by_procs.iterdir()) and outputs.RAW not in names
    for n in names:
        assert (by_threads / n).read_bytes() == (by_procs / n).read_bytes(), n


def test_a_dead_writer_process_falls_back_to_threads(tmp_path, writers):
    import os
    import signal
    pool = writers["pool"]
    os.kill(next(iter(pool._processes)), signal.SIGKILL)        # one writer dies
    grid = make_grid(V=2, T=3, H=16, W=24)
    out = write_outputs(tmp_path / "o", grid, {}, fps=4.0)
    assert (out / "grid.npz").exists() and (out / "viewer.html").exists() and not (out / outputs.RAW).exists()
    assert "pool" not in writers                                 # threads from now on


def test_a_failing_writer_process_leaves_nothing_behind(tmp_path, monkeypatch, writers):
    """A worker's error reaches the caller once every running job is done, and the temporary directory goes."""
    import tempfile
    made, real = [], tempfile.mkdtemp

    def mkdtemp(prefix, dir):                                    # a directory where view_001.mp4 cannot be written
        d = real(prefix=prefix, dir=dir)
        (Path(d) / "view_001.mp4").mkdir()
        made.append(Path(d))
        return d
    monkeypatch.setattr(outputs.tempfile, "mkdtemp", mkdtemp)
    with pytest.raises(OSError, match="Is a directory"):
        write_outputs(tmp_path / "OUT", make_grid(V=3, T=4, H=16, W=24), {})
    assert made and not made[0].exists() and leftovers(tmp_path) == [] and not (tmp_path / "OUT").exists()
    assert "pool" in writers                                     # a failed job does not break the pool


def test_only_the_program_starts_writer_processes():
    from fourreal_rt.cli import _is_program
    assert not _is_program()                                     # pytest's __main__ is not guarded for them
