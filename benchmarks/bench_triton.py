"""GPU benchmarks of the Triton backend against the device-to-device copy roofline (CUDA only).

Each test times its op with triton.testing.do_bench (CUDA events, median) inside benchmark.pedantic
(one round, so pytest-benchmark's own statistics hold that call), and records in extra_info:
``ms`` (the median), ``gbps`` (bytes read plus written over the median) and ``ratio_to_copy`` (over
the ``dst.copy_(src)`` bandwidth measured in the same session, read plus write bytes; also stored
as ``ratio_to_roofline`` with ``roofline="copy"``, the keys benchmarks/conftest.py uses).

Groups: gpu-stamp (1 GiB-class operands and a Llama-2-7B-shaped state dict), gpu-pair-stats.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("the Triton GPU benchmarks need CUDA", allow_module_level=True)
pytest.importorskip("triton", reason="triton is not installed")

from benchmarks._gpu_util import (
    GIB,
    LLAMA2_7B_SHAPES,
    N_1GIB_BF16,
    copy_roofline,
    gbps,
    median_ms,
    numel,
    randn,
    state_dict,
)  # noqa: E402
from fpcore.backends.triton import pair_stats_triton, stamp_multi_triton, stamp_triton  # noqa: E402

STAMP_FLOOR = 0.85  # stamp on 1 GiB bf16 operands must reach this fraction of the copy bandwidth


@pytest.fixture(autouse=True)
def _native_expected():
    """Overrides the conftest's check for fpcore._C: these benchmarks run the Triton kernels alone."""


@pytest.fixture(scope="session")
def copy_gbps() -> float:
    """Device-to-device copy bandwidth (read + write), 1 GiB, measured once per session."""
    return copy_roofline(GIB)[1]


def _record(benchmark, fn: Callable[[], object], nbytes: int, copy_gbps: float) -> float:
    """Time ``fn`` (do_bench median inside one pedantic round); store ms, GB/s, ratio_to_copy. Returns the ratio."""
    ms = benchmark.pedantic(lambda: median_ms(fn), rounds=1, iterations=1)
    rate = gbps(nbytes, ms)
    ratio = rate / copy_gbps
    benchmark.extra_info.update(
        {
            "bytes": nbytes,
            "ms": round(ms, 4),
            "gbps": round(rate, 3),
            "ratio_to_copy": round(ratio, 4),
            "roofline": "copy",  # the conftest's key names, for fpcore.bench.report
            "roofline_gbps": round(copy_gbps, 3),
            "ratio_to_roofline": round(ratio, 4),
            "device": torch.cuda.get_device_name(),
        }
    )
    return ratio


@pytest.fixture(scope="module")
def gib_bf16() -> dict[str, torch.Tensor]:
    n = N_1GIB_BF16
    bufs = {"base": randn(n, torch.bfloat16), "tau": randn(n, torch.bfloat16, scale=1e-3)}
    bufs["out"] = torch.empty_like(bufs["base"])
    yield bufs
    bufs.clear()
    torch.cuda.empty_cache()


@pytest.mark.benchmark(group="gpu-stamp")
def test_copy_roofline(benchmark, copy_gbps):
    """dst.copy_(src) bf16, 1 GiB: the roofline itself (ratio ~1 by construction)."""
    src = randn(N_1GIB_BF16, torch.bfloat16)
    dst = torch.empty_like(src)
    _record(benchmark, lambda: dst.copy_(src), 2 * GIB, copy_gbps)


@pytest.mark.benchmark(group="gpu-stamp")
def test_stamp_bf16_bf16(benchmark, copy_gbps, gib_bf16):
    """stamp_triton: bf16 out = bf16 base + 0.37 * bf16 tau, 1 GiB each (6 bytes per element)."""
    b = gib_bf16
    ratio = _record(benchmark, lambda: stamp_triton(b["out"], b["base"], [b["tau"]], [0.37]), 3 * GIB, copy_gbps)
    assert ratio >= STAMP_FLOOR, f"stamp bf16+bf16 at {ratio:.3f} of copy bandwidth (floor {STAMP_FLOOR})"


@pytest.mark.benchmark(group="gpu-stamp")
def test_stamp_bf16_bf16_licensee_code(benchmark, copy_gbps, gib_bf16):
    """stamp_triton with a licensee code (the code made in the kernel: no extra bytes), 1 GiB each."""
    from fpcore.trace.key import TraceKey

    b = gib_bf16
    code = TraceKey(bytes(range(32))).code("licensee-7", "model.layers.0.mlp.down_proj.weight")
    ratio = _record(benchmark, lambda: stamp_triton(b["out"], b["base"], [b["tau"]], [0.37], code), 3 * GIB, copy_gbps)
    assert ratio >= STAMP_FLOOR, f"coded stamp bf16+bf16 at {ratio:.3f} of copy bandwidth (floor {STAMP_FLOOR})"


@pytest.mark.benchmark(group="gpu-stamp")
def test_stamp_bf16_f32tau(benchmark, copy_gbps, gib_bf16):
    """stamp_triton: bf16 out = bf16 base + 0.37 * fp32 tau (8 bytes per element)."""
    b = gib_bf16
    tau32 = randn(N_1GIB_BF16, torch.float32, scale=1e-3)
    ratio = _record(benchmark, lambda: stamp_triton(b["out"], b["base"], [tau32], [0.37]), 4 * GIB, copy_gbps)
    assert ratio >= STAMP_FLOOR, f"stamp bf16+f32 at {ratio:.3f} of copy bandwidth (floor {STAMP_FLOOR})"


@pytest.mark.benchmark(group="gpu-stamp")
def test_torch_add_bf16(benchmark, copy_gbps, gib_bf16):
    """Baseline: torch a.add_(b), bf16, 1 GiB each."""
    b = gib_bf16
    _record(benchmark, lambda: b["out"].add_(b["tau"]), 3 * GIB, copy_gbps)


@pytest.fixture(scope="module")
def state_7b() -> dict[str, list[torch.Tensor]]:
    """Llama-2-7B-shaped bf16 base and bf16 tau (27 GB together)."""
    sd = {
        "base": state_dict(LLAMA2_7B_SHAPES, torch.bfloat16),
        "tau": state_dict(LLAMA2_7B_SHAPES, torch.bfloat16, 1e-3),
    }
    yield sd
    sd.clear()
    torch.cuda.empty_cache()


@pytest.mark.benchmark(group="gpu-stamp")
def test_foreach_add_7b_bf16(benchmark, copy_gbps, state_7b):
    """Baseline: torch._foreach_add_(base, tau, alpha=0.37) over the 7B bf16 state dict, in place."""
    n = numel(LLAMA2_7B_SHAPES)
    _record(benchmark, lambda: torch._foreach_add_(state_7b["base"], state_7b["tau"], alpha=0.37), 6 * n, copy_gbps)


@pytest.mark.benchmark(group="gpu-stamp")
def test_stamp_multi_7b_bf16(benchmark, copy_gbps, state_7b):
    """stamp_multi_triton over the 7B bf16 state dict with a bf16 tau, in place."""
    n = numel(LLAMA2_7B_SHAPES)
    base, tau = state_7b["base"], state_7b["tau"]
    _record(benchmark, lambda: stamp_multi_triton(base, base, [tau], [0.37]), 6 * n, copy_gbps)


@pytest.fixture(scope="module")
def tau32_7b(state_7b) -> list[torch.Tensor]:
    """An fp32 tau for the 7B bf16 base (the bf16 tau freed first: 27 GB, peak 40.4e9 bytes with the base)."""
    state_7b.pop("tau", None)
    torch.cuda.empty_cache()
    return state_dict(LLAMA2_7B_SHAPES, torch.float32, 1e-3)


@pytest.mark.benchmark(group="gpu-stamp")
def test_stamp_multi_7b_f32tau(benchmark, copy_gbps, state_7b, tau32_7b):
    """stamp_multi_triton over the 7B bf16 state dict with an fp32 tau, in place."""
    n = numel(LLAMA2_7B_SHAPES)
    base = state_7b["base"]
    _record(benchmark, lambda: stamp_multi_triton(base, base, [tau32_7b], [0.37]), 8 * n, copy_gbps)


@pytest.mark.benchmark(group="gpu-stamp")
def test_foreach_add_7b_f32tau(benchmark, copy_gbps, state_7b, tau32_7b):
    """Baseline: torch._foreach_add_(bf16 base, fp32 tau, alpha=0.37): mixed dtypes leave foreach's fast path."""
    n = numel(LLAMA2_7B_SHAPES)
    _record(benchmark, lambda: torch._foreach_add_(state_7b["base"], tau32_7b, alpha=0.37), 8 * n, copy_gbps)


@pytest.mark.benchmark(group="gpu-pair-stats")
def test_pair_stats_bf16(benchmark, copy_gbps, gib_bf16):
    """pair_stats_triton bf16 x bf16, 1 GiB each: read bandwidth against the copy roofline."""
    b = gib_bf16
    _record(benchmark, lambda: pair_stats_triton([b["base"]], [b["tau"]]), 2 * GIB, copy_gbps)
