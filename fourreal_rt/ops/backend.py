"""Lazy loading of the compiled kernels (`fourreal_rt._C`). Nothing is compiled or imported at
`import fourreal_rt`; the first call to `load()` tries the extension once and remembers the outcome."""
from __future__ import annotations

import importlib

_state: dict = {}


def load():
    """The compiled module, or None if it is not built (CPU installs) or fails to load."""
    if "module" not in _state:
        try:
            _state["module"] = importlib.import_module("fourreal_rt._C")
            _state["error"] = None
        except ImportError as e:
            _state["module"], _state["error"] = None, str(e)
    return _state["module"]


def status() -> dict:
    mod = load()
    return {"present": mod is not None, "error": None if mod else _state.get("error")}
