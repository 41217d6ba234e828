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
from typing import Any

# safetensors dtype name -> (bytes per element, floating point, torch's name for it). No torch import
# here: file work (header parsing, streaming stamp) runs without it; the torch dtypes are looked up
# on first use.
FORMAT_DTYPES: dict[str, tuple[int, bool, str]] = {
    "F64": (8, True, "float64"),
    "F32": (4, True, "float32"),
    "F16": (2, True, "float16"),
    "BF16": (2, True, "bfloat16"),
    "I64": (8, False, "int64"),
    "I32": (4, False, "int32"),
    "I16": (2, False, "int16"),
    "I8": (1, False, "int8"),
    "U8": (1, False, "uint8"),
    "BOOL": (1, False, "bool"),
    "U16": (2, False, "uint16"),
    "U32": (4, False, "uint32"),
    "U64": (8, False, "uint64"),
    "F8_E4M3": (1, True, "float8_e4m3fn"),
    "F8_E5M2": (1, True, "float8_e5m2"),
}
_BY_TORCH_NAME = {f"torch.{t}": k for k, (_, _, t) in FORMAT_DTYPES.items()}


def format_dtype(dtype: Any) -> str:
    """The safetensors name ("BF16") of a torch dtype or of a safetensors name; KeyError if none."""
    if isinstance(dtype, str) and dtype in FORMAT_DTYPES:
        return dtype
    return _BY_TORCH_NAME[str(dtype)]


def torch_dtype(name: str) -> Any:
    """The torch dtype of a safetensors dtype name (imports torch)."""
    import torch

    return getattr(torch, FORMAT_DTYPES[name][2])


def __getattr__(name: str) -> Any:
    # DTYPES (safetensors name -> torch dtype) and NAMES (the inverse), built on first use
    if name in ("DTYPES", "NAMES"):
        dtypes = {k: torch_dtype(k) for k in FORMAT_DTYPES}
        globals()["DTYPES"], globals()["NAMES"] = dtypes, {v: k for k, v in dtypes.items()}
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit


class CheckpointError(ValueError):
    """A checkpoint file or folder that cannot be read as it claims to be."""


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives: its file and absolute byte range [start, end)."""

    name: str
    format_dtype: str  # the safetensors name, e.g. "BF16"
    shape: tuple[int, ...]
    file: Path
    start: int
    end: int

    @property
    def dtype(self) -> Any:
        """The torch dtype (imports torch)."""
        return torch_dtype(self.format_dtype)

    @property
    def dtype_name(self) -> str:
        """str() of the torch dtype ("torch.bfloat16"), without importing torch."""
        return "torch." + FORMAT_DTYPES[self.format_dtype][2]

    @property
    def itemsize(self) -> int:
        return FORMAT_DTYPES[self.format_dtype][0]

    @property
    def is_float(self) -> bool:
        return FORMAT_DTYPES[self.format_dtype][1]

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
        if dt not in FORMAT_DTYPES:
            raise CheckpointError(f"{where}: unknown dtype {dt!r} (known: {', '.join(FORMAT_DTYPES)})")
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
        want = numel * FORMAT_DTYPES[dt][0]
        if end - begin != want:
            raise CheckpointError(
                f"{where}: data_offsets [{begin}, {end}] hold {end - begin} bytes but {dt} {tuple(shape)} needs {want}"
            )
        if end > data_size:
            raise CheckpointError(
                f"{where}: data ends at byte {data_start + end} but the file has only {size} bytes (truncated?)"
            )
        infos.append(TensorInfo(name, dt, tuple(shape), path, data_start + begin, data_start + end))
    infos.sort(key=lambda t: (t.start, t.end))
    for a, b in zip(infos, infos[1:], strict=False):
        if b.start < a.end:
            raise CheckpointError(f"{path}: tensors {a.name!r} and {b.name!r} overlap in the file")
    return {t.name: t for t in infos}, meta
