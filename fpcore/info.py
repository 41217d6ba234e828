"""`python -m fpcore.info [--json]`: what is built and available here, and why not; and which optional
extras (pip install 'fpcore[EXTRA]') are installed, package by package."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any


def collect() -> dict[str, Any]:
    """Versions, backends (available or why not), native build flags, SIMD level and threads, and
    the optional extras: each package, installed or not, and its version."""
    import numpy
    import torch

    from fpcore import __version__, _dispatch, _extras, _native

    info: dict[str, Any] = {
        "fpcore": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception as exc:
        info["triton"] = None
        info["triton_error"] = f"{type(exc).__name__}: {exc}"
    info["native"] = {"loaded": _native.HAS_NATIVE, "error": _native.NATIVE_LOAD_ERROR}
    if _native._C is not None:
        info["native"].update(dict(_native._C.build_info()))
    info["backends"] = {name: {"available": why is None, "reason": why} for name, why in _dispatch.available().items()}
    info["env"] = {
        k: os.environ.get(k) for k in ("FPCORE_BACKEND", "FPCORE_SIMD", "TRITON_INTERPRET", "OMP_NUM_THREADS")
    }
    info["extras"] = {
        extra: {"installed": all(p["installed"] for p in pkgs), "packages": pkgs}
        for extra, pkgs in _extras.status().items()
    }
    return info


def _print_text(info: dict[str, Any]) -> None:
    print(f"fpcore {info['fpcore']}  python {info['python']}  torch {info['torch']}  triton {info['triton']}")
    nat = info["native"]
    if nat["loaded"]:
        print(
            f"native: loaded ({nat.get('compiler')}; openmp={nat.get('openmp')}, threads={nat.get('threads')}; "
            f"simd detected={nat.get('simd_detected')} active={nat.get('simd_active')}, "
            f"avx512bf16={nat.get('avx512bf16')}; build={nat.get('build_type')})"
        )
    else:
        print(f"native: NOT loaded ({nat['error']})")
    print("backends (priority order):")
    for name, b in info["backends"].items():
        print(f"  {name:9s} {'available' if b['available'] else 'unavailable: ' + str(b['reason'])}")
    if info["cuda_available"]:
        print(f"cuda: {info['cuda_device']}")
    print("optional extras (pip install 'fpcore[EXTRA]'):")
    for extra, e in info["extras"].items():
        pkgs = ", ".join(
            f"{p['package']} {p['version']}" if p["installed"] else f"{p['package']} (not installed)"
            for p in e["packages"]
        )
        some = any(p["installed"] for p in e["packages"])
        state = "installed" if e["installed"] else ("partly" if some else "missing")
        print(f"  {extra:7s} {state:10s} {pkgs}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fpcore.info", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = parser.parse_args(argv)
    info = collect()
    if args.json:
        json.dump(info, sys.stdout, indent=2, default=str)
        print()
    else:
        _print_text(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
