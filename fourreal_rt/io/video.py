"""Reading the two input videos (in_row.mp4, in_col.mp4) with PyAV.

Frames are chosen by presentation timestamp, turned upright from the stream's display matrix, then
resized to the model frame size by RESIZE_POLICY. Every user-facing failure is an InputError whose
message is one line naming the file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

RESIZE_POLICY = (
    "cover+center-crop: scale by s = max(H/h, W/w) keeping aspect ratio (PIL antialiased bilinear, "
    "scaled size rounded and at least H x W), then crop the centre H x W"
)
# A frame is taken for target time tau if its pts time >= tau - PTS_TOLERANCE/fps: absorbs timestamp
# rounding (e.g. 1/1000 s time bases at 30 fps) without ever picking a frame a whole period early.
PTS_TOLERANCE = 0.25
# Mean absolute difference (0..255 scale, after resize) above which in_row and in_col are said to disagree
# on frame [0, 0]. H.264 round trips of the same frame stay below ~3.
FRAME00_MAD_THRESHOLD = 10.0


class InputError(ValueError):
    """A problem with a user-given file; the message is one line: '<file>: <problem>'."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {' '.join(str(problem).split())}")


@dataclasses.dataclass
class VideoInfo:
    path: str
    width: int  # as displayed, i.e. after rotation
    height: int
    fps: float  # the stream's average frame rate
    frame_count: int  # packets demuxed (one per frame for video codecs); not a full decode
    duration_s: float
    rotation: int  # degrees counter-clockwise the pixels are turned to display upright: 0, 90, 180 or 270
    codec: str


def _ffmpeg_problem(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)


def _open(path):
    """Opens `path` and returns (container, video stream); raises InputError."""
    p = Path(path)
    if not p.exists():
        raise InputError(path, "no such file")
    if p.is_dir():
        raise InputError(path, "is a directory, not a video file")
    try:
        container = av.open(str(p))
    except av.FFmpegError as e:
        if isinstance(e, OSError):  # permission denied and the like
            raise InputError(path, f"cannot open ({_ffmpeg_problem(e)})") from None
        raise InputError(path, f"not a video file or corrupt ({_ffmpeg_problem(e)})") from None
    if not container.streams.video:
        container.close()
        raise InputError(path, "not a video file (no video stream)")
    return container, container.streams.video[0]


def _rate(stream) -> Fraction | None:
    for r in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if r:
            return Fraction(r)
    return None


def _rotation(frame) -> int:
    """Counter-clockwise degrees from the frame's display matrix, snapped to a multiple of 90."""
    return int(90 * round((frame.rotation or 0) / 90)) % 360


def upright(img: np.ndarray, rotation: int) -> np.ndarray:
    """Turns a decoded frame [h, w, 3] so it displays upright.

    `rotation` is PyAV's VideoFrame.rotation: the display matrix rotates the frame by that many degrees
    counter-clockwise, so the pixels are turned counter-clockwise by it (what ffmpeg's autorotate does).
    """
    k = (int(rotation) // 90) % 4
    return np.ascontiguousarray(np.rot90(img, k=k)) if k else img


def probe(path) -> VideoInfo:
    """Validates `path` cheaply (demuxes all packets, decodes only the first frame)."""
    container, stream = _open(path)
    with container:
        first = None
        packets = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    packets += 1
                if first is None:
                    try:
                        frames = stream.decode(packet)  # packet of size 0 flushes the decoder
                    except av.FFmpegError:
                        frames = []  # a broken packet; keep looking for a decodable frame
                    first = frames[0] if frames else None
        except av.FFmpegError as e:
            raise InputError(path, f"truncated or corrupt file ({_ffmpeg_problem(e)})") from None
        if first is None:
            raise InputError(path, "no decodable frames (empty or corrupt video stream)")
        if stream.frames and packets < stream.frames:
            raise InputError(path, f"truncated or corrupt file (index lists {stream.frames} frames, "
                                   f"only {packets} readable)")
        rate = _rate(stream)
        fps = float(rate) if rate else 0.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = packets / fps if fps else 0.0
        rot = _rotation(first)
        w, h = first.width, first.height
        if rot in (90, 270):
            w, h = h, w
        return VideoInfo(path=str(path), width=w, height=h, fps=fps, frame_count=packets,
                         duration_s=duration, rotation=rot, codec=stream.codec_context.name)


def cover_crop(img: np.ndarray, size) -> tuple[np.ndarray, dict]:
    """Resizes [h, w, 3] to [H, W, 3] by RESIZE_POLICY; returns it and {scaled_size, crop_box}."""
    H, W = size
    h, w = img.shape[:2]
    s = max(H / h, W / w)
    sh, sw = max(H, round(h * s)), max(W, round(w * s))
    if (sh, sw) != (h, w):
        img = np.asarray(Image.fromarray(img).resize((sw, sh), Image.Resampling.BILINEAR))
    top, left = (sh - H) // 2, (sw - W) // 2
    out = img[top:top + H, left:left + W]  # [H, W, 3]
    return np.ascontiguousarray(out), {"scaled_size": [sh, sw], "crop_box_ltrb": [left, top, left + W, top + H]}


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_frames(path, count: int | None, size, *, start: int = 0) -> tuple[np.ndarray, dict]:
    """Decodes `count` frames (None: all) of `path`, upright, resized to `size` = (H, W).

    Frame k is the first decoded frame whose pts time >= t0 + (start + k) / fps (t0: the first frame's
    time, fps: the stream's average rate), so B-frame reordering and variable frame rates are handled;
    a frame may repeat across a gap. Returns (frames uint8 [count, H, W, 3], report); the report (for
    meta.json) holds path, sha256, fps, source_size (upright [h, w]), rotation_applied, scaled_size,
    crop_box_ltrb (in the scaled frame), resize_policy, frame_times_s (from the first frame), decode_errors.
    """
    H, W = size
    container, stream = _open(path)
    rate = _rate(stream)
    if rate is None:
        container.close()
        raise InputError(path, "video stream has no frame rate")
    out, times, report = [], [], None
    decode_errors, n, k, t0 = 0, 0, 0, None  # n: frames decoded, k: frames chosen
    with container:
        try:
            for packet in container.demux(stream):
                try:
                    frames = stream.decode(packet)
                except av.FFmpegError:
                    decode_errors += 1
                    continue
                for frame in frames:
                    if frame.pts is not None:
                        t = Fraction(frame.pts) * frame.time_base
                    else:  # no timestamp: assume a constant rate from the first frame
                        t = (t0 or 0) + Fraction(n) / rate
                    t0 = t if t0 is None else t0
                    n += 1
                    img = None
                    while (count is None or k < count) and t >= t0 + (start + k - PTS_TOLERANCE) / rate:
                        if img is None:
                            rot = _rotation(frame)
                            raw = upright(frame.to_ndarray(format="rgb24"), rot)  # [h, w, 3]
                            img, crop = cover_crop(raw, size)  # [H, W, 3]
                            if report is None:
                                report = {"source_size": [raw.shape[0], raw.shape[1]], "rotation_applied": rot,
                                          **crop}
                        out.append(img)
                        times.append(float(t - t0))
                        k += 1
                if count is not None and k >= count:
                    break
        except av.FFmpegError as e:
            raise InputError(path, f"truncated or corrupt file ({_ffmpeg_problem(e)})") from None
    if count is not None and k < count:
        got = f"has {k} frames" + (f" from frame {start} on" if start else "")
        raise InputError(path, f"{got}, the grid needs {count}")
    if not out:
        raise InputError(path, "no decodable frames")
    report = {"path": str(path), "sha256": sha256(path), "fps": float(rate), **report,
              "resize_policy": RESIZE_POLICY, "size": [H, W], "start": start,
              "frame_times_s": [round(x, 6) for x in times], "decode_errors": decode_errors}
    return np.stack(out), report  # [count, H, W, 3]


def read_inputs(row_path, col_path, V: int, T: int, size,
                probed: dict | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Reads in_row (T frames -> row 0) and in_col (V frames -> column 0) at frame size `size` = (H, W).

    Both are probed before anything is decoded (`probed`: {"row": VideoInfo, "col": VideoInfo} already
    taken by the caller). Frame [0, 0] comes from the row; if the column's first frame differs from it by
    more than FRAME00_MAD_THRESHOLD (mean abs difference), a warning is recorded.
    Returns (row uint8 [T, H, W, 3], col uint8 [V, H, W, 3], report).
    """
    infos = {}
    for name, path, need in (("row", row_path, T), ("col", col_path, V)):
        info = (probed or {}).get(name) or probe(path)
        if info.frame_count < need:
            raise InputError(path, f"has {info.frame_count} frames, the grid needs {need}")
        infos[name] = info
    warnings = []
    ri, ci = infos["row"], infos["col"]
    if not math.isclose(ri.fps, ci.fps, rel_tol=1e-3):
        warnings.append(f"frame rates differ: {row_path} is {ri.fps:g} fps, {col_path} is {ci.fps:g} fps "
                        "(each sampled at its own rate)")
    if (ri.width, ri.height) != (ci.width, ci.height):
        warnings.append(f"frame sizes differ: {row_path} is {ri.width}x{ri.height}, {col_path} is "
                        f"{ci.width}x{ci.height} (each resized to {size[1]}x{size[0]})")
    row, row_report = read_frames(row_path, T, size)  # [T, H, W, 3]
    col, col_report = read_frames(col_path, V, size)  # [V, H, W, 3]
    mad = float(np.abs(row[0].astype(np.int16) - col[0].astype(np.int16)).mean())
    if mad > FRAME00_MAD_THRESHOLD:
        warnings.append(f"{row_path} and {col_path} disagree on frame [0,0] (mean abs difference {mad:.1f} > "
                        f"{FRAME00_MAD_THRESHOLD:g}); the row's frame is used")
    col[0] = row[0]  # the grid has one frame [0, 0]: the row's
    report = {
        "row": {**dataclasses.asdict(ri), **row_report},
        "col": {**dataclasses.asdict(ci), **col_report},
        "frame00_mean_abs_diff": round(mad, 3),
        "frame00_threshold": FRAME00_MAD_THRESHOLD,
        "warnings": warnings,
    }
    return row, col, report
