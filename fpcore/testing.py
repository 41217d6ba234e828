"""Test helpers shared by tests/ and benchmarks/: inputs with hard values, bitwise checks, tolerances."""

from __future__ import annotations

import math

import torch

# Reductions: the fast backends accumulate fp32 within fixed blocks and fp64 across them; the
# reference accumulates fp64 throughout. Tolerances of a fast backend against the reference:
#   sums of non-negative terms (|x|^2, l1, l2^2): relative RTOL_POSITIVE;
#   signed sums (<x,y>, <d,z>): absolute RTOL_SIGNED * sum |x_i||y_i| (the condition of the sum);
#   max |x - y|: exact (both take the max of the same fp32 differences).
# The reference itself is held to 1e-12: fp64 sums in another order differ in the last bits.
RTOL_POSITIVE = {"reference": 1e-12, "cpu": 1e-5, "triton": 1e-5}
RTOL_SIGNED = {"reference": 1e-12, "cpu": 1e-5, "triton": 1e-5}


def sample(
    n: int,
    dtype: torch.dtype,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    special: bool = False,
    scale: float = 1.0,
) -> torch.Tensor:
    """n values of `dtype`: normals with magnitudes spread over 1e-3..1e3, and, with special=True,
    about 1% hard values: +-0, subnormals, +-inf, NaN, the dtype's max and exact rounding ties."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    x *= torch.pow(10.0, torch.empty(n, dtype=torch.float64).uniform_(-3, 3, generator=g)) * scale
    if special and n:
        fi = torch.finfo(dtype)
        hard = torch.tensor(
            [0.0, -0.0, fi.tiny / 4, -fi.tiny / 3, fi.tiny, math.inf, -math.inf, math.nan, fi.max, -fi.max],
            dtype=torch.float64,
        )
        k = max(1, n // 100)
        idx = torch.randint(0, n, (k,), generator=g)
        x[idx] = hard[torch.randint(0, len(hard), (k,), generator=g)]
    out = x.to(dtype)
    if special and n and dtype == torch.float32:
        # fp32 values exactly halfway between two bf16 / fp16 neighbours (round-to-even ties)
        k = max(1, n // 50)
        idx = torch.randint(0, n, (k,), generator=g)
        bits = out.view(torch.int32)
        bits[idx] = (bits[idx] & ~0xFFFF) | 0x8000
    return out.to(device)


def assert_bitwise_equal(actual: torch.Tensor, expected: torch.Tensor, *, what: str = "") -> None:
    """Identical bits for every element, except that NaN must match NaN (payloads are free)."""
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a = actual.detach().cpu().reshape(-1)
    e = expected.detach().cpu().reshape(-1)
    na, ne = torch.isnan(a), torch.isnan(e)
    assert torch.equal(na, ne), f"{what}: NaN at different positions ({int((na != ne).sum())} differ)"
    ibits = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}[a.element_size()]
    ab, eb = a.view(ibits)[~na], e.view(ibits)[~ne]
    if not torch.equal(ab, eb):
        bad = (ab != eb).nonzero()[:5].reshape(-1)
        av, ev = a[~na][bad].tolist(), e[~ne][bad].tolist()
        raise AssertionError(f"{what}: {int((ab != eb).sum())} of {ab.numel()} elements differ, e.g. {av} vs {ev}")


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in units in the last place between two fp32 tensors (finite values)."""

    def ordered(x: torch.Tensor) -> torch.Tensor:
        i = x.reshape(-1).view(torch.int32).to(torch.int64)
        return torch.where(i < 0, -(i & 0x7FFFFFFF), i)

    if a.numel() == 0:
        return 0
    return int((ordered(a) - ordered(b)).abs().max())
