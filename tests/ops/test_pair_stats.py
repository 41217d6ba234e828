"""pair_stats: every backend within the stated tolerance of a float64 oracle; deterministic."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fpcore
from fpcore import _native
from fpcore.testing import RTOL_POSITIVE, RTOL_SIGNED, sample
from tests.conftest import size_ok

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def oracle(xs, ys):
    """float64 sums written independently of fpcore (numpy), differences formed in fp32."""
    x = np.concatenate([t.float().cpu().numpy().ravel() for t in xs]) if xs else np.zeros(0)
    y = np.concatenate([t.float().cpu().numpy().ravel() for t in ys]) if ys else np.zeros(0)
    d = (x - y).astype(np.float64)
    x, y = x.astype(np.float64), y.astype(np.float64)
    return {
        "dot": float(x @ y),
        "xx": float(x @ x),
        "yy": float(y @ y),
        "l1": float(np.abs(d).sum()),
        "l2sq": float(d @ d),
        "linf": float(np.abs(d).max()) if d.size else 0.0,
        "cond": float(np.abs(x) @ np.abs(y)),
        "n": x.size,
    }


def check(name, got, want):
    rp, rs = RTOL_POSITIVE[name], RTOL_SIGNED[name]
    assert got.n == want["n"]
    assert math.isclose(got.norm_a**2, want["xx"], rel_tol=rp + 1e-12, abs_tol=1e-300)
    assert math.isclose(got.norm_b**2, want["yy"], rel_tol=rp + 1e-12, abs_tol=1e-300)
    assert math.isclose(got.l1, want["l1"], rel_tol=rp + 1e-12, abs_tol=1e-300)
    assert math.isclose(got.l2sq, want["l2sq"], rel_tol=rp + 1e-12, abs_tol=1e-300)
    assert got.linf == want["linf"]
    assert abs(got.dot - want["dot"]) <= rs * want["cond"] + 1e-12 * want["cond"]


@pytest.mark.parametrize("n", [0, 1, 7, 31, 4097, (1 << 20) + 3])
@pytest.mark.parametrize("adt", DTYPES)
@pytest.mark.parametrize("bdt", DTYPES)
def test_pair_stats_vs_oracle(backend, n, adt, bdt):
    name, dev = backend
    if not size_ok(name, n):
        pytest.skip("interpreter: small sizes only")
    a = sample(n, adt, seed=n, device=dev)
    b = sample(n, bdt, seed=n + 1, device=dev)
    check(name, fpcore.pair_stats(a, b), oracle([a], [b]))


@pytest.mark.parametrize("sizes", [[0, 5, 4096, 4097, 100_000], [1], [3, 0, 0, 9000]])
def test_pair_stats_lists(backend, sizes):
    name, dev = backend
    xs = [sample(n, torch.bfloat16, seed=i, device=dev) for i, n in enumerate(sizes)]
    ys = [sample(n, torch.float32, seed=100 + i, device=dev) for i, n in enumerate(sizes)]
    check(name, fpcore.pair_stats(xs, ys), oracle(xs, ys))
    as_dict = fpcore.pair_stats({f"t{i}": x for i, x in enumerate(xs)}, ys)
    assert as_dict.n == sum(sizes)


def test_pair_stats_strided(backend):
    name, dev = backend
    a = sample(96 * 64, torch.float32, seed=1, device=dev).view(96, 64).t()
    b = sample(64 * 192, torch.bfloat16, seed=2, device=dev).view(64, 192)[:, ::2]
    check(name, fpcore.pair_stats(a, b), oracle([a.contiguous()], [b.contiguous()]))


def test_pair_stats_nan_inf_propagate(backend):
    name, dev = backend
    a = sample(5000, torch.float32, seed=3, device=dev)
    b = a.clone()
    b[1234] = float("nan")
    s = fpcore.pair_stats(a, b)
    assert math.isnan(s.l2sq) and math.isnan(s.linf) and math.isnan(s.l1) and math.isnan(s.dot)
    b[1234] = float("inf")
    s = fpcore.pair_stats(a, b)
    assert s.linf == math.inf and s.l2sq == math.inf


def test_cosine_and_norms(backend):
    name, dev = backend
    a = sample(10_000, torch.float32, seed=4, device=dev)
    s = fpcore.pair_stats(a, a)
    assert abs(s.cosine) < 1e-12 and s.l2 == 0 and s.linf == 0
    s = fpcore.pair_stats(a, -a)
    assert abs(s.cosine - 2.0) < 1e-9
    z = torch.zeros_like(a)
    assert math.isnan(fpcore.pair_stats(a, z).cosine)


@pytest.mark.skipif(not _native.HAS_NATIVE, reason="fpcore._C not loaded")
@pytest.mark.parametrize("dt", [torch.float32, torch.bfloat16])
def test_pair_stats_threads_identical(dt):
    a = sample(3_000_017, dt, seed=5)
    b = sample(3_000_017, dt, seed=6)
    res = []
    with fpcore.use_backend("cpu"):
        for threads in (1, 2):
            fpcore.set_num_threads(threads)
            res.append(fpcore.pair_stats([a, b[:1000]], [b, a[:1000]]))
    fpcore.set_num_threads(torch.get_num_threads())
    assert res[0] == res[1]  # every field identical, not just close


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5000), seed=st.integers(0, 2**31 - 1), shift=st.floats(-10, 10))
def test_property_l2_identity(n, seed, shift):
    """|a-b|^2 = |a|^2 + |b|^2 - 2<a,b> (within the cancellation the identity suffers)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, generator=g) + shift
    b = torch.randn(n, generator=g)
    s = fpcore.pair_stats(a, b)
    ident = s.norm_a**2 + s.norm_b**2 - 2 * s.dot
    scale = s.norm_a**2 + s.norm_b**2
    assert abs(s.l2sq - ident) <= 1e-5 * scale + 1e-9


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5000), seed=st.integers(0, 2**31 - 1))
def test_property_cosine_self_is_zero(n, seed):
    a = torch.randn(n, generator=torch.Generator().manual_seed(seed)).bfloat16()
    assert abs(fpcore.pair_stats(a, a).cosine) < 1e-9


def test_pair_stats_errors():
    x = torch.zeros(4)
    with pytest.raises(ValueError, match=r"pair_stats: b has 2 tensors but a has 1"):
        fpcore.pair_stats(x, [x, x])
    with pytest.raises(ValueError, match=r"pair_stats: b has shape \(5,\) but a has shape \(4,\)"):
        fpcore.pair_stats(x, torch.zeros(5))
    with pytest.raises(TypeError, match=r"pair_stats: a\[1\] has dtype torch.int32"):
        fpcore.pair_stats([x, torch.zeros(2, dtype=torch.int32)], [x, x])
    with pytest.raises(ValueError, match=r"pair_stats: a is an empty sequence"):
        fpcore.pair_stats([], [])
    with pytest.raises(ValueError, match=r"pair_stats: b is on meta but a is on cpu"):
        fpcore.pair_stats(x, torch.zeros(4, device="meta"))
    with pytest.raises(ValueError, match=r"pair_stats: b has 1 non-finite"):
        fpcore.pair_stats(x, torch.tensor([0, 0, 0, float("nan")]), check_finite=True)
