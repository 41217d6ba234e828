"""matching_loss and projection: one pass over three vectors, against float64 formulas."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fpcore
from fpcore.testing import sample


def f64(vec):
    vec = [vec] if isinstance(vec, torch.Tensor) else vec
    return np.concatenate([t.float().cpu().numpy().ravel() for t in vec])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_matching_loss_vs_oracle(backend, dtype):
    name, dev = backend
    sizes = [4097, 3, 20_000] if name != "triton" else [4097, 3]
    start = [sample(n, dtype, seed=i, device=dev) for i, n in enumerate(sizes)]
    target = [sample(n, dtype, seed=10 + i, device=dev) for i, n in enumerate(sizes)]
    reached = [(s.float() * 0.3 + t.float() * 0.7).to(dtype) for s, t in zip(start, target, strict=True)]
    got = fpcore.matching_loss(start, reached, target)
    s, r, t = f64(start), f64(reached), f64(target)
    want = float(((r - t).astype(np.float64) ** 2).sum() / ((s - t).astype(np.float64) ** 2).sum())
    assert got == pytest.approx(want, rel=1e-5)
    batch = fpcore.matching_loss_batch([(start, reached, target), (start, start, target), (start, target, target)])
    assert batch[0] == pytest.approx(got, rel=1e-12) and batch[1] == 1.0 and batch[2] == 0.0


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4000), seed=st.integers(0, 2**31 - 1))
def test_property_matching_loss_start_is_one(n, seed):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(n, generator=g), torch.randn(n, generator=g)
    if torch.equal(s, t):
        return
    assert fpcore.matching_loss(s, s, t) == 1.0


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.5, -2.0])
def test_projection_reads_back_alpha(backend, alpha):
    name, dev = backend
    base = sample(30_000 if name != "triton" else 4097, torch.float32, seed=1, device=dev)
    tau = sample(base.numel(), torch.float32, seed=2, device=dev, scale=1e-2)
    suspect = fpcore.stamp(base, tau, alpha)
    p = fpcore.projection(suspect, base, tau)
    assert p.alpha_hat == pytest.approx(alpha, abs=1e-4)
    if alpha != 0.0:
        assert p.cosine == pytest.approx(math.copysign(1.0, alpha), abs=1e-4)
    else:
        assert math.isnan(p.cosine)


def test_projection_unrelated_model_is_near_zero(backend):
    name, dev = backend
    n = 50_000 if name != "triton" else 4097
    base = sample(n, torch.bfloat16, seed=3, device=dev)
    tau = sample(n, torch.bfloat16, seed=4, device=dev, scale=1e-2)
    other = (base.float() + 1e-2 * torch.randn(n, generator=torch.Generator().manual_seed(5)).to(dev)).bfloat16()
    p = fpcore.projection(other, base, tau)
    assert abs(p.cosine) < 0.05


def test_errors():
    x = torch.ones(4)
    with pytest.raises(ValueError, match=r"matching_loss: start equals target"):
        fpcore.matching_loss(x, x * 2, x)
    with pytest.raises(ValueError, match=r"projection: vector is all zeros"):
        fpcore.projection(x, x, torch.zeros(4))
    with pytest.raises(ValueError, match=r"matching_loss: target has shape \(3,\) but start has shape \(4,\)"):
        fpcore.matching_loss(x, x, torch.ones(3))
    with pytest.raises(ValueError, match=r"matching_loss_batch: triples\[0\] must be"):
        fpcore.matching_loss_batch([(x, x)])
