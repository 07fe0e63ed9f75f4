"""Model files: `config.json` + `model.safetensors` in one directory. No pickle anywhere."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import PRESETS, GridConfig
from .twostream import TwoStreamModel

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "weights"   # fourreal_rt/weights/<name>/
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


class ModelNotFoundError(ValueError):
    pass


@dataclass
class ModelSource:
    """Where a model comes from: a model directory, or a preset with random weights."""
    name: str
    cfg: GridConfig
    directory: Path | None       # None: random-init preset, nothing trained

    @property
    def trained(self) -> bool:
        return self.directory is not None

    @property
    def weights_path(self) -> Path | None:
        return self.directory / WEIGHTS_FILE if self.directory else None


def resolve(name_or_path: str) -> ModelSource:
    """Find a model by shipped name, directory path, or preset name (random weights); reads config only."""
    p = Path(name_or_path)
    if p.is_dir() or os.sep in str(name_or_path) or name_or_path.startswith("."):
        if not (p / CONFIG_FILE).is_file() or not (p / WEIGHTS_FILE).is_file():
            raise ModelNotFoundError(f"{name_or_path}: not a model directory (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        return ModelSource(p.name, read_config(p), p)
    shipped = SHIPPED_DIR / name_or_path
    if (shipped / WEIGHTS_FILE).is_file():
        return ModelSource(name_or_path, read_config(shipped), shipped)
    if name_or_path in PRESETS:
        return ModelSource(name_or_path, PRESETS[name_or_path], None)
    raise ModelNotFoundError(f"{name_or_path}: no such model (presets: {', '.join(PRESETS)}; or a model directory)")


def read_meta(directory: Path | None) -> dict:
    """A model directory's config.json as written by save_model ({} for none): config plus how it was trained."""
    return json.loads((Path(directory) / CONFIG_FILE).read_text()) if directory else {}


def read_config(directory: Path) -> GridConfig:
    try:
        return GridConfig.from_dict(read_meta(directory)["config"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelNotFoundError(f"{directory / CONFIG_FILE}: unreadable model config ({e})") from None


def sha256_file(path: Path, chunk: int = 8 << 20, start: int = 0, length: int | None = None) -> str:
    """sha256 of the file's bytes [start, start + length) (default: all of it)."""
    h = hashlib.sha256()
    left = float("inf") if length is None else length
    with open(path, "rb") as f:
        f.seek(start)
        while left > 0:
            block = f.read(int(min(chunk, left)))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def sha256_parts(path: Path, part: int, workers: int | None = None) -> list[str]:
    """sha256 of each consecutive `part`-byte piece of the file, hashed in parallel threads (hashlib releases
    the GIL): the whole file checked in a fraction of one sha256's time on a many-core machine."""
    from concurrent.futures import ThreadPoolExecutor
    starts = range(0, max(Path(path).stat().st_size, 1), part)
    from ..runtime.threads import cores
    with ThreadPoolExecutor(max_workers=workers or min(16, cores())) as ex:
        return list(ex.map(lambda s: sha256_file(path, start=s, length=part), starts))


@contextlib.contextmanager
def skip_init():
    """Modules built inside skip their random init (parameters stay uninitialised `torch.empty`): for models
    whose every weight is loaded next. (`torch.device("meta")` would do too, at the cost of importing dynamo.)"""
    names = ("kaiming_uniform_", "uniform_", "normal_", "zeros_", "ones_", "xavier_uniform_", "trunc_normal_")
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda t, *a, **k: t)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


def load_model(src: ModelSource, seed: int = 0) -> TwoStreamModel:
    """Build the model of `src.cfg` and load its weights (random init, seeded, if none)."""
    if not src.trained:
        torch.manual_seed(seed)
        return TwoStreamModel(src.cfg).eval()
    with skip_init(), torch.no_grad():
        model = TwoStreamModel(src.cfg)
    try:
        state = {k: v.float() for k, v in load_file(str(src.weights_path)).items()}
    except Exception as e:  # safetensors raises its own error type for truncated / corrupt files
        raise ModelNotFoundError(f"{src.weights_path}: damaged weights file ({e})") from None
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ModelNotFoundError(f"{src.weights_path}: weights do not match the config "
                                 f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {sorted(wrong)[:3]})")
    model.load_state_dict(state, assign=True)
    return model.eval()


def with_grid(model: TwoStreamModel, views: int, times: int) -> TwoStreamModel:
    """The model for a window of views x times: `model` itself if it has that window, else a new module holding
    the same weight tensors (the weights do not depend on the grid; RoPE tables do), in the same train/eval mode."""
    if (views, times) == (model.cfg.views, model.cfg.times):
        return model
    with skip_init(), torch.no_grad():
        resized = TwoStreamModel(model.cfg.replace(views=views, times=times))
    resized.load_state_dict(model.state_dict(), assign=True)
    return resized.train(model.training)


def save_model(model: TwoStreamModel, directory: Path, extra: dict | None = None,
               dtype: torch.dtype = torch.float32) -> Path:
    """Writes config.json + model.safetensors (floating tensors stored as `dtype`) into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous().cpu()
             for k, v in model.state_dict().items()}
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, directory / WEIGHTS_FILE)
    meta = {"config": json.loads(model.cfg.to_json()), **(extra or {})}
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory
