"""Small concurrency helpers shared by the loaders, the sampler and the writers."""
from __future__ import annotations

import atexit
import os
import threading
from concurrent.futures import Future

_wait_at_exit: set[Future] = set()   # in_background(..., wait_at_exit=True) work not finished yet
EXIT_WAIT_S = 60.0                   # the longest the exit waits for each (a hung driver call does not hang the exit)


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def in_background(fn, *args, name: str = "fourreal-background", wait_at_exit: bool = False) -> Future:
    """fn(*args) in a daemon thread (an interrupted run does not wait for it, unlike an executor's thread, unless
    wait_at_exit); its result or error in a Future. wait_at_exit: the interpreter's exit waits for it first (up to
    EXIT_WAIT_S) — for work in native code that must not be cut off at exit (PyTorch's: a daemon thread still inside it
    aborts the process, exit status 134 instead of the caller's; the CUDA driver's)."""
    fut: Future = Future()
    if wait_at_exit:
        _wait_at_exit.add(fut)
        fut.add_done_callback(_wait_at_exit.discard)

    def run():
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001  (handed to whoever asks for the result)
            fut.set_exception(e)
    try:
        threading.Thread(target=run, daemon=True, name=name).start()
    except BaseException as e:  # (no thread: nothing for the exit to wait for)
        fut.set_exception(e)
        raise
    return fut


@atexit.register
def _finish_pending() -> None:
    for fut in list(_wait_at_exit):
        try:
            fut.exception(timeout=EXIT_WAIT_S)   # waits; its result or error was for whoever asked
        except TimeoutError:
            pass
