"""Shared test helpers: synthetic videos written with PyAV."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def make_video(path, frames: np.ndarray, fps: float, rotation: int | None = None, *, times=None,
               codec: str = "libx264", faststart: bool = False) -> Path:
    """Writes frames uint8 [F, H, W, 3] to an mp4 and returns its path.

    rotation: counter-clockwise degrees stored in the stream's display matrix (PyAV 18's
    VideoStream.set_display_rotation; read back as VideoFrame.rotation). times: optional presentation
    times in seconds, one per frame (variable frame rate). Odd sizes are written as yuv444p (H.264 4:2:0
    needs even sizes), even ones as yuv420p.
    """
    F, H, W, _ = frames.shape
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(100000))
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuv420p" if (H % 2 == 0 and W % 2 == 0) else "yuv444p"
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return Path(path)


def smooth_frames(F: int, H: int, W: int, seed: int = 0) -> np.ndarray:
    """A smooth colourful moving pattern uint8 [F, H, W, 3]; frame i is told apart by its phase."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 3)
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    out = np.empty((F, H, W, 3), np.uint8)
    for i in range(F):
        for c in range(3):
            v = np.sin(np.pi * (x / W + (c + 1) * y / (2 * H)) + phase[c] + 0.6 * i)  # under a cycle a frame
            out[i, :, :, c] = np.clip(128 + 100 * v, 0, 255)
    return out
