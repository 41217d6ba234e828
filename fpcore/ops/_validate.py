"""Argument checks shared by the public ops. Every message names the op and the argument."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fpcore._dispatch import SUPPORTED_DTYPES

MAX_VECTORS = 8
_DTYPE_NAMES = "float32, bfloat16 or float16"


def as_tensor(op: str, name: str, x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def as_vector(op: str, name: str, x: Any) -> list[torch.Tensor]:
    """A weight vector: one tensor, a sequence of tensors, or a mapping's values (a state dict)."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, Mapping):
        x = list(x.values())
    if not isinstance(x, Sequence) or isinstance(x, str | bytes):
        raise TypeError(f"{op}: {name} must be a tensor or a sequence of tensors, got {type(x).__name__}")
    if len(x) == 0:
        raise ValueError(f"{op}: {name} is an empty sequence; expected at least one tensor")
    for i, t in enumerate(x):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name}[{i}] must be a torch.Tensor, got {type(t).__name__}")
    return list(x)


def check_dtype(op: str, name: str, t: torch.Tensor) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{op}: {name} has dtype {t.dtype}; expected {_DTYPE_NAMES}")


def check_out_dtype(op: str, name: str, dtype: torch.dtype) -> None:
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{op}: {name} dtype {dtype} is not supported; expected {_DTYPE_NAMES}")


def check_same_shape(op: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{op}: {name_b} has shape {tuple(b.shape)} but {name_a} has shape {tuple(a.shape)}; "
            "shapes must match exactly (no broadcasting)"
        )


def check_same_device(op: str, named: Sequence[tuple[str, torch.Tensor]]) -> None:
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.device != first.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first_name} is on {first.device}")


def check_finite(op: str, named: Sequence[tuple[str, torch.Tensor]]) -> None:
    for name, t in named:
        if t.numel() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"{op}: {name} has {bad} non-finite value(s) (NaN or Inf) and check_finite=True")


def alphas_for(op: str, alpha: Any, count: int) -> list[float]:
    """alpha as a list of `count` floats (a float applies to every vector)."""
    if isinstance(alpha, bool):
        raise TypeError(f"{op}: alpha must be a float or a sequence of floats, got bool")
    if isinstance(alpha, int | float):
        return [float(alpha)] * count
    if isinstance(alpha, torch.Tensor) and alpha.numel() == 1:
        return [float(alpha)] * count
    if not isinstance(alpha, Sequence):
        raise TypeError(f"{op}: alpha must be a float or a sequence of floats, got {type(alpha).__name__}")
    if len(alpha) != count:
        raise ValueError(f"{op}: alpha has {len(alpha)} values but there are {count} vectors")
    out = []
    for i, a in enumerate(alpha):
        if isinstance(a, bool) or not isinstance(a, int | float):
            raise TypeError(f"{op}: alpha[{i}] must be a float, got {type(a).__name__}")
        out.append(float(a))
    return out


def _extent(t: torch.Tensor) -> tuple[int, int]:
    """Byte range [lo, hi) that t's elements occupy in its storage."""
    if t.numel() == 0:
        return (0, 0)
    lo = t.data_ptr()  # torch strides are never negative
    span = sum((s - 1) * st for s, st in zip(t.shape, t.stride(), strict=True))
    return lo, lo + (span + 1) * t.element_size()


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype


def check_out(op: str, out: torch.Tensor, inputs: Sequence[tuple[str, torch.Tensor]], may_alias: str | None) -> None:
    """out must not overlap any input, except exactly being the input named `may_alias` (in place)."""
    if out.numel() > 1 and torch._debug_has_internal_overlap(out) == 1:
        raise ValueError(f"{op}: out has internal overlap (several elements share memory); give a dense tensor")
    lo, hi = _extent(out)
    for name, t in inputs:
        if t.numel() == 0 or out.numel() == 0 or t.device != out.device or t.device.type == "meta":
            continue
        tlo, thi = _extent(t)
        if tlo < hi and lo < thi:
            if name == may_alias and _same_view(out, t):
                continue
            raise ValueError(f"{op}: out overlaps {name} in memory; write to a separate tensor")


def check_inplace_grad(op: str, name: str, t: torch.Tensor) -> None:
    if t.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(
            f"{op}: {name} requires grad; an in-place update would corrupt autograd. "
            "Wrap the call in torch.no_grad() (as when stamping model parameters)"
        )


def contiguous(ts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [t if t.is_contiguous() else t.contiguous() for t in ts]
