"""Streaming safetensors writer: the header first (all shapes are known up front), then each
tensor's bytes in order, so a whole model never has to sit in memory."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

import torch

from .format import NAMES, CheckpointError

ALIGN = 8  # header padded with spaces so the data starts 8-byte aligned


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
        self._f = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._f.write(struct.pack("<Q", len(raw)))
        self._f.write(raw)
        self._next = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append `tensor`'s bytes; it must be the next declared tensor, with its dtype and shape."""
        if self._next >= len(self._layout):
            raise CheckpointError(f"{self.path}: tensor {name!r} was not declared (all {len(self._layout)} written)")
        want, dtype, shape = self._layout[self._next]
        if name != want:
            raise CheckpointError(f"{self.path}: expected tensor {want!r} next, got {name!r}")
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise CheckpointError(
                f"{self.path}: tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, declared {dtype} {shape}"
            )
        t = tensor.detach().cpu().contiguous()
        if t.numel():
            self._f.write(memoryview(t.view(torch.uint8).reshape(-1).numpy()))
        self._next += 1

    def close(self) -> None:
        if self._f.closed:
            return
        self._f.flush()
        self._f.close()
        if self._next != len(self._layout):
            missing = self._layout[self._next][0]
            raise CheckpointError(f"{self.path}: closed before tensor {missing!r} was written")

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._f.close()


def write_safetensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Write a whole mapping of tensors to one safetensors file (not atomic by itself: write into an
    AtomicOutput's temporary)."""
    layout = [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    with SafetensorsWriter(path, layout, metadata) as w:
        for n, t in tensors.items():
            w.write(n, t)
