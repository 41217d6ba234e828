"""Chooses a backend per call: triton > cpu > reference, by device and dtype.

``FPCORE_BACKEND=<name>`` (or ``with fpcore.use_backend(name):``) forces one; a forced backend that
cannot run raises, it never falls back silently. When nothing fits, the error lists every backend
and why it refused.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch

from fpcore import _native
from fpcore._forced import BACKENDS, forced_backend, use_backend

__all__ = ["BACKENDS", "SUPPORTED_DTYPES", "available", "forced_backend", "refusal", "select", "use_backend"]

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _triton_refusal(tensors: Sequence[torch.Tensor]) -> str | None:
    try:
        from fpcore.backends.triton import unavailable_reason
    except Exception as exc:  # pragma: no cover - broken install
        return f"the triton backend failed to import ({type(exc).__name__}: {exc})"
    return unavailable_reason(tensors)


def _cpu_refusal(tensors: Sequence[torch.Tensor]) -> str | None:
    if not _native.HAS_NATIVE:
        return f"fpcore._C is not available ({_native.NATIVE_LOAD_ERROR}); {_native.REBUILD_HINT}"
    devs = {t.device.type for t in tensors}
    if devs - {"cpu"}:
        return f"tensors are on {', '.join(sorted(devs))}; the cpu backend needs CPU tensors"
    return None


def refusal(backend: str, tensors: Sequence[torch.Tensor]) -> str | None:
    """Why `backend` cannot run on these tensors, or None when it can."""
    if backend == "reference":
        return None
    bad = sorted({str(t.dtype) for t in tensors if t.dtype not in SUPPORTED_DTYPES})
    if bad:
        return f"dtype {', '.join(bad)} is not supported (float32, bfloat16, float16)"
    if backend == "cpu":
        return _cpu_refusal(tensors)
    if backend == "triton":
        return _triton_refusal(tensors)
    raise ValueError(f"unknown backend {backend!r}")


def _ops(backend: str) -> dict[str, Callable]:
    if backend == "reference":
        from fpcore.backends.reference import OPS
    elif backend == "cpu":
        from fpcore.backends.cpu import OPS
    else:
        from fpcore.backends.triton import OPS
    return OPS


def select(op: str, primitive: str, tensors: Sequence[torch.Tensor]) -> tuple[str, Callable]:
    """The (backend name, function) that runs `primitive` for the public `op` on `tensors`.

    Raises RuntimeError naming the op when the forced backend refuses, or when none fits.
    """
    forced = forced_backend()
    if forced is not None:
        why = refusal(forced, tensors)
        if why is not None:
            raise RuntimeError(f"{op}: backend {forced!r} was forced but cannot run: {why}")
        return forced, _ops(forced)[primitive]
    reasons = []
    for name in BACKENDS:
        if name == "triton" and not any(t.is_cuda for t in tensors):
            reasons.append("triton: tensors are not on CUDA")
            continue
        why = refusal(name, tensors)
        if why is None:
            return name, _ops(name)[primitive]
        reasons.append(f"{name}: {why}")
    raise RuntimeError(f"{op}: no backend can run this call:\n  " + "\n  ".join(reasons))  # pragma: no cover


def available() -> dict[str, str | None]:
    """Each backend -> None if it can run on this machine's default tensors, else why not."""
    probe_dev = "cuda" if torch.cuda.is_available() else "cpu"
    probe = [torch.empty(0, device=probe_dev)]
    out: dict[str, str | None] = {}
    for name in BACKENDS:
        if name == "triton" and probe_dev == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            out[name] = _triton_refusal(probe) or "no CUDA device"
            continue
        out[name] = refusal(name, probe if name != "cpu" else [torch.empty(0)])
    return out
