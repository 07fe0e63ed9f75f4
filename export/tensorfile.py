"""One safetensors file onto a device in one piece, checked as it is read.

`safetensors.torch.load_file(path, device="cuda")` copies tensor by tensor out of a memory map (a page fault a
4 KiB page, a pageable copy a tensor), and an engine's sha256 check then reads the same file a second time: 0.4 s
for the paper preset's 535 MB fp8 engine on the H100 box (benchmarks/RESULTS.md, issue 5). Here the file's parts
are read and hashed in parallel threads, each part's sha256 checked on the very bytes that are copied (the header
the tensors are laid out by included), and the tensors are views of one device buffer.

Format (github.com/huggingface/safetensors, "Format"): 8 bytes little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}} with offsets counted from the end of
the header, then the data. Offsets must be multiples of the element size (safetensors writes them so); a tensor
not 16-byte aligned gets an allocation of its own (vectorized kernels want 16 bytes).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import torch

from fourreal_rt.runtime.threads import cores

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
READ_PART = 64 << 20    # bytes a thread reads at a time when no part checksums say otherwise
ALIGN = 16


class TensorFileError(ValueError):
    """The file is not a safetensors file we can lay out; the message says what and where."""


class DamagedError(TensorFileError):
    """A part of the file differs from its checksum (or could not be read whole)."""


_pool: dict = {}
_pool_lock = threading.Lock()


def _readers() -> concurrent.futures.ThreadPoolExecutor:
    """Threads for the parts (file reads and sha256 release the interpreter lock)."""
    with _pool_lock:
        if "pool" not in _pool:
            _pool["pool"] = concurrent.futures.ThreadPoolExecutor(
                max_workers=min(16, cores()), thread_name_prefix="fourreal-read")
        return _pool["pool"]


def read_header(path) -> tuple[bytes, dict]:
    """(the header's bytes, {name: (dtype, shape, begin, end)}) of a safetensors file; TensorFileError if the header
    is not one we can lay out."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= size - 8:
            raise TensorFileError(f"{path.name}: not a safetensors file (header length {n}, file {size} bytes)")
        raw = head + f.read(n)
    try:
        header = json.loads(raw[8:])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TensorFileError(f"{path.name}: unreadable safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise TensorFileError(f"{path.name}: unreadable safetensors header (not a JSON object)")
    data, entries = size - len(raw), {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = DTYPES[e["dtype"]]
        except (KeyError, TypeError):
            raise TensorFileError(f"{path.name}: tensor {name} has an unsupported dtype "
                                  f"({e.get('dtype') if isinstance(e, dict) else e!r})") from None
        shape, offsets = e.get("shape"), e.get("data_offsets")
        ints = lambda v: isinstance(v, list) and all(isinstance(i, int) and i >= 0 for i in v)  # noqa: E731
        if not (ints(shape) and ints(offsets) and len(offsets) == 2):
            raise TensorFileError(f"{path.name}: tensor {name} has shape {shape} and offsets {offsets}")
        a, b = offsets
        if not (a <= b <= data and b - a == int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                and a % dtype.itemsize == 0):
            raise TensorFileError(f"{path.name}: tensor {name} has offsets {offsets} that do not fit "
                                  f"{e['dtype']} {shape} in {data} data bytes")
        entries[name] = (dtype, shape, a, b)
    return raw, entries


class DeviceFile:
    """The tensors of safetensors file `path` on `device`, read by `wait()`.

    The file's parts are read and checked in background threads from construction on, touching no device (so
    that they overlap whatever the caller does next, a CUDA context's creation included). check: the manifest's
    entry for the file ({"sha256", "bytes"}, and for large files "part_bytes" + "parts_sha256"), or None to read
    unchecked."""

    def __init__(self, path, device: torch.device, check: dict | None = None):
        self.path, self.device, self.check = Path(path), torch.device(device), check
        self.size = self.path.stat().st_size
        self.header, self.entries = read_header(self.path)
        if check is not None and "parts_sha256" in check:
            self.part, self.want = check["part_bytes"], check["parts_sha256"]
        else:
            self.part, self.want = (self.size if check is not None else READ_PART), None
        if self.want is not None and len(self.want) != -(-self.size // self.part):
            raise TensorFileError(f"{self.path.name}: {len(self.want)} part checksums for {self.size} bytes")
        self._parts = [_readers().submit(self._read, i, a) for i, a in enumerate(range(0, self.size, self.part))]

    def _read(self, i: int, a: int) -> tuple[int, np.ndarray, str | None]:  # -> (start, bytes, what is damaged)
        n = min(self.part, self.size - a)
        host = np.empty(n, np.uint8)                                            # [n] bytes of the file
        view, got = memoryview(host), 0
        with open(self.path, "rb", buffering=0) as f:                          # a file object a thread
            f.seek(a)
            while got < n and (k := f.readinto(view[got:])):                   # reads may come back short
                got += k
        if got != n:
            return a, host, f"bytes {a}-{a + n - 1} could not be read (the file changed while loading)"
        if self.check is not None:
            want = self.want[i] if self.want is not None else self.check["sha256"]
            if hashlib.sha256(view).hexdigest() != want:
                return a, host, f"bytes {a}-{a + n - 1} differ from the manifest's sha256"
        if a < len(self.header) and host[:len(self.header) - a].tobytes() != self.header[a:a + n]:
            return a, host, f"bytes {a}-{a + n - 1} changed while loading (the header)"
        return a, host, None

    def wait(self) -> dict:
        """{name: tensor} on the device: views of one buffer (its own allocation for a tensor not 16-byte aligned).
        Each part is copied as soon as it is read and checked, on a CUDA side stream (kernels other threads queue
        meanwhile on the default stream do not wait behind the copies). DamagedError names the first damaged part;
        nothing of a damaged file is returned."""
        start = len(self.header)
        buffer = torch.empty(self.size - start, dtype=torch.uint8, device=self.device)  # [data bytes]
        side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        damage = []
        with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
            for fut in concurrent.futures.as_completed(self._parts):
                a, host, bad = fut.result()
                lo = max(a, start)                                              # the part's data bytes
                if bad:
                    damage.append((a, bad))
                elif not damage and lo < a + len(host):                         # a pageable copy: done on return
                    buffer[lo - start:a + len(host) - start].copy_(torch.from_numpy(host[lo - a:]))
        self._parts = []                                                        # the host bytes go
        if damage:
            raise DamagedError(f"{self.path.name} is damaged ({min(damage)[1]})")
        tensors = {}
        for name, (dtype, shape, a, b) in self.entries.items():
            t = buffer[a:b].view(dtype).view(shape)
            tensors[name] = t if a % ALIGN == 0 else t.clone()
        return tensors


def load(path, device, check: dict | None = None) -> dict:
    """{name: tensor} of a safetensors file on `device`, read in parallel parts and checked against `check`."""
    return DeviceFile(path, device, check).wait()
