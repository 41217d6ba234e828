"""Loads the native extension fpcore._C once. The package imports without it."""

from __future__ import annotations

import os
from types import ModuleType

_C: ModuleType | None
NATIVE_LOAD_ERROR: str | None

try:
    from fpcore import _C  # type: ignore[attr-defined, no-redef]

    NATIVE_LOAD_ERROR = None
except ImportError as exc:  # not built, or built for another Python
    _C = None
    NATIVE_LOAD_ERROR = f"{type(exc).__name__}: {exc}"

HAS_NATIVE: bool = _C is not None

REBUILD_HINT = "rebuild it with `make native` (or `pip install -e .` with a C++ compiler and CMake available)"


def require_native(op: str) -> ModuleType:
    """Return fpcore._C, or raise RuntimeError naming the op, why _C is missing and how to rebuild."""
    if _C is None:
        raise RuntimeError(
            f"{op}: the native extension fpcore._C is not available ({NATIVE_LOAD_ERROR}); {REBUILD_HINT}"
        )
    return _C


def expect_native_failed() -> str | None:
    """When FPCORE_EXPECT_NATIVE=1 (CI), the reason _C is missing; else None."""
    if os.environ.get("FPCORE_EXPECT_NATIVE") == "1" and _C is None:
        return NATIVE_LOAD_ERROR or "unknown"
    return None
