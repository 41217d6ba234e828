"""The safetensors file format: header parsing and validation, with errors naming file and tensor.

Layout: an unsigned 64-bit little-endian header length N, N bytes of UTF-8 JSON (an object mapping
each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} plus an optional
"__metadata__" of string to string), then the data; offsets are relative to the data's start.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

# safetensors dtype names <-> torch dtypes (those torch has)
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit


class CheckpointError(ValueError):
    """A checkpoint file or folder that cannot be read as it claims to be."""


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives: its file and absolute byte range [start, end)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    file: Path
    start: int
    end: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate one .safetensors file's header: (tensors in data order, metadata)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated: {size} bytes, too short for the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or 8 + n > size:
                raise CheckpointError(
                    f"{path}: header length {n} runs past the end of the file ({size} bytes); "
                    "truncated, or not safetensors"
                )
            raw = f.read(n)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header is a JSON {type(header).__name__}, expected an object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CheckpointError(f"{path}: __metadata__ must map strings to strings")
    data_start = 8 + n
    data_size = size - data_start
    infos: list[TensorInfo] = []
    for name, entry in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where}: header entry is not an object")
        dt = entry.get("dtype")
        if dt not in DTYPES:
            raise CheckpointError(f"{where}: unknown dtype {dt!r} (known: {', '.join(DTYPES)})")
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise CheckpointError(f"{where}: shape {shape!r} is not a list of non-negative integers")
        offs = entry.get("data_offsets")
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)):
            raise CheckpointError(f"{where}: data_offsets {offs!r} is not [begin, end]")
        begin, end = offs
        if not 0 <= begin <= end:
            raise CheckpointError(f"{where}: data_offsets [{begin}, {end}] are not ordered")
        numel = 1
        for s in shape:
            numel *= s
        want = numel * torch.empty(0, dtype=DTYPES[dt]).element_size()
        if end - begin != want:
            raise CheckpointError(
                f"{where}: data_offsets [{begin}, {end}] hold {end - begin} bytes but {dt} {tuple(shape)} needs {want}"
            )
        if end > data_size:
            raise CheckpointError(
                f"{where}: data ends at byte {data_start + end} but the file has only {size} bytes (truncated?)"
            )
        infos.append(TensorInfo(name, DTYPES[dt], tuple(shape), path, data_start + begin, data_start + end))
    infos.sort(key=lambda t: (t.start, t.end))
    for a, b in zip(infos, infos[1:], strict=False):
        if b.start < a.end:
            raise CheckpointError(f"{path}: tensors {a.name!r} and {b.name!r} overlap in the file")
    return {t.name: t for t in infos}, meta
