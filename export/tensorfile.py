"""One safetensors file onto a device in one piece, checked as it is read.

`safetensors.torch.load_file(path, device="cuda")` copies tensor by tensor out of a memory map (a page fault a
4 KiB page, a pageable copy a tensor), and an engine's sha256 check then reads the same file a second time: 0.4 s
for the paper preset's 535 MB fp8 engine on the H100 box (benchmarks/RESULTS.md, issue 5). Here the tensors are
views of one device buffer, known (shapes, dtypes) from the header before any data is read; the buffer is filled
by parallel reads of the file's parts, each part's sha256 checked on the very bytes that are copied.

Format (github.com/huggingface/safetensors, "Format"): 8 bytes little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}} with offsets counted from the end of
the header, then the data. safetensors writes tensors ordered by alignment, so each view is aligned.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
DEFAULT_PART = 64 << 20


class TensorFileError(ValueError):
    """The file is not what its header or its checksums say; the message says what and where."""


_pool: dict = {}
_pool_lock = threading.Lock()


def _readers() -> concurrent.futures.ThreadPoolExecutor:
    """Threads for the parts (file reads, sha256 and copies release the interpreter lock)."""
    with _pool_lock:
        if "pool" not in _pool:
            _pool["pool"] = concurrent.futures.ThreadPoolExecutor(
                max_workers=min(16, os.cpu_count() or 1), thread_name_prefix="fourreal-read")
        return _pool["pool"]


def read_header(path) -> tuple[int, dict]:
    """(data start in bytes, {name: (dtype, shape, begin, end)}) of a safetensors file; TensorFileError if the
    header is not one."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= size - 8:
            raise TensorFileError(f"{path.name}: not a safetensors file (header length {n}, file {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TensorFileError(f"{path.name}: unreadable safetensors header ({e})") from None
    start, entries = 8 + n, {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (a, b) = DTYPES[e["dtype"]], [int(s) for s in e["shape"]], e["data_offsets"]
        except (KeyError, TypeError, ValueError) as err:
            raise TensorFileError(f"{path.name}: bad header entry for {name} ({err!r})") from None
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if not (0 <= a <= b <= size - start and b - a == nbytes and a % dtype.itemsize == 0):
            raise TensorFileError(f"{path.name}: tensor {name} has offsets {[a, b]} that do not fit "
                                  f"{e['dtype']} {shape} in {size - start} data bytes")
        entries[name] = (dtype, shape, a, b)
    return start, entries


class DeviceFile:
    """The tensors of safetensors file `path` as views of one buffer on `device`.

    The file's parts are read and checked in background threads from construction on (no device needed for
    that: they overlap whatever the caller does next, a CUDA context's creation included); `wait()` copies each
    part to the device as it is ready. check: the manifest's entry for the file ({"sha256", "bytes"}, and for
    large files "part_bytes" + "parts_sha256"), or None to read unchecked. The views are valid once `wait()`
    returns."""

    def __init__(self, path, device: torch.device, check: dict | None = None):
        self.path, self.check = Path(path), check
        self.size = self.path.stat().st_size
        self.start_byte, entries = read_header(self.path)
        if check is not None and "parts_sha256" in check:
            self.part, self.want = check["part_bytes"], check["parts_sha256"]
        else:
            self.part, self.want = (self.size if check is not None else DEFAULT_PART), None
        if self.want is not None and len(self.want) != -(-self.size // self.part):
            raise TensorFileError(f"{self.path.name}: {len(self.want)} part checksums for {self.size} bytes")
        self._parts = [_readers().submit(self._read, i, a) for i, a in enumerate(range(0, self.size, self.part))]
        self.buffer = torch.empty(self.size - self.start_byte, dtype=torch.uint8, device=device)  # [data bytes]
        self.tensors = {name: self.buffer[a:b].view(dtype).view(shape) for name, (dtype, shape, a, b) in entries.items()}

    def _read(self, i: int, a: int) -> tuple[int, np.ndarray, str | None]:  # -> (start, bytes, what is damaged)
        n = min(self.part, self.size - a)
        host = np.empty(n, np.uint8)                                            # [n] bytes of the file
        view, got = memoryview(host), 0
        with open(self.path, "rb", buffering=0) as f:                          # a file object a thread
            f.seek(a)
            while got < n and (k := f.readinto(view[got:])):                   # reads may come back short
                got += k
        if got != n:
            return a, host, f"bytes {a}-{a + n - 1} could not be read (file changed while loading)"
        if self.check is not None:
            want = self.want[i] if self.want is not None else self.check["sha256"]
            if hashlib.sha256(view).hexdigest() != want:
                return a, host, f"bytes {a}-{a + n - 1} differ from the manifest's sha256"
        return a, host, None

    def wait(self) -> dict:
        """Copies the parts to the device as they are read and checked; returns the tensors. TensorFileError
        naming the first damaged part (nothing of a damaged file is used)."""
        damage = []
        for fut in concurrent.futures.as_completed(self._parts):
            a, host, bad = fut.result()
            lo = max(a, self.start_byte)                                        # the part's data bytes
            if bad:
                damage.append((a, bad))
            elif not damage and lo < a + len(host):
                self.buffer[lo - self.start_byte:a + len(host) - self.start_byte].copy_(torch.from_numpy(host[lo - a:]))
        if damage:
            raise TensorFileError(f"{self.path.name} is damaged ({min(damage)[1]})")
        return self.tensors


def load(path, device, check: dict | None = None) -> dict:
    """{name: tensor} of a safetensors file on `device`, read in parallel parts and checked against `check`."""
    return DeviceFile(path, torch.device(device), check).wait()
