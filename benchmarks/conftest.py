"""Benchmark plumbing: sizes, thread settings, and rooflines measured in the same run.

Every fpcore benchmark records in ``extra_info``: bytes moved, GB/s, and the ratio to the roofline
for the same number of bytes, measured here in the same process just before (fp32
``torch.add(a, b, out=c)`` for read+write ops, fp32 ``torch.sum`` for read-only ops). Peers
(torch's bf16 add_, the eager upcast pattern, the Proof-of-Learning loop) are benchmarks of their
own in the same group; ``fpcore bench report`` computes the ratios between them.

FPCORE_BENCH_MB sets the operand size in MB (default 256: the issue's floors are stated for
operands of at least 256 MB; use a small value only for a smoke run).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import pytest
import torch

import fpcore

MB = 1 << 20
BENCH_MB = int(os.environ.get("FPCORE_BENCH_MB", "256"))
THREADS = int(os.environ.get("FPCORE_BENCH_THREADS", str(os.cpu_count() or 1)))


def pytest_configure(config):
    torch.set_num_threads(THREADS)
    if fpcore.HAS_NATIVE:
        fpcore.set_num_threads(THREADS)


def median_seconds(fn: Callable[[], object], *, reps: int = 7, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


_ROOF_CACHE: dict[tuple[str, int], float] = {}


def roofline_gbps(kind: str, nbytes: int) -> float:
    """GB/s of the roofline op over `nbytes` bytes moved, measured now (cached per size)."""
    key = (kind, nbytes)
    if key not in _ROOF_CACHE:
        if kind == "add":  # reads a and b, writes c: 12 bytes per fp32 element
            n = nbytes // 12
            a, b, c = torch.rand(n), torch.rand(n), torch.empty(n)
            sec = median_seconds(lambda: torch.add(a, b, out=c))
            _ROOF_CACHE[key] = 12 * n / sec / 1e9
        elif kind == "sum":  # reads 4 bytes per fp32 element
            n = nbytes // 4
            a = torch.rand(n)
            sec = median_seconds(lambda: torch.sum(a))
            _ROOF_CACHE[key] = 4 * n / sec / 1e9
        else:
            raise ValueError(kind)
    return _ROOF_CACHE[key]


def record(benchmark, *, nbytes: int, roofline: str | None, **extra) -> None:
    """Store bytes, GB/s (from the median) and the same-run roofline ratio in extra_info."""
    med = benchmark.stats.stats.median
    gbps = nbytes / med / 1e9
    benchmark.extra_info.update({"bytes": nbytes, "gbps": round(gbps, 3), "threads": THREADS, **extra})
    if roofline is not None:
        roof = roofline_gbps(roofline, nbytes)
        benchmark.extra_info.update(
            {"roofline": roofline, "roofline_gbps": round(roof, 3), "ratio_to_roofline": round(gbps / roof, 3)}
        )


@pytest.fixture(autouse=True)
def _native_expected():
    if os.environ.get("FPCORE_BENCH_ALLOW_REFERENCE") != "1" and not fpcore.HAS_NATIVE:
        pytest.skip(f"fpcore._C is not loaded ({fpcore.NATIVE_LOAD_ERROR}); run `make native`")
