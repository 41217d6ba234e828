"""Streaming safetensors writer: the header first (all shapes are known up front), then each
tensor's bytes in order, so a whole model never has to sit in memory."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

import torch

from .format import NAMES, CheckpointError

ALIGN = 8  # header padded with spaces so the data starts 8-byte aligned
# Start writing back every this many bytes as they are written (posix_fadvise DONTNEED starts
# asynchronous writeback of dirty pages), so the disk works while the next bytes are produced and
# the final fsync has little left to wait for.
WRITEBACK_BYTES = 64 << 20


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


class SafetensorsWriter:
    """``SafetensorsWriter(path, [(name, dtype, shape), ...], metadata)``, then ``write(name, t)`` for
    each tensor in the declared order, then ``close()`` (or use it as a context manager).

    Raises CheckpointError naming the tensor when one arrives out of order or with another dtype or
    shape than declared, or when closed before all were written.
    """

    def __init__(
        self,
        path: str | Path,
        layout: Iterable[tuple[str, torch.dtype, tuple[int, ...]]],
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self._layout = [(n, d, tuple(int(x) for x in s)) for n, d, s in layout]
        header: dict[str, object] = {}
        if metadata:
            bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
            if bad:
                raise CheckpointError(f"{self.path}: metadata {bad[0]!r} must map a string to a string")
            header["__metadata__"] = dict(metadata)
        offset = 0
        for name, dtype, shape in self._layout:
            if dtype not in NAMES:
                raise CheckpointError(f"{self.path}: tensor {name!r} has dtype {dtype}, which safetensors cannot store")
            if name in header:
                raise CheckpointError(f"{self.path}: tensor {name!r} declared twice")
            n = 1
            for x in shape:
                n *= x
            nbytes = n * _itemsize(dtype)
            header[name] = {"dtype": NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-(8 + len(raw)) % ALIGN)
        # Unbuffered: every write goes straight to the descriptor, so copy_part can splice file
        # ranges in at the current position with copy_file_range.
        self._f = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        self._pos = self._kicked = 0
        self._put(memoryview(struct.pack("<Q", len(raw)) + raw))
        self._next = 0
        self._done = 0  # bytes of the current tensor written so far

    def _put(self, data: memoryview) -> None:
        while len(data):
            n = self._f.write(data)
            data = data[n:]
            self._pos += n
        self._kick()

    def _kick(self) -> None:
        if self._pos - self._kicked >= WRITEBACK_BYTES and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._f.fileno(), self._kicked, self._pos - self._kicked, os.POSIX_FADV_DONTNEED)
            self._kicked = self._pos

    def _expect(self, name: str) -> int:
        """The bytes still due for tensor `name`, which must be the one being written."""
        if self._next >= len(self._layout):
            raise CheckpointError(f"{self.path}: tensor {name!r} was not declared (all {len(self._layout)} written)")
        want, dtype, shape = self._layout[self._next]
        if name != want:
            raise CheckpointError(f"{self.path}: expected tensor {want!r} next, got {name!r}")
        n = _itemsize(dtype)
        for x in shape:
            n *= x
        return n - self._done

    def _advance(self, name: str, nbytes: int, due: int) -> None:
        if nbytes > due:
            raise CheckpointError(f"{self.path}: tensor {name!r} got {nbytes - due} bytes more than declared")
        self._done += nbytes
        if nbytes == due:
            self._next += 1
            self._done = 0

    def write_part(self, name: str, data: memoryview | bytes) -> None:
        """Append the next bytes of tensor `name` (written in parts; it is complete once its declared
        size has arrived)."""
        view = memoryview(data).cast("B")
        due = self._expect(name)
        if len(view) > due:
            self._advance(name, len(view), due)  # raises, before anything is written
        self._put(view)
        self._advance(name, len(view), due)

    def copy_part(self, name: str, src_fd: int, src_offset: int, nbytes: int) -> None:
        """Append the next `nbytes` of tensor `name` straight from another file (copy_file_range: the
        kernel moves the bytes, nothing passes through user memory)."""
        due = self._expect(name)
        if nbytes > due:
            self._advance(name, nbytes, due)  # raises
        done = 0
        while done < nbytes:
            try:
                n = os.copy_file_range(src_fd, self._f.fileno(), nbytes - done, src_offset + done)
            except OSError:  # e.g. across file systems on old kernels: copy through memory
                n = 0
            if n == 0:
                chunk = os.pread(src_fd, min(nbytes - done, 8 << 20), src_offset + done)
                if not chunk:
                    raise CheckpointError(f"{self.path}: source of tensor {name!r} ended early (truncated?)")
                self._put(memoryview(chunk))
                n = len(chunk)
            else:
                self._pos += n
            done += n
        self._kick()
        self._advance(name, nbytes, due)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append `tensor`'s bytes; it must be the next declared tensor, with its dtype and shape."""
        due = self._expect(name)
        _, dtype, shape = self._layout[self._next]
        if tensor.dtype != dtype or tuple(tensor.shape) != shape or self._done:
            raise CheckpointError(
                f"{self.path}: tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, declared {dtype} {shape}"
                + (" (and partly written already)" if self._done else "")
            )
        t = tensor.detach().cpu().contiguous()
        if t.numel():
            self._put(memoryview(t.view(torch.uint8).reshape(-1).numpy()))
        self._advance(name, due, due)

    def close(self) -> None:
        if self._f.closed:
            return
        self._f.close()
        if self._next != len(self._layout):
            missing = self._layout[self._next][0]
            raise CheckpointError(f"{self.path}: closed before tensor {missing!r} was written")

    def abort(self) -> None:
        """Close without the completeness check (the file is being thrown away)."""
        self._f.close()

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_safetensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Write a whole mapping of tensors to one safetensors file (not atomic by itself: write into an
    AtomicOutput's temporary)."""
    layout = [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    with SafetensorsWriter(path, layout, metadata) as w:
        for n, t in tensors.items():
            w.write(n, t)
