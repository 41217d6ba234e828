"""pair_stats: every distance between two weight vectors in one pass over memory."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fpcore._dispatch import select

from . import _validate as v


@dataclass(frozen=True)
class PairStats:
    """Sums over the flattened vectors x = a, y = b (accumulated as csrc/include/fpcore/kernels.h says).

    Attributes:
        dot: <x, y>.   norm_a, norm_b: |x|, |y| (Euclidean).
        l1: sum |x - y|.   l2: |x - y|.   l2sq: |x - y|^2.   linf: max |x - y|.   n: elements.
    """

    dot: float
    norm_a: float
    norm_b: float
    l1: float
    l2sq: float
    linf: float
    n: int

    @property
    def l2(self) -> float:
        return math.sqrt(self.l2sq) if self.l2sq >= 0 else float("nan")

    @property
    def cosine(self) -> float:
        """Cosine distance 1 - <x,y> / (|x| |y|) (both norms, not |x|^2); NaN when a norm is 0."""
        den = self.norm_a * self.norm_b
        return 1.0 - self.dot / den if den > 0 else float("nan")

    @classmethod
    def from_sums(cls, dot: float, xx: float, yy: float, l1: float, l2sq: float, linf: float, n: int) -> PairStats:
        return cls(float(dot), math.sqrt(xx), math.sqrt(yy), float(l1), float(l2sq), float(linf), int(n))


Vector = torch.Tensor | Sequence[torch.Tensor]


def paired_vectors(
    op: str, names: Sequence[str], vectors: Sequence[Any], *, check_finite: bool = False
) -> list[list[torch.Tensor]]:
    """Validate several weight vectors that pair up tensor by tensor (same count, shapes, device)."""
    lists = [v.as_vector(op, n, x) for n, x in zip(names, vectors, strict=True)]
    first = lists[0]
    named: list[tuple[str, torch.Tensor]] = []
    for name, lst in zip(names, lists, strict=True):
        if len(lst) != len(first):
            raise ValueError(f"{op}: {name} has {len(lst)} tensors but {names[0]} has {len(first)}")
        for i, t in enumerate(lst):
            tn = name if len(lst) == 1 else f"{name}[{i}]"
            v.check_dtype(op, tn, t)
            if t.shape != first[i].shape:
                f0 = names[0] if len(first) == 1 else f"{names[0]}[{i}]"
                raise ValueError(
                    f"{op}: {tn} has shape {tuple(t.shape)} but {f0} has shape {tuple(first[i].shape)}; "
                    "shapes must match"
                )
            named.append((tn, t))
    v.check_same_device(op, named)
    if check_finite:
        v.check_finite(op, named)
    return lists


def _flatten(x: Any) -> list[torch.Tensor]:
    return [x] if isinstance(x, torch.Tensor) else [t for item in x for t in _flatten(item)]


def _contiguous_nested(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x if x.is_contiguous() else x.contiguous()
    return [_contiguous_nested(item) for item in x]


def run_reduction(op: str, primitive: str, args: Sequence[Any]) -> Any:
    """Dispatch a reduction primitive over validated (nested) tensor lists; contiguous for fast backends."""
    backend, fn = select(op, primitive, _flatten(args))
    with torch.no_grad():
        if backend == "reference":
            return fn(*args)
        return fn(*_contiguous_nested(args))


def pair_stats(a: Vector, b: Vector, *, check_finite: bool = False) -> PairStats:
    """dot, |a|, |b|, |a-b|_1, |a-b|_2, |a-b|_inf and cosine distance of two vectors, in one pass.

    Args:
        a, b: each a tensor or a sequence of tensors (a state dict's values) treated as one long
            vector without concatenating; paired tensor by tensor, shapes equal; float32, bfloat16
            or float16 (dtypes may differ).
        check_finite: raise if an input holds NaN or Inf.

    Returns:
        PairStats. Accumulation: fp32 within blocks of 4096 elements, fp64 across blocks, identical
        for any thread count (the reference backend uses fp64 throughout).

    Raises:
        TypeError / ValueError naming the argument (dtype, tensor count, shape, device, empty).
    """
    op = "pair_stats"
    lists = paired_vectors(op, ["a", "b"], [a, b], check_finite=check_finite)
    return PairStats.from_sums(*run_reduction(op, "pair_stats", lists))


def all_finite(t: torch.Tensor) -> bool:
    """True when every element of `t` is finite: one native pass (|t|^2 is finite unless an element
    is NaN, Inf or beyond ~1.8e19), with torch's exact elementwise check only to confirm a suspicion."""
    if t.numel() == 0:
        return True
    flat = t.reshape(-1)
    if math.isfinite(pair_stats(flat, flat).norm_a):
        return True
    return bool(torch.isfinite(t).all())
