"""Shared by bench_triton.py and gpu_check.py: the 7B state-dict shapes, inputs, timing, the copy roofline."""

from __future__ import annotations

import torch

GIB = 1 << 30
N_1GIB_BF16 = GIB // 2  # elements of a 1 GiB bf16 operand

# Llama-2-7B: 32 layers of q, k, v, o (4096 x 4096), gate, up, down (11008 x 4096, down transposed)
# and two RMSNorm weights (4096); plus the embedding and the LM head (32000 x 4096). 6.74e9 parameters.
_LAYER = [(4096, 4096)] * 4 + [(11008, 4096), (11008, 4096), (4096, 11008), (4096,), (4096,)]
LLAMA2_7B_SHAPES: list[tuple[int, ...]] = [(32000, 4096)] + _LAYER * 32 + [(32000, 4096)]


def numel(shapes: list[tuple[int, ...]]) -> int:
    total = 0
    for s in shapes:
        n = 1
        for d in s:
            n *= d
        total += n
    return total


def randn(shape: tuple[int, ...] | int, dtype: torch.dtype, device: str = "cuda", scale: float = 1.0) -> torch.Tensor:
    """Random normal values made directly in ``dtype`` on the device (never zeros: they time too well)."""
    t = torch.empty(shape, dtype=dtype, device=device)
    return t.normal_(0.0, scale)


def state_dict(shapes: list[tuple[int, ...]], dtype: torch.dtype, scale: float = 1.0) -> list[torch.Tensor]:
    return [randn(s, dtype, scale=scale) for s in shapes]


def median_ms(fn, warmup: int = 25, rep: int = 100) -> float:
    """Median milliseconds of ``fn`` on the device (triton.testing.do_bench: CUDA events, L2 flushed per call)."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def gbps(nbytes: int, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9


def copy_roofline(nbytes: int = GIB) -> tuple[float, float]:
    """(ms, GB/s) of ``dst.copy_(src)`` over ``nbytes``, counting bytes read plus written."""
    src = randn(nbytes // 2, torch.bfloat16)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src))
    return ms, gbps(2 * nbytes, ms)
