"""Triton backend: CUDA tensors, or CPU tensors under the interpreter (TRITON_INTERPRET=1).

Importing this package never imports triton: the kernels (``.stamp``, ``.pair_stats``) load on the
first call, so the package imports where triton is missing and ``unavailable_reason`` says why it
cannot run. Whether the kernels run compiled or interpreted is fixed when they load: triton reads
TRITON_INTERPRET when a kernel is defined.

Same primitives and signatures as fpcore.backends.reference (the spec and the test oracle).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Sequence

import torch

Vector = Sequence[torch.Tensor]

_KERNEL_MODULES = (f"{__name__}.stamp", f"{__name__}.pair_stats", f"{__name__}.trace")


def _triton_import_error() -> str | None:
    try:
        importlib.import_module("triton")
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "triton":
            return "triton is not installed (pip install triton)"
        return f"triton failed to import: {exc}"
    return None


def _interpreting() -> bool:
    """Whether the kernels run (or, not loaded yet, would run) in triton's interpreter."""
    stamp_mod = sys.modules.get(_KERNEL_MODULES[0])
    if stamp_mod is not None:
        from ._common import interpreted

        return interpreted(stamp_mod._stamp_kernel)
    return os.environ.get("TRITON_INTERPRET") == "1"


def _flatten(tensors: object) -> Iterable[torch.Tensor]:
    if isinstance(tensors, torch.Tensor):
        yield tensors
    elif isinstance(tensors, (list, tuple)):
        for t in tensors:
            yield from _flatten(t)


def unavailable_reason(tensors: Iterable[object]) -> str | None:
    """None when this backend can run on ``tensors`` (nested lists allowed), else a short reason."""
    err = _triton_import_error()
    if err is not None:
        return err
    devices = sorted({t.device.type for t in _flatten(tensors)})
    interpreting = _interpreting()
    if devices == ["cuda"]:
        if interpreting:
            return "the triton interpreter (TRITON_INTERPRET=1) runs on cpu tensors; these are on cuda"
        return None
    if devices == ["cpu"] or not devices:
        if interpreting:
            return None
        if not devices:
            return None if torch.cuda.is_available() else "no CUDA device (and TRITON_INTERPRET is not 1)"
        return "tensors are on cpu; the triton backend needs CUDA tensors (or TRITON_INTERPRET=1)"
    return f"tensors are on {', '.join(devices)}; the triton backend needs all of them on cuda"


def stamp_triton(
    out: torch.Tensor, base: torch.Tensor, vectors: Vector, alphas: Sequence[float], code: object = None
) -> None:
    """out = base + sum_k alphas[k] * vectors[k], fp32 math, one rounding to out.dtype (writes out);
    then a licensee code's move, if given."""
    from .stamp import stamp_triton as impl

    impl(out, base, vectors, alphas, code)


def stamp_multi_triton(
    outs: Vector, bases: Vector, vectors: Sequence[Vector], alphas: Sequence[float], codes: Sequence | None = None
) -> None:
    """stamp_triton over many tensors; vectors[k][i] is vector k's tensor i (one launch per dtype signature)."""
    from .stamp import stamp_multi_triton as impl

    impl(outs, bases, vectors, alphas, codes)


def pair_stats_triton(xs: Vector, ys: Vector) -> tuple[float, float, float, float, float, float, int]:
    """(<x,y>, |x|^2, |y|^2, sum|x-y|, sum (x-y)^2, max|x-y|, n) over the flattened lists."""
    from .pair_stats import pair_stats_triton as impl

    return impl(xs, ys)


def trajectory_consecutive_triton(ckpts: Sequence[Vector]) -> dict[str, list[float]]:
    """norm2[t] = |theta_t|^2 for every t; dot, l1, l2sq, linf for each pair (theta_t, theta_t+1)."""
    from .pair_stats import trajectory_consecutive_triton as impl

    return impl(ckpts)


def trajectory_all_triton(ckpts: Sequence[Vector]) -> tuple[list[float], list[float]]:
    """Row-major T*T <theta_i, theta_j> and |theta_i - theta_j|^2 (from the differences)."""
    from .pair_stats import trajectory_all_triton as impl

    return impl(ckpts)


def triple_stats_triton(xs: Vector, ys: Vector, zs: Vector) -> tuple[float, float, float, float, int]:
    """d = x - y: (<d,z>, |d|^2, |z|^2, |z-y|^2, n)."""
    from .pair_stats import triple_stats_triton as impl

    return impl(xs, ys, zs)


def trace_sums_triton(suspect: torch.Tensor, ref: torch.Tensor, code: object) -> tuple[torch.Tensor, ...]:
    """(A [S, 16], W, Q, U) float64: the licensee code's trace sums (fpcore/backends/reference/code.py)."""
    from .trace import trace_sums_triton as impl

    return impl(suspect, ref, code)


OPS = {
    "trace_sums": trace_sums_triton,
    "stamp": stamp_triton,
    "stamp_multi": stamp_multi_triton,
    "pair_stats": pair_stats_triton,
    "trajectory_consecutive": trajectory_consecutive_triton,
    "trajectory_all": trajectory_all_triton,
    "triple_stats": triple_stats_triton,
}
