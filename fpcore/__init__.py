"""fpcore: a native-accelerated engine for model fingerprint vectors (FP-VEC) and proof of training.

The engine's ops (stamp, extract, pair_stats, trajectory_stats, matching_loss, projection) run on
the best backend for their tensors: triton (CUDA), cpu (the native fpcore._C) or reference (plain
torch). ``python -m fpcore.info`` says what is available and why not.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._exports import TENSOR_OPS
from ._native import HAS_NATIVE, NATIVE_LOAD_ERROR

# The tensor API imports torch, which costs a second or more; it is loaded on first use, so
# commands that only stream files (`fpcore stamp`) start without it.
_LAZY = {"use_backend": "fpcore._forced", **dict.fromkeys(TENSOR_OPS, "fpcore.ops")}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'fpcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"


def set_num_threads(n: int) -> None:
    """Threads the native CPU kernels use (OpenMP); default: all cores."""
    from ._native import require_native

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected an int >= 1, got {n!r}")
    require_native("set_num_threads").set_num_threads(n)


def get_num_threads() -> int:
    """Threads the native CPU kernels use (1 when the native extension is not built)."""
    from ._native import HAS_NATIVE, require_native

    return int(require_native("get_num_threads").num_threads()) if HAS_NATIVE else 1


__all__ = ["HAS_NATIVE", "NATIVE_LOAD_ERROR", "__version__", "get_num_threads", "set_num_threads", *_LAZY]
