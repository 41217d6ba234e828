"""Which backend the caller forced, if any: ``FPCORE_BACKEND=<name>`` or ``with use_backend(name):``.
No torch here, so torch-free paths (fpcore.rawops) honour the same switch."""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

BACKENDS = ("triton", "cpu", "reference")

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("fpcore_backend", default=None)


def forced_backend() -> str | None:
    """The backend the caller forced (context first, then FPCORE_BACKEND), or None for automatic."""
    name = _forced.get() or os.environ.get("FPCORE_BACKEND") or None
    if name is not None and name not in BACKENDS:
        raise ValueError(f"FPCORE_BACKEND={name!r} is not a backend; expected one of {', '.join(BACKENDS)}")
    return name


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Force a backend inside a ``with`` block (None: automatic choice)."""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"use_backend: {name!r} is not a backend; expected one of {', '.join(BACKENDS)}")
    token = _forced.set(name)
    try:
        yield
    finally:
        _forced.reset(token)
