"""Procedural animated 4D scenes with ground truth (paper §3.3, data source 2).

A stand-in for the paper's "Animated Objaverse" renders: small textured worlds of analytic shapes,
rendered by vectorised ray casting in torch (float32, any device) into a 4D grid

    frames[v, t]  = the frame seen from camera v at time t           # [V, T, H, W, 3] in [0, 1]
    depth[v, t]   = its z-depth in camera space (world units)        # [V, T, H, W]
    K             = pinhole intrinsics shared by all cameras          # [3, 3]
    cam_to_world  = one pose per view, the same at every time         # [V, 4, 4]

so row v = 0 is a fixed-view video (camera still, scene moving) and column t = 0 a freeze-time video
(time frozen, camera moving along an arc), as in DESIGN.md §1.

Scene content (all drawn from `numpy.random.default_rng(seed)`, so a seed gives the same scene on every
machine; rendering is a deterministic function of the scene):
- background: the inside of an axis-aligned box room (floor y = 0, walls, ceiling), or an "open" scene
  (a floor plane to the horizon, optionally a back wall, sky on the other faces);
- 1-5 objects: ellipsoids (spheres included) and boxes, intersected analytically; each moves along a
  smooth path, spins, may bounce, and pulses with a non-uniform scale (a deformation);
- a directional light (random direction) plus ambient, Lambert shading, soft analytic shadows cast by
  the objects;
- V cameras on an arc around the scene centre (10°-60° in total, left or right, random elevation,
  sometimes a slight dolly), all looking at the scene centre with a fixed field of view (HFOV_DEG);
- textures: procedural (checkerboards, stripes, fBm value noise, marble, gradients, dots, tiles) and
  crops of the photos bundled inside scikit-image's wheel (PHOTOS; read straight from the installed
  package folder, never through skimage's downloader), colour-jittered, mip-mapped when sampled.

Conventions: world y is up, the floor is y = 0, cameras sit at negative z looking towards +z. Cameras
are OpenCV-style (x right, y down, z forward); pixel (i, j) has its centre at (x, y) = (j + 0.5, i + 0.5)
in K's pixel coordinates. Time t of a T-frame grid is the clip time `t / (T - 1)` in [0, 1]; view v is
the arc position `v / (V - 1)` in [0, 1]; both can be given explicitly (`times=`, `view_pos=`), e.g. to
extend a grid autoregressively.

Seed splits (disjoint; `split_of(seed)` names the split of a seed):
    TRAIN_SEEDS = range(0, 10_000_000)
    VAL_SEEDS   = range(10_000_000, 10_001_000)
    TEST_SEEDS  = range(20_000_000, 20_001_000)
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

TRAIN_SEEDS = range(0, 10_000_000)
VAL_SEEDS = range(10_000_000, 10_001_000)
TEST_SEEDS = range(20_000_000, 20_001_000)


def split_of(seed: int) -> str:
    """'train', 'val' or 'test': the split a scene seed belongs to (ValueError outside all three)."""
    for name, r in (("train", TRAIN_SEEDS), ("val", VAL_SEEDS), ("test", TEST_SEEDS)):
        if seed in r:
            return name
    raise ValueError(f"seed {seed} is in no split")


HFOV_DEG = 60.0       # horizontal field of view of every camera, fixed across scenes
N_ELLIPSOIDS = 3      # object slots 0..2 are ellipsoids (spheres included)
N_BOXES = 3           # object slots 3..5 are boxes
N_SLOTS = N_ELLIPSOIDS + N_BOXES
N_FACES = 6           # room faces: 0 x-lo, 1 x-hi, 2 floor (y-lo), 3 ceiling (y-hi), 4 front (z-lo), 5 back (z-hi)
N_SURFACES = N_FACES + N_SLOTS   # surface id s: faces first, then object slots
TEX_RES = 128         # texture tile size (texels); mip levels TEX_RES, /2, /4, /8
MIP_LEVELS = 4
_EPS = 1e-4

# Photos shipped inside the scikit-image wheel (skimage/data/*); (file, is_gray). Loaded from disk.
PHOTOS = (
    ("astronaut.png", False), ("chelsea.png", False), ("coffee.png", False), ("rocket.jpg", False),
    ("motorcycle_left.png", False), ("ihc.png", False), ("hubble_deep_field.jpg", False),
    ("brick.png", True), ("grass.png", True), ("gravel.png", True), ("camera.png", True),
    ("coins.png", True), ("moon.png", True), ("text.png", True), ("page.png", True),
)


# ----------------------------------------------------------------------------------------------------
# Scene parameters
# ----------------------------------------------------------------------------------------------------

@dataclass
class Scene:
    """All parameters of one animated scene (or of a batch, with a leading [B] on every tensor).

    Times τ are clip times in [0, 1]; frequencies are in cycles per clip, spins in radians per clip.
    """
    seed: torch.Tensor             # [] int64
    room_lo: torch.Tensor          # [3] room box corner (floor at y = 0)
    room_hi: torch.Tensor          # [3]
    surf_lit: torch.Tensor         # [S] 1 = Lambert-lit surface, 0 = emissive (sky)
    uv_scale: torch.Tensor         # [S, 2] texture repeats per world unit (faces) or per unit uv (objects)
    uv_offset: torch.Tensor        # [S, 2]
    texel_density: torch.Tensor    # [S] texels per world unit, for mip-level selection
    textures: torch.Tensor         # [S, 3, R, R] uint8
    obj_active: torch.Tensor       # [K] bool
    obj_pos: torch.Tensor          # [K, 3] base centre (y: base height above the floor's contact height)
    obj_rest: torch.Tensor         # [K] 1 = rests on the floor (centre height follows its half-height)
    obj_path_amp: torch.Tensor     # [K, 2, 3] two sinusoids of the translation path
    obj_path_freq: torch.Tensor    # [K, 2]
    obj_path_phase: torch.Tensor   # [K, 2, 3]
    obj_bounce: torch.Tensor       # [K] hop height, |sin| hops (0 = none)
    obj_bounce_freq: torch.Tensor  # [K]
    obj_bounce_phase: torch.Tensor  # [K]
    obj_rot0: torch.Tensor         # [K, 3, 3] orientation at τ = 0 (local -> world)
    obj_spin_axis: torch.Tensor    # [K, 3] unit
    obj_spin: torch.Tensor         # [K] radians per clip
    obj_scale: torch.Tensor        # [K, 3] semi-axes / half-extents
    obj_pulse_amp: torch.Tensor    # [K, 3] relative scale pulsation per axis
    obj_pulse_freq: torch.Tensor   # [K]
    obj_pulse_phase: torch.Tensor  # [K]
    light_dir: torch.Tensor        # [3] unit, towards the light
    light_color: torch.Tensor      # [3]
    ambient: torch.Tensor          # []
    cam_target: torch.Tensor       # [3] the point every camera looks at
    cam_radius: torch.Tensor       # [] distance of camera 0 to the target
    cam_elev: torch.Tensor         # [] radians
    cam_azim0: torch.Tensor        # [] radians, azimuth of camera 0 (0 = straight in front, at -z)
    cam_arc: torch.Tensor          # [] signed radians swept from view_pos 0 to 1
    cam_dolly: torch.Tensor        # [] relative radius change from view_pos 0 to 1

    def to(self, device) -> "Scene":
        return Scene(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})

    def frozen(self) -> "Scene":
        """The same scene with every object still, held in its τ = 0 state at all times."""
        z = torch.zeros_like
        pulse0 = torch.sin(self.obj_pulse_phase)[..., None]                     # [..., K, 1]
        off = (self.obj_path_amp * torch.sin(self.obj_path_phase)).sum(-2)      # [..., K, 3]
        off[..., 1] += self.obj_bounce * torch.sin(self.obj_bounce_phase).abs()
        return dataclasses.replace(self, obj_pos=self.obj_pos + off, obj_path_amp=z(self.obj_path_amp),
                                   obj_bounce=z(self.obj_bounce), obj_spin=z(self.obj_spin),
                                   obj_scale=self.obj_scale * (1 + self.obj_pulse_amp * pulse0),
                                   obj_pulse_amp=z(self.obj_pulse_amp))

    def still_camera(self) -> "Scene":
        """The same scene with all views at camera 0 (no arc, no dolly)."""
        return dataclasses.replace(self, cam_arc=torch.zeros_like(self.cam_arc),
                                   cam_dolly=torch.zeros_like(self.cam_dolly))


def stack_scenes(scenes: Sequence[Scene]) -> Scene:
    """A batch: every field stacked along a new leading dim [B, ...]."""
    return Scene(**{f.name: torch.stack([getattr(s, f.name) for s in scenes])
                    for f in dataclasses.fields(Scene)})


# ----------------------------------------------------------------------------------------------------
# Textures (CPU, float [3, R, R] in [0, 1])
# ----------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _photos() -> tuple[tuple[torch.Tensor, bool], ...]:
    """The bundled skimage photos as uint8 [3, h, w] (longest side <= 512), read once from the wheel."""
    from PIL import Image
    folder = resources.files("skimage") / "data"
    out = []
    for name, gray in PHOTOS:
        with resources.as_file(folder / name) as p, Image.open(p) as im:
            im = im.convert("RGB")
            if max(im.size) > 512:
                s = 512 / max(im.size)
                im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.BILINEAR)
            out.append((torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous(), gray))
    return tuple(out)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _color(rng, s=(0.15, 0.85), v=(0.3, 0.95)) -> np.ndarray:
    return _hsv(rng.random(), rng.uniform(*s), rng.uniform(*v))


def _palette(rng, n: int) -> np.ndarray:
    """n harmonious-ish colours: a base hue with random offsets and varied value."""
    h0 = rng.random()
    cols = [_hsv((h0 + rng.normal(0, 0.12) + (0.5 if rng.random() < 0.25 else 0.0)) % 1.0,
                 rng.uniform(0.15, 0.85), rng.uniform(0.2, 0.95)) for _ in range(n)]
    return np.stack(cols)


def _grid(R: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = (torch.arange(R, dtype=torch.float32) + 0.5) / R
    return c[None, :].expand(R, R), c[:, None].expand(R, R)   # x [R, R], y [R, R]


def _fbm(rng, R: int, base: int, octaves: int, persistence: float = 0.5) -> torch.Tensor:
    """Multi-octave value noise, [R, R] normalised to [0, 1]."""
    acc = torch.zeros(1, 1, R, R)
    amp, g = 1.0, base
    for _ in range(octaves):
        lattice = torch.from_numpy(rng.random((1, 1, g, g), dtype=np.float32))
        acc += amp * F.interpolate(lattice, size=(R, R), mode="bicubic", align_corners=False)
        amp *= persistence
        g *= 2
    acc = acc[0, 0]
    return (acc - acc.min()) / (acc.max() - acc.min() + 1e-6)


def _ramp(v: torch.Tensor, cols: np.ndarray) -> torch.Tensor:
    """Maps v [R, R] in [0, 1] through the colour ramp cols [n, 3] -> [3, R, R]."""
    c = torch.from_numpy(cols.astype(np.float32))             # [n, 3]
    x = v.clamp(0, 1) * (len(cols) - 1)
    lo = x.floor().long().clamp(max=len(cols) - 2)
    f = (x - lo)[..., None]
    return ((1 - f) * c[lo] + f * c[lo + 1]).permute(2, 0, 1)


def _mix(a: np.ndarray, b: np.ndarray, m: torch.Tensor) -> torch.Tensor:
    ta, tb = (torch.tensor(a, dtype=torch.float32)[:, None, None], torch.tensor(b, dtype=torch.float32)[:, None, None])
    return ta * (1 - m) + tb * m


def _tex_checker(rng, R):
    x, y = _grid(R)
    n = int(rng.choice([2, 4, 8]))
    m = ((x * n).floor() + (y * n).floor()) % 2
    c = _palette(rng, 2)
    if rng.random() < 0.5:
        c[1] = 1.0 - c[0] * rng.uniform(0.3, 1.0)
    img = _mix(c[0], c[1], m)
    return img * (0.85 + 0.15 * _fbm(rng, R, 4, 3))


def _tex_stripes(rng, R):
    x, y = _grid(R)
    n = int(rng.integers(2, 9))
    ang = rng.choice([0.0, 0.5 * np.pi, 0.25 * np.pi, rng.uniform(0, np.pi)])
    s = 0.5 + 0.5 * torch.sin(2 * np.pi * n * (x * np.cos(ang) + y * np.sin(ang)))
    m = torch.sigmoid((s - 0.5) * rng.uniform(3, 40))
    c = _palette(rng, 2)
    return _mix(c[0], c[1], m)


def _tex_noise(rng, R):
    v = _fbm(rng, R, int(rng.choice([2, 4, 8])), int(rng.integers(3, 6)), rng.uniform(0.4, 0.65))
    return _ramp(v, _palette(rng, int(rng.integers(2, 4))))


def _tex_marble(rng, R):
    x, y = _grid(R)
    turb = _fbm(rng, R, 4, 5)
    ang = rng.uniform(0, np.pi)
    f = rng.uniform(2, 6)
    v = 0.5 + 0.5 * torch.sin(2 * np.pi * f * (x * np.cos(ang) + y * np.sin(ang)) + rng.uniform(3, 8) * turb)
    return _ramp(v ** rng.uniform(0.5, 2.0), _palette(rng, 3))


def _tex_gradient(rng, R):
    x, y = _grid(R)
    ang = rng.uniform(0, 2 * np.pi)
    g = (x - 0.5) * np.cos(ang) + (y - 0.5) * np.sin(ang)
    g = (g - g.min()) / (g.max() - g.min())
    g = (g + 0.25 * (_fbm(rng, R, 2, 3) - 0.5)).clamp(0, 1)
    return _ramp(g, _palette(rng, int(rng.integers(2, 4))))


def _tex_dots(rng, R):
    x, y = _grid(R)
    n = int(rng.choice([2, 3, 4, 6]))
    fx, fy = (x * n) % 1.0 - 0.5, (y * n) % 1.0 - 0.5
    r = rng.uniform(0.15, 0.42)
    d = torch.sqrt(fx ** 2 + fy ** 2)
    m = torch.sigmoid((r - d) * 60.0)
    c = _palette(rng, 2)
    bg = _mix(c[0], c[0] * 0.8, _fbm(rng, R, 4, 2))
    return bg * (1 - m) + torch.tensor(c[1], dtype=torch.float32)[:, None, None] * m


def _tex_tiles(rng, R):
    x, y = _grid(R)
    nr = int(rng.choice([2, 4, 8]))
    nc = nr if rng.random() < 0.5 else nr // 2 if nr > 2 else nr
    row = (y * nr).floor()
    xs = x * nc + (0.5 * (row % 2) if rng.random() < 0.5 else 0.0)     # brick offset
    col = xs.floor()
    fx, fy = xs - col, y * nr - row
    w = rng.uniform(0.03, 0.08)
    edge = torch.minimum(torch.minimum(fx, 1 - fx) * nr / nc, torch.minimum(fy, 1 - fy))   # in row heights
    grout = torch.sigmoid((edge - w) * 150.0)
    c = _palette(rng, 2)
    cell = (row * 7.3 + col * 3.1) % 1.0                              # per-tile variation
    jitter = torch.from_numpy(rng.uniform(0.75, 1.15, 64).astype(np.float32))[((row * 13 + col * 5) % 64).long()]
    base = _mix(c[0], c[0] * rng.uniform(0.7, 1.2), cell) * jitter
    base = base * (0.85 + 0.15 * _fbm(rng, R, 8, 3))
    grout_col = torch.tensor(_color(rng, s=(0.0, 0.2), v=(0.2, 0.9)), dtype=torch.float32)[:, None, None]
    return base * grout + grout_col * (1 - grout)


def _tex_photo(rng, R):
    photos = _photos()
    img, gray = photos[int(rng.integers(len(photos)))]
    _, h, w = img.shape
    c = int(min(h, w) * rng.uniform(0.3, 1.0))
    y0, x0 = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
    crop = img[:, y0:y0 + c, x0:x0 + c].float()[None] / 255.0
    tex = F.interpolate(crop, size=(R, R), mode="bilinear", antialias=True, align_corners=False)[0]
    if rng.random() < 0.5:
        tex = tex.flip(-1)
    if gray:                                   # colourise: a dark->light colour ramp
        cols = _palette(rng, 2)
        cols = cols[np.argsort(cols.sum(1))]
        cols[1] = np.clip(cols[1] * 1.3 + 0.15, 0, 1)
        tex = _ramp(tex[0], cols) * 0.6 + tex * 0.4
    else:                                      # hue rotation about the grey axis + saturation
        th = rng.uniform(-np.pi, np.pi) if rng.random() < 0.3 else rng.normal(0, 0.25)
        k = np.ones(3) / np.sqrt(3)
        Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        M = np.eye(3) + np.sin(th) * Kx + (1 - np.cos(th)) * Kx @ Kx
        tex = torch.einsum("ij,jhw->ihw", torch.from_numpy(M.astype(np.float32)), tex)
        g = tex.mean(0, keepdim=True)
        tex = g + (tex - g) * rng.uniform(0.6, 1.3)
    tex = (tex - 0.5) * rng.uniform(0.8, 1.2) + 0.5
    return tex * rng.uniform(0.8, 1.15)


def _tex_sky(rng, R):
    """Vertical gradient: horizon colour at v = 0, zenith at v = 1, with faint clouds."""
    x, y = _grid(R)
    horizon = _hsv(rng.uniform(0.05, 0.65), rng.uniform(0.05, 0.35), rng.uniform(0.75, 1.0))
    zenith = _hsv(rng.uniform(0.52, 0.66), rng.uniform(0.35, 0.8), rng.uniform(0.55, 0.95))
    g = y ** 0.5
    sky = _mix(horizon, zenith, g)
    clouds = (_fbm(rng, R, 4, 5) - rng.uniform(0.45, 0.7)).clamp(min=0) * 2.5 * (y > 0.05).float()
    return sky * (1 - clouds.clamp(max=1)) + clouds.clamp(max=1)


_PROCEDURAL = (_tex_checker, _tex_stripes, _tex_noise, _tex_marble, _tex_gradient, _tex_dots, _tex_tiles)


def _texture(rng, R: int, kind: str) -> torch.Tensor:
    if kind == "photo":
        t = _tex_photo(rng, R)
    elif kind == "sky":
        t = _tex_sky(rng, R)
    else:
        t = _PROCEDURAL[int(rng.integers(len(_PROCEDURAL)))](rng, R)
    return (t.clamp(0, 1) * 255).round().to(torch.uint8)


# ----------------------------------------------------------------------------------------------------
# Sampling scenes
# ----------------------------------------------------------------------------------------------------

def _rot_matrix(axis: np.ndarray, ang: float) -> np.ndarray:
    a = axis / np.linalg.norm(axis)
    Kx = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(ang) * Kx + (1 - np.cos(ang)) * Kx @ Kx


def _unit(rng) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


@dataclass
class SceneSampler:
    """Draws a Scene from a seed. The fields are the ranges of the random parameters."""
    n_objects: tuple[int, int] = (1, 5)                 # inclusive
    arc_deg: tuple[float, float] = (10.0, 60.0)         # total camera arc over the V views
    max_azimuth_deg: float = 40.0                       # |azimuth| of every camera stays below this
    elev_deg: tuple[float, float] = (6.0, 32.0)
    radius: tuple[float, float] = (5.0, 7.0)
    dolly: tuple[float, float] = (-0.15, 0.15)          # relative radius change, used half of the time
    p_open: float = 0.35                                # open scene (floor + sky) instead of a room
    p_photo: float = 0.3                                # chance that a surface gets a photo texture
    tex_res: int = TEX_RES

    def __call__(self, seed: int) -> Scene:
        rng = np.random.default_rng(int(seed))
        R, K = self.tex_res, N_SLOTS
        f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731

        # cameras
        arc = math.radians(rng.uniform(*self.arc_deg)) * (1 if rng.random() < 0.5 else -1)
        amax = math.radians(self.max_azimuth_deg)
        a0 = rng.uniform(-amax + max(0.0, -arc), amax - max(0.0, arc))
        radius = rng.uniform(*self.radius)
        dolly = rng.uniform(*self.dolly) if rng.random() < 0.5 else 0.0
        elev = math.radians(rng.uniform(*self.elev_deg))

        # room
        open_scene = rng.random() < self.p_open
        if open_scene:
            back = rng.uniform(5.0, 12.0) if rng.random() < 0.5 else 80.0
            lo, hi = np.array([-80.0, 0.0, -80.0]), np.array([80.0, 40.0, back])
        else:
            lo = np.array([-rng.uniform(6.0, 9.0), 0.0, -12.0])
            hi = np.array([rng.uniform(6.0, 9.0), rng.uniform(6.0, 9.0), rng.uniform(3.0, 7.0)])
        S = N_SURFACES
        surf_lit = np.ones(S)
        uv_scale = np.ones((S, 2))
        uv_offset = rng.uniform(0, 1, (S, 2))
        density = np.ones(S)
        textures = torch.zeros(S, 3, R, R, dtype=torch.uint8)

        def face_tex(kind_photo_p):
            return _texture(rng, R, "photo" if rng.random() < kind_photo_p else "proc")

        same_walls = rng.random() < 0.5
        wall_tex, wall_tile = face_tex(self.p_photo), None
        for f in range(N_FACES):
            is_sky = open_scene and (f in (0, 1, 3, 4) or (f == 5 and hi[2] > 50))
            if is_sky:
                surf_lit[f] = 0.0
                textures[f] = _texture(rng, R, "sky") if f == 0 else textures[0]
                uv_scale[f] = (0.02, 1.0 / hi[1])              # v = height / sky height
                uv_offset[f] = (0.0, 0.0)
                density[f] = R / hi[1]
                continue
            photo = rng.random() < self.p_photo
            tile = rng.uniform(3.0, 7.0) if photo else rng.uniform(1.0, 4.0)
            if f in (0, 1, 3, 4, 5) and same_walls and not open_scene:
                if wall_tile is None:
                    wall_tile = tile
                textures[f], tile = wall_tex, wall_tile
            else:
                textures[f] = _texture(rng, R, "photo" if photo else "proc")
            uv_scale[f] = 1.0 / tile
            density[f] = R / tile

        # objects
        n = int(rng.integers(self.n_objects[0], self.n_objects[1] + 1))
        kinds = rng.permutation([0] * N_ELLIPSOIDS + [1] * N_BOXES)[:n]      # 0 ellipsoid, 1 box
        slots, ne, nb = [], 0, 0
        for k in kinds:
            slots.append(ne if k == 0 else N_ELLIPSOIDS + nb)
            ne, nb = ne + (k == 0), nb + (k == 1)
        active = np.zeros(K, bool)
        pos = np.zeros((K, 3))
        rest = np.zeros(K)
        path_amp = np.zeros((K, 2, 3))
        path_freq = np.ones((K, 2))
        path_phase = rng.uniform(0, 2 * np.pi, (K, 2, 3))
        bounce = np.zeros(K)
        bounce_freq = rng.uniform(0.5, 1.5, K)
        bounce_phase = rng.uniform(0, np.pi, K)
        rot0 = np.tile(np.eye(3), (K, 1, 1))
        spin_axis = np.tile(np.array([0.0, 1.0, 0.0]), (K, 1))
        spin = np.zeros(K)
        scale = np.full((K, 3), 0.5)
        pulse_amp = np.zeros((K, 3))
        pulse_freq = rng.uniform(0.5, 2.0, K)
        pulse_phase = rng.uniform(0, 2 * np.pi, K)
        placed: list[tuple[np.ndarray, float]] = []
        for slot in slots:
            box = slot >= N_ELLIPSOIDS
            active[slot] = True
            r = rng.uniform(0.25, 0.65) if box else rng.uniform(0.3, 0.8)
            s = np.full(3, r) if (not box and rng.random() < 0.4) else r * rng.uniform(0.6, 1.4, 3)
            scale[slot] = s
            if rng.random() < 0.6:
                pulse_amp[slot] = rng.uniform(0.0, 0.25, 3) * (rng.random(3) < 0.7)
            smax = s * (1 + pulse_amp[slot])
            resting = rng.random() < 0.65
            rbound = float(np.linalg.norm(smax) if box else smax.max())
            for _ in range(30):                                # spread the objects out
                p = np.array([rng.uniform(-1.8, 1.8), 0.0, rng.uniform(-1.2, 1.8)])
                if all(np.linalg.norm((p - q)[[0, 2]]) > 0.8 * (rbound + rq) for q, rq in placed):
                    break
            placed.append((p, rbound))
            amp = rng.uniform(0.1, 0.6, (2, 3)) * (rng.random((2, 1)) < 0.85)
            path_freq[slot] = rng.uniform(0.2, 0.8, 2)
            spin[slot] = rng.uniform(0.3, 2.5) * rng.choice([-1, 1]) * (rng.random() < 0.8)
            if resting:
                rest[slot] = 1.0
                amp[:, 1] = 0.0
                rot0[slot] = _rot_matrix(np.array([0.0, 1.0, 0.0]), rng.uniform(0, 2 * np.pi))
                if not box and rng.random() < 0.35:
                    bounce[slot] = rng.uniform(0.3, 1.0)
            else:
                amp[:, 1] *= 0.3
                p[1] = rbound + rng.uniform(0.1, 0.9) + np.abs(amp[:, 1]).sum()
                rot0[slot] = _rot_matrix(_unit(rng), rng.uniform(0, 2 * np.pi))
                spin_axis[slot] = _unit(rng)
            pos[slot], path_amp[slot] = p, amp
            textures[N_FACES + slot] = _texture(rng, R, "photo" if rng.random() < self.p_photo else "proc")
            if box:
                rep = float(rng.choice([1, 2]))
                uv_scale[N_FACES + slot] = (rep, rep)
                density[N_FACES + slot] = R * rep / (2 * s.mean())
            else:
                ru, rv = float(rng.choice([2, 4])), float(rng.choice([1, 2]))
                uv_scale[N_FACES + slot] = (ru, rv)
                density[N_FACES + slot] = R * ru / (2 * np.pi * s.mean())

        # the cameras look at the objects' centroid (jittered), so the objects stay in frame
        cen = (pos + rest[:, None] * scale * np.array([0.0, 1.0, 0.0]))[active].mean(0)
        target = np.array([np.clip(cen[0] + rng.uniform(-0.3, 0.3), -0.8, 0.8),
                           np.clip(cen[1] + rng.uniform(-0.1, 0.3), 0.3, 1.2),
                           np.clip(cen[2] + rng.uniform(-0.3, 0.3), -0.5, 1.0)])
        if not open_scene:   # keep every camera inside the room, 1 unit away from the side walls
            az = a0 + arc * np.linspace(0, 1, 9)
            cam_x = target[0] + radius * (1 + dolly * np.linspace(0, 1, 9)) * np.sin(az) * np.cos(elev)
            lo[0], hi[0] = min(lo[0], cam_x.min() - 1.0), max(hi[0], cam_x.max() + 1.0)

        # light: from above, from the cameras' side of the room
        el, az = math.radians(rng.uniform(25, 70)), math.radians(rng.uniform(-80, 80))
        light = np.array([math.sin(az) * math.cos(el), math.sin(el), -math.cos(az) * math.cos(el)])
        light_color = 1.0 + rng.uniform(-0.08, 0.08, 3)

        return Scene(
            seed=torch.tensor(int(seed), dtype=torch.int64),
            room_lo=f32(lo), room_hi=f32(hi), surf_lit=f32(surf_lit), uv_scale=f32(uv_scale),
            uv_offset=f32(uv_offset), texel_density=f32(density), textures=textures,
            obj_active=torch.from_numpy(active), obj_pos=f32(pos), obj_rest=f32(rest),
            obj_path_amp=f32(path_amp), obj_path_freq=f32(path_freq), obj_path_phase=f32(path_phase),
            obj_bounce=f32(bounce), obj_bounce_freq=f32(bounce_freq), obj_bounce_phase=f32(bounce_phase),
            obj_rot0=f32(rot0), obj_spin_axis=f32(spin_axis), obj_spin=f32(spin), obj_scale=f32(scale),
            obj_pulse_amp=f32(pulse_amp), obj_pulse_freq=f32(pulse_freq), obj_pulse_phase=f32(pulse_phase),
            light_dir=f32(light), light_color=f32(light_color), ambient=f32(rng.uniform(0.25, 0.5)),
            cam_target=f32(target), cam_radius=f32(radius), cam_elev=f32(elev), cam_azim0=f32(a0),
            cam_arc=f32(arc), cam_dolly=f32(dolly),
        )


_DEFAULT_SAMPLER = SceneSampler()


def sample_scene(seed: int) -> Scene:
    """The scene of a seed under the default SceneSampler (deterministic, CPU tensors)."""
    return _DEFAULT_SAMPLER(seed)


# ----------------------------------------------------------------------------------------------------
# Cameras and object poses
# ----------------------------------------------------------------------------------------------------

def intrinsics(H: int, W: int, device=None) -> torch.Tensor:
    """Pinhole K [3, 3] for an H x W image at HFOV_DEG (pixel centres at integer + 0.5)."""
    f = (W / 2) / math.tan(math.radians(HFOV_DEG) / 2)
    return torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], dtype=torch.float32, device=device)


def _default_pos(n: int, device) -> torch.Tensor:
    return torch.linspace(0, 1, n, device=device) if n > 1 else torch.zeros(1, device=device)


def camera_poses(scene: Scene, view_pos: torch.Tensor) -> torch.Tensor:
    """cam_to_world [B, V, 4, 4] (OpenCV axes) of a batched scene at arc positions view_pos [V] in [0, 1]."""
    s = view_pos[None, :]                                                      # [1, V]
    az = scene.cam_azim0[:, None] + scene.cam_arc[:, None] * s                 # [B, V]
    r = scene.cam_radius[:, None] * (1 + scene.cam_dolly[:, None] * s)         # [B, V]
    el = scene.cam_elev[:, None].expand_as(az)
    pos = scene.cam_target[:, None, :] + r[..., None] * torch.stack(
        [torch.sin(az) * torch.cos(el), torch.sin(el), -torch.cos(az) * torch.cos(el)], -1)   # [B, V, 3]
    fwd = F.normalize(scene.cam_target[:, None, :] - pos, dim=-1)
    up = torch.tensor([0.0, 1.0, 0.0], device=pos.device).expand_as(fwd)
    right = F.normalize(torch.linalg.cross(fwd, up), dim=-1)
    down = torch.linalg.cross(fwd, right)
    c2w = torch.zeros(*pos.shape[:2], 4, 4, device=pos.device)
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = right, down, fwd, pos
    c2w[..., 3, 3] = 1.0
    return c2w


def _axis_angle(axis: torch.Tensor, ang: torch.Tensor) -> torch.Tensor:
    """Rodrigues: axis [..., 3] unit, ang [...] -> [..., 3, 3]."""
    x, y, z = axis.unbind(-1)
    o = torch.zeros_like(x)
    Kx = torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*x.shape, 3, 3)
    s, c = torch.sin(ang)[..., None, None], torch.cos(ang)[..., None, None]
    return torch.eye(3, device=axis.device) + s * Kx + (1 - c) * (Kx @ Kx)


def object_poses(scene: Scene, times: torch.Tensor):
    """Object centre [B, T, K, 3], rotation (local -> world) [B, T, K, 3, 3], semi-axes [B, T, K, 3]."""
    tau = times[None, :, None]                                                  # [1, T, 1]
    two_pi = 2 * math.pi
    pulse = torch.sin(two_pi * scene.obj_pulse_freq[:, None] * tau + scene.obj_pulse_phase[:, None])  # [B, T, K]
    scale = scene.obj_scale[:, None] * (1 + scene.obj_pulse_amp[:, None] * pulse[..., None])          # [B, T, K, 3]
    arg = (two_pi * scene.obj_path_freq[:, None, :, :, None] * tau[..., None, None]
           + scene.obj_path_phase[:, None])                                     # [B, T, K, 2, 3]
    centre = scene.obj_pos[:, None] + (scene.obj_path_amp[:, None] * torch.sin(arg)).sum(-2)   # [B, T, K, 3]
    hop = scene.obj_bounce[:, None] * torch.sin(
        math.pi * scene.obj_bounce_freq[:, None] * tau + scene.obj_bounce_phase[:, None]).abs()  # [B, T, K]
    lift = hop + scene.obj_rest[:, None] * scale[..., 1]
    centre = centre + F.pad(lift[..., None], (1, 1))                           # add to y only
    spin = _axis_angle(scene.obj_spin_axis[:, None].expand(*scale.shape),
                       scene.obj_spin[:, None] * tau)                          # [B, T, K, 3, 3]
    rot = spin @ scene.obj_rot0[:, None]
    return centre, rot, scale


# ----------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------

def _smoothstep(e0: float, e1: float, x: torch.Tensor) -> torch.Tensor:
    u = ((x - e0) / (e1 - e0)).clamp(0, 1)
    return u * u * (3 - 2 * u)


def _mip_atlas(textures: torch.Tensor) -> torch.Tensor:
    """textures uint8 [B, S, 3, R, R] -> packed mip atlas float [B, 3, S*R, 2R] (level l at x = 2R - 2R/2^l)."""
    B, S, _, R, _ = textures.shape
    lvl = textures.float().div_(255.0).reshape(B * S, 3, R, R)
    atlas = torch.zeros(B * S, 3, R, 2 * R, device=textures.device)
    x = 0
    for _ in range(MIP_LEVELS):
        n = lvl.shape[-1]
        atlas[:, :, :n, x:x + n] = lvl
        x += n
        lvl = F.avg_pool2d(lvl, 2)
    return atlas.reshape(B, S, 3, R, 2 * R).permute(0, 2, 1, 3, 4).reshape(B, 3, S * R, 2 * R)


def _sample_atlas(atlas, sid, u, v, lod, R):
    """Trilinear-mip sample: sid/u/v/lod [B, N] (u, v in [0, 1]) -> colour [B, N, 3]."""
    B, _, AH, AW = atlas.shape
    lod = lod.clamp(0, MIP_LEVELS - 1)
    l0 = lod.floor().clamp(max=MIP_LEVELS - 2)
    frac = (lod - l0)[..., None]                                              # [B, N, 1]
    grids = []
    for lv in (l0, l0 + 1):
        n = R * torch.exp2(-lv)                                               # texels of this level
        x0 = 2 * R - 2 * n
        X = x0 + (u * n).clamp(min=0.5).minimum(n - 0.5)
        Y = sid * R + (v * n).clamp(min=0.5).minimum(n - 0.5)
        grids.append(torch.stack([2 * X / AW - 1, 2 * Y / AH - 1], -1))      # [B, N, 2]
    g = torch.stack(grids, 1)                                                 # [B, 2, N, 2]
    col = F.grid_sample(atlas, g, mode="bilinear", padding_mode="border", align_corners=False)  # [B, 3, 2, N]
    col = col.permute(0, 2, 3, 1)                                             # [B, 2, N, 3]
    return col[:, 0] * (1 - frac) + col[:, 1] * frac


def _mirror(x: torch.Tensor) -> torch.Tensor:
    return 1 - (1 - torch.remainder(x, 2.0)).abs()


def _render(sc: Scene, view_pos, times, H, W, antialias=True, texture_lod_bias=-0.5):
    """Batched scene on its device -> frames [B, V, T, H, W, 3], depth [B, V, T, H, W], c2w [B, V, 4, 4]."""
    dev = sc.room_lo.device
    B, V, T = sc.room_lo.shape[0], view_pos.shape[0], times.shape[0]
    NF = N_FACES
    # only the slots some scene of the batch uses: ellipsoid slots 0..KE-1, box slots N_ELLIPSOIDS..+KB-1
    n_used = torch.stack([sc.obj_active[:, :N_ELLIPSOIDS].sum(1), sc.obj_active[:, N_ELLIPSOIDS:].sum(1)])
    KE, KB = (int(x) for x in n_used.max(1).values.tolist())
    K = KE + KB
    slot_ids = torch.tensor(list(range(KE)) + list(range(N_ELLIPSOIDS, N_ELLIPSOIDS + KB)), device=dev)  # [K]
    R = sc.textures.shape[-1]
    Kmat = intrinsics(H, W, dev)
    fx, cx, cy = Kmat[0, 0], Kmat[0, 2], Kmat[1, 2]

    # pixel rays: centres (H x W) then, for antialiasing, corners ((H+1) x (W+1)) -> quincunx filter
    ii, jj = torch.meshgrid(torch.arange(H, device=dev) + 0.5, torch.arange(W, device=dev) + 0.5, indexing="ij")
    pts = [torch.stack([jj.reshape(-1), ii.reshape(-1)], -1)]
    if antialias:
        ci, cj = torch.meshgrid(torch.arange(H + 1, device=dev, dtype=torch.float32),
                                torch.arange(W + 1, device=dev, dtype=torch.float32), indexing="ij")
        pts.append(torch.stack([cj.reshape(-1), ci.reshape(-1)], -1))
    pts = torch.cat(pts)                                                       # [P, 2]
    P = pts.shape[0]
    dcam = torch.stack([(pts[:, 0] - cx) / fx, (pts[:, 1] - cy) / fx, torch.ones_like(pts[:, 0])], -1)  # [P, 3], z = 1

    c2w = camera_poses(sc, view_pos)                                           # [B, V, 4, 4]
    rc, org = c2w[..., :3, :3], c2w[..., :3, 3]                                # [B, V, 3, 3], [B, V, 3]
    d = torch.einsum("bvij,pj->bvpi", rc, dcam)                                # [B, V, P, 3]; t along d = z-depth
    d = torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)

    # background: exit point of the room box
    tb = torch.where(d > 0, sc.room_hi[:, None, None] - org[:, :, None], sc.room_lo[:, None, None] - org[:, :, None]) / d
    t_bg, axis = tb.min(-1)                                                    # [B, V, P]
    face = 2 * axis + (d.gather(-1, axis[..., None])[..., 0] > 0).long()       # [B, V, P]

    # objects: rays in each object's unit frame (unit sphere / cube)
    centre, rot, scale = object_poses(sc, times)                               # [B, T, K, 3], [B, T, K, 3, 3], [B, T, K, 3]
    centre, rot, scale = centre[:, :, slot_ids], rot[:, :, slot_ids], scale[:, :, slot_ids]
    A = rot.transpose(-1, -2) / scale[..., None]                               # [B, T, K, 3, 3] world -> unit
    o_l = torch.einsum("btkij,bvtkj->btkvi", A, org[:, :, None, None] - centre[:, None])  # [B, T, K, V, 3]
    d3 = d.permute(0, 3, 1, 2).reshape(B, 1, 3, V * P)                         # [B, 1, 3, V*P]

    def local_dirs(Ag):                                                        # Ag [B, T, k, 3, 3]
        k = Ag.shape[2]
        Ar = Ag.permute(0, 3, 1, 2, 4).reshape(B, 3 * T * k, 3)                # rows (i, t, k)
        out = (Ar @ d3[:, 0]).reshape(B, 3, T, k, V, P)                        # [B, 3, T, k, V, P]
        return out.unbind(1)

    active = sc.obj_active[:, None, slot_ids, None, None]                     # [B, 1, K, 1, 1]
    inf = torch.tensor(float("inf"), device=dev)
    # ellipsoids: |o + t d| = 1
    dx, dy, dz = local_dirs(A[:, :, :KE])                                      # each [B, T, KE, V, P]
    ox, oy, oz = (o_l[:, :, :KE, :, None, i] for i in range(3))               # each [B, T, KE, V, 1]
    a = dx * dx + dy * dy + dz * dz
    b = ox * dx + oy * dy + oz * dz
    c = ox * ox + oy * oy + oz * oz - 1
    disc = b * b - a * c
    t_e = (-b - disc.clamp(min=0).sqrt()) / a
    t_e = torch.where((disc > 0) & (t_e > _EPS) & active[:, :, :KE], t_e, inf)
    del a, b, c, disc, dx, dy, dz
    # boxes: slab test against [-1, 1]^3
    tn = tf = None
    for i, di in enumerate(local_dirs(A[:, :, KE:])):                          # [B, T, KB, V, P]
        oi = o_l[:, :, KE:, :, None, i]
        inv = 1.0 / di
        t1, t2 = (-1 - oi) * inv, (1 - oi) * inv
        lo_, hi_ = torch.minimum(t1, t2), torch.maximum(t1, t2)
        tn = lo_ if tn is None else torch.maximum(tn, lo_)
        tf = hi_ if tf is None else torch.minimum(tf, hi_)
    t_b = torch.where((tn < tf) & (tn > _EPS) & active[:, :, KE:], tn, inf)
    del tn, tf, t1, t2, lo_, hi_
    t_obj, k_hit = torch.cat([t_e, t_b], 2).min(2)                             # [B, T, V, P]
    del t_e, t_b

    is_obj = t_obj < t_bg[:, None]                                             # [B, T, V, P]
    depth = torch.where(is_obj, t_obj, t_bg[:, None])                          # [B, T, V, P]
    p_w = org[:, None, :, None] + depth[..., None] * d[:, None]                # [B, T, V, P, 3]

    # object hit: local point, normal, uv
    bi = torch.arange(B, device=dev)[:, None, None, None]
    ti = torch.arange(T, device=dev)[None, :, None, None]
    A_hit = A[bi, ti, k_hit]                                                   # [B, T, V, P, 3, 3]
    p_l = (A_hit @ (p_w - centre[bi, ti, k_hit])[..., None])[..., 0]           # [B, T, V, P, 3]
    is_box = k_hit >= KE
    lx, ly, lz = p_l.unbind(-1)
    uv_e = torch.stack([torch.atan2(lz, lx) / (2 * math.pi) + 0.5,
                        torch.acos(ly.clamp(-1, 1)) / math.pi], -1)           # [B, T, V, P, 2]
    bax = p_l.abs().argmax(-1, keepdim=True)                                   # [B, T, V, P, 1]
    n_box = F.one_hot(bax[..., 0], 3).float() * p_l.gather(-1, bax).sign()
    uv_pairs = torch.tensor([[2, 1], [0, 2], [0, 1]], device=dev)              # face axis -> (u, v) axes
    uv_b = (p_l.gather(-1, uv_pairs[bax[..., 0]]) + 1) * 0.5 + 0.37 * bax      # offset so faces differ
    n_loc = torch.where(is_box[..., None], n_box, p_l)
    n_obj = F.normalize((A_hit.transpose(-1, -2) @ n_loc[..., None])[..., 0], dim=-1)   # (R S^-1) n
    uv_obj = torch.where(is_box[..., None], uv_b, uv_e)

    # background hit: inward normal, uv from world coords
    n_bg = -F.one_hot(axis, 3).float() * d.gather(-1, axis[..., None]).sign()  # [B, V, P, 3]
    uv_bg = p_w.gather(-1, uv_pairs[axis][:, None].expand(B, T, V, P, 2))      # [B, T, V, P, 2]

    sid = torch.where(is_obj, NF + slot_ids[k_hit], face[:, None])                       # [B, T, V, P]
    normal = torch.where(is_obj[..., None], n_obj, n_bg[:, None])              # [B, T, V, P, 3]
    uv = torch.where(is_obj[..., None], uv_obj, uv_bg)
    flat = lambda x: x.reshape(B, -1)                                          # noqa: E731  [B, T*V*P]
    sidf = flat(sid)
    uv = uv.reshape(B, -1, 2) * sc.uv_scale.gather(1, sidf[..., None].expand(-1, -1, 2)) \
        + sc.uv_offset.gather(1, sidf[..., None].expand(-1, -1, 2))            # [B, N, 2]
    uv = _mirror(uv)

    # mip level: texels covered by one pixel (isotropic compromise for grazing angles)
    dlen = d.norm(dim=-1)                                                      # [B, V, P]
    cos = ((normal * d[:, None]).sum(-1).abs() / dlen[:, None]).clamp(min=0.02)  # [B, T, V, P]
    foot = depth * dlen[:, None] / fx / cos.sqrt()
    lod = torch.log2(flat(foot) * sc.texel_density.gather(1, sidf) + 1e-8) + texture_lod_bias
    albedo = _sample_atlas(_mip_atlas(sc.textures), sidf.float(), uv[..., 0], uv[..., 1], lod, R)  # [B, N, 3]

    # soft shadows from the objects along the light direction, in each object's unit frame
    L = sc.light_dir                                                           # [B, 3]
    p_s = F.pad(p_w.permute(0, 1, 4, 2, 3), (0, 0, 0, 0, 0, 1), value=1.0).reshape(B, T, 4, V * P)  # [B, T, 4, V*P]
    d_s = torch.einsum("btkij,bj->btki", A, L)                                 # [B, T, K, 3]
    Ac = torch.einsum("btkij,btkj->btki", A, centre)                           # [B, T, K, 3]
    A_h = torch.cat([A, -Ac[..., None]], -1)                                   # [B, T, K, 3, 4]: x -> A (x - c)
    o_s = (A_h.permute(0, 1, 3, 2, 4).reshape(B, T, 3 * K, 4) @ p_s).reshape(B, T, 3, K, V, P)  # [B, T, 3, K, V, P]
    sx, sy, sz = o_s[:, :, :, :KE].unbind(2)                                   # [B, T, KE, V, P]
    de = d_s[:, :, :KE, :, None, None]                                         # [B, T, KE, 3, 1, 1]
    a = (de * de).sum(3)                                                       # [B, T, KE, 1, 1]
    b = sx * de[:, :, :, 0] + sy * de[:, :, :, 1] + sz * de[:, :, :, 2]
    c = sx * sx + sy * sy + sz * sz - 1
    m = torch.where(b < 0, c - b * b / a, c)                                   # closest approach (unit frame) - 1
    sh_e = _smoothstep(-0.25, 0.35, m)                                         # [B, T, KE, V, P]
    tn = tf = None
    for i in range(3):
        oi = o_s[:, :, i, KE:]                                                 # [B, T, KB, V, P]
        inv = (1.0 / torch.where(d_s[:, :, KE:, i].abs() < 1e-9, 1e-9, d_s[:, :, KE:, i]))[..., None, None]
        t1, t2 = (-1 - oi) * inv, (1 - oi) * inv
        lo_, hi_ = torch.minimum(t1, t2), torch.maximum(t1, t2)
        tn = lo_ if tn is None else torch.maximum(tn, lo_)
        tf = hi_ if tf is None else torch.minimum(tf, hi_)
    overlap = (tf - tn.clamp(min=0)) * d_s[:, :, KE:].norm(dim=-1)[..., None, None]   # chord length, unit frame
    sh_b = 1 - _smoothstep(0.0, 0.35, overlap)
    sh = torch.cat([sh_e, sh_b], 2)                                            # [B, T, K, V, P]
    own = sid[:, :, None] == (NF + slot_ids)[None, None, :, None, None]
    sh = torch.where(own | ~active, torch.ones_like(sh), sh).prod(2)           # [B, T, V, P]
    del o_s, sx, sy, sz, b, c, m, sh_e, tn, tf, t1, t2, lo_, hi_, overlap, own

    lam = (normal * L[:, None, None, None]).sum(-1).clamp(min=0)               # [B, T, V, P]
    amb = sc.ambient[:, None, None, None] * (0.85 + 0.15 * normal[..., 1])
    light = amb + (1 - sc.ambient[:, None, None, None]) * lam * sh             # [B, T, V, P]
    light = light[..., None] * sc.light_color[:, None, None, None]             # [B, T, V, P, 3]
    lit = sc.surf_lit.gather(1, sidf).reshape(B, T, V, P, 1)
    col = albedo.reshape(B, T, V, P, 3) * (lit * light + (1 - lit))            # [B, T, V, P, 3]

    n0 = H * W
    frames = col[..., :n0, :].reshape(B, T, V, H, W, 3)
    if antialias:
        cor = col[..., n0:, :].reshape(B, T, V, H + 1, W + 1, 3)
        frames = 0.5 * frames + 0.125 * (cor[..., :-1, :-1, :] + cor[..., :-1, 1:, :]
                                         + cor[..., 1:, :-1, :] + cor[..., 1:, 1:, :])
    frames = frames.clamp(0, 1).permute(0, 2, 1, 3, 4, 5).contiguous()         # [B, V, T, H, W, 3]
    dep = depth[..., :n0].reshape(B, T, V, H, W).permute(0, 2, 1, 3, 4).contiguous()   # [B, V, T, H, W]
    return frames, dep, c2w


def render_batch(scenes: Iterable[int] | Iterable[Scene] | Scene, V: int = 8, T: int = 8, H: int = 72,
                 W: int = 128, device="cpu", *, view_pos: torch.Tensor | None = None,
                 times: torch.Tensor | None = None, antialias: bool = True,
                 max_rays: int | None = None) -> dict:
    """Renders a batch of scenes (seeds, Scenes, or one stacked Scene).

    Returns frames float [B, V, T, H, W, 3] in [0, 1], depth float [B, V, T, H, W] (camera z),
    K [3, 3], cam_to_world [B, V, 4, 4]. Scenes are rendered max_rays camera-rays x frames at a time
    (chunks of whole scenes) to bound memory; the default is 2M on CPU and 24M (about 20 scenes of
    8x8x72x128) on CUDA.
    """
    if isinstance(scenes, Scene):
        batch = scenes
    else:
        scenes = [sample_scene(s) if not isinstance(s, Scene) else s for s in scenes]
        batch = stack_scenes(scenes)
    batch = batch.to(device)
    view_pos = _default_pos(V, device) if view_pos is None else view_pos.to(device, torch.float32)
    times = _default_pos(T, device) if times is None else times.to(device, torch.float32)
    V, T = view_pos.shape[0], times.shape[0]
    B = batch.room_lo.shape[0]
    per_scene = V * T * (H * W + ((H + 1) * (W + 1) if antialias else 0))
    if max_rays is None:   # bounds peak memory: ~1 KB a ray on CPU in the worst case (5 slots used)
        max_rays = 24_000_000 if torch.device(device).type == "cuda" else 2_000_000
    chunk = max(1, max_rays // per_scene)                                      # whole scenes a call
    tc = T if chunk > 1 else max(1, min(T, max_rays * T // per_scene))         # else frames a call
    outs = []
    for s in range(0, B, chunk):
        part = Scene(**{f.name: getattr(batch, f.name)[s:s + chunk] for f in dataclasses.fields(Scene)})
        pieces = [_render(part, view_pos, times[i:i + tc], H, W, antialias) for i in range(0, T, tc)]
        outs.append((torch.cat([p[0] for p in pieces], 2), torch.cat([p[1] for p in pieces], 2), pieces[0][2]))
    frames, depth, c2w = (torch.cat(x) for x in zip(*outs))
    return dict(frames=frames, depth=depth, K=intrinsics(H, W, device), cam_to_world=c2w)


def render_grid(scene: Scene | int, V: int = 8, T: int = 8, H: int = 72, W: int = 128, device="cpu", *,
                view_pos: torch.Tensor | None = None, times: torch.Tensor | None = None,
                antialias: bool = True) -> dict:
    """One scene (or seed) -> dict(frames [V, T, H, W, 3] in [0, 1], depth [V, T, H, W], K [3, 3],
    cam_to_world [V, 4, 4]). Camera v is the same at all times; time t moves the objects."""
    scene = scene if isinstance(scene, Scene) else sample_scene(int(scene))
    out = render_batch([scene], V, T, H, W, device, view_pos=view_pos, times=times, antialias=antialias)
    return dict(frames=out["frames"][0], depth=out["depth"][0], K=out["K"], cam_to_world=out["cam_to_world"][0])
