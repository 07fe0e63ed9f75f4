"""Small concurrency helpers shared by the loaders, the sampler and the writers."""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def in_background(fn, *args, name: str = "fourreal-background") -> Future:
    """fn(*args) in a daemon thread (an interrupted run does not wait for it, unlike an executor's thread); its result
    or error in a Future."""
    fut: Future = Future()

    def run():
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001  (handed to whoever asks for the result)
            fut.set_exception(e)
    threading.Thread(target=run, daemon=True, name=name).start()
    return fut
