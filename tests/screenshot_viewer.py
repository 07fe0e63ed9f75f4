"""Renders a viewer.html in headless Chromium and writes a PNG (a helper for looking at the page, not a test).

    python tests/screenshot_viewer.py [OUT/viewer.html] --png viewer.png [--at "view=2&time=5"]

With no viewer.html given, one is written for a synthetic colourful grid (4 views x 6 times of 72x128).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fourreal_rt.io import write_outputs  # noqa: E402


def synthetic_grid(V=4, T=6, H=72, W=128) -> np.ndarray:
    """Colourful grid [V, T, H, W, 3]: hue follows the view, a bright bar moves with time."""
    y, x = np.mgrid[0:H, 0:W]
    grid = np.zeros((V, T, H, W, 3), np.uint8)
    for v in range(V):
        for t in range(T):
            grid[v, t, ..., 0] = (255 * x / W).astype(np.uint8)
            grid[v, t, ..., 1] = (255 * y / H).astype(np.uint8)
            grid[v, t, ..., 2] = 255 * v // max(V - 1, 1)
            bar = (x >= t * W // T) & (x < (t + 1) * W // T)
            grid[v, t][bar] = 255
    return grid


def screenshot(html: Path, png: Path, size=(900, 700), at: str = "") -> Path:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", f"--screenshot={png.resolve()}", f"--window-size={size[0]},{size[1]}",
               "--virtual-time-budget=2000", html.resolve().as_uri() + (f"#{at}" if at else "")]
        subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    return png


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", nargs="?", type=Path, help="viewer.html (default: one made from a synthetic grid)")
    ap.add_argument("--png", type=Path, default=Path("viewer.png"))
    ap.add_argument("--at", default="", help='open at a frame, e.g. "view=2&time=5"')
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        html = args.html or write_outputs(Path(tmp) / "OUT", synthetic_grid(), {"note": "synthetic"}) / "viewer.html"
        print(screenshot(html, args.png, at=args.at))


if __name__ == "__main__":
    main()
