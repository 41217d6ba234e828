"""stamp / stamp_ / stamp_tensors_: every backend bit for bit against an independent numpy oracle."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fpcore
from fpcore import _native
from fpcore.testing import assert_bitwise_equal, sample, ulp_distance
from tests.conftest import INTERPRETED, size_ok

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SIZES = [0, 1, 7, 31, 4097, (1 << 20) + 3]


def oracle(base, vectors, alphas, out_dtype):
    """The spec, written independently of fpcore: numpy float32 ops (each rounded), one final cast."""
    acc = base.float().cpu().numpy().astype(np.float32)
    with np.errstate(all="ignore"):
        for v, a in zip(vectors, alphas, strict=True):
            acc = acc + np.float32(a) * v.float().cpu().numpy()
    return torch.from_numpy(np.ascontiguousarray(acc)).to(out_dtype)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("bdt,vdt,odt", list(itertools.product(DTYPES, DTYPES, DTYPES)))
def test_stamp_bitexact(backend, n, bdt, vdt, odt):
    name, dev = backend
    big_interpreted = name == "triton" and INTERPRETED and n > 4097 and (bdt, vdt) != (torch.bfloat16, torch.float32)
    if not size_ok(name, n) or big_interpreted:
        pytest.skip("interpreter: small sizes only")
    base = sample(n, bdt, seed=n + 1, device=dev, special=True)
    vec = sample(n, vdt, seed=n + 2, device=dev, special=True, scale=0.01)
    out = torch.full((n,), 7.0, dtype=odt, device=dev)  # poisoned: every element must be written
    fpcore.stamp(base, vec, 0.37, out=out)
    assert_bitwise_equal(out.cpu(), oracle(base, [vec], [0.37], odt), what=f"{name} {bdt}+{vdt}->{odt} n={n}")


@pytest.mark.parametrize("nvec", [1, 2, 3, 8])
@pytest.mark.parametrize("dt", [torch.bfloat16, torch.float32])
def test_stamp_many_vectors(backend, nvec, dt):
    name, dev = backend
    n = 4097
    base = sample(n, dt, seed=1, device=dev, special=True)
    vecs = [sample(n, DTYPES[k % 3], seed=10 + k, device=dev, scale=0.1) for k in range(nvec)]
    alphas = [1.0, -1.0, 0.37, 3.0, -0.5, 2.0, 0.001, 1e3][:nvec]
    got = fpcore.stamp(base, vecs, alphas)
    assert_bitwise_equal(got.cpu(), oracle(base, vecs, alphas, dt), what=f"{name} nvec={nvec}")


def test_stamp_strided_and_shaped(backend):
    name, dev = backend
    base = sample(64 * 48, torch.bfloat16, seed=3, device=dev).view(64, 48).t()  # non-contiguous
    vec = sample(48 * 128, torch.float32, seed=4, device=dev).view(48, 128)[:, ::2]  # strided
    out = torch.empty(64, 48, dtype=torch.bfloat16, device=dev).t()  # non-contiguous out
    fpcore.stamp(base, vec, 0.5, out=out)
    want = oracle(base.contiguous(), [vec.contiguous()], [0.5], torch.bfloat16).view(48, 64)
    assert_bitwise_equal(out.cpu(), want, what=name)
    stamped = fpcore.stamp(base, vec)
    assert stamped.shape == base.shape and stamped.dtype == base.dtype


@pytest.mark.parametrize("dt", DTYPES)
def test_stamp_inplace(backend, dt):
    name, dev = backend
    base = sample(70_001 if size_ok(name, 70_001) else 4097, dt, seed=5, device=dev, special=True)
    vec = sample(base.numel(), torch.float32, seed=6, device=dev, scale=0.01)
    want = oracle(base, [vec], [1.0], dt)
    ret = fpcore.stamp_(base, vec)
    assert ret is base
    assert_bitwise_equal(base.cpu(), want, what=f"{name} in place")
    strided = sample(4096, dt, seed=7, device=dev).view(64, 64).t()
    want = oracle(strided.contiguous(), [vec[:4096].view(64, 64)], [2.0], dt).view(64, 64)
    fpcore.stamp_(strided, vec[:4096].view(64, 64), 2.0)
    assert_bitwise_equal(strided.cpu(), want, what=f"{name} strided in place")


def test_stamp_does_not_modify_inputs(backend):
    name, dev = backend
    base = sample(4097, torch.bfloat16, seed=8, device=dev)
    vec = sample(4097, torch.float32, seed=9, device=dev)
    b0, v0 = base.clone(), vec.clone()
    fpcore.stamp(base, vec, 2.0)
    assert torch.equal(base, b0) and torch.equal(vec, v0)


def _state_dict(dev, dtype, seed, shapes):
    return {
        f"layer{i}.w": sample(int(np.prod(s)), dtype, seed=seed + i, device=dev).view(s) for i, s in enumerate(shapes)
    }


SHAPES = [(0,), (1,), (7,), (33, 31), (4097,), (128, 64), (3, 5, 7), (1000,)]


@pytest.mark.parametrize("vdt", [torch.bfloat16, torch.float32])
def test_stamp_tensors_state_dict(backend, vdt):
    name, dev = backend
    bases = _state_dict(dev, torch.bfloat16, 100, SHAPES)
    bases["mixed.fp32"] = sample(999, torch.float32, seed=7, device=dev)
    bases["strided"] = sample(64 * 32, torch.float16, seed=8, device=dev).view(64, 32).t()
    tau = {
        k: sample(t.numel(), vdt, seed=200 + i, device=dev, scale=0.01).view(t.shape)
        for i, (k, t) in enumerate(bases.items())
    }
    want = {k: oracle(t.contiguous(), [tau[k].contiguous()], [0.7], t.dtype).view(t.shape) for k, t in bases.items()}
    ret = fpcore.stamp_tensors_(bases, dict(reversed(list(tau.items()))), 0.7)  # matched by name, not order
    assert ret is bases
    for k in bases:
        assert_bitwise_equal(bases[k].cpu(), want[k], what=f"{name} {k}")


def test_stamp_tensors_list_of_vectors(backend):
    name, dev = backend
    bases = [sample(n, torch.bfloat16, seed=n, device=dev) for n in (5, 4097, 31)]
    t1 = [sample(b.numel(), torch.float32, seed=50 + i, device=dev) for i, b in enumerate(bases)]
    t2 = [sample(b.numel(), torch.bfloat16, seed=60 + i, device=dev) for i, b in enumerate(bases)]
    want = [oracle(b, [x, y], [1.0, -0.25], torch.bfloat16) for b, x, y in zip(bases, t1, t2, strict=True)]
    fpcore.stamp_tensors_(bases, [t1, t2], [1.0, -0.25])
    for b, w in zip(bases, want, strict=True):
        assert_bitwise_equal(b.cpu(), w, what=name)


@pytest.mark.skipif(not _native.HAS_NATIVE, reason="fpcore._C not loaded")
def test_threads_do_not_change_results():
    base = sample(3_000_001, torch.bfloat16, seed=11, special=True)
    vec = sample(3_000_001, torch.float32, seed=12, scale=0.01)
    outs = []
    with fpcore.use_backend("cpu"):
        for threads in (1, 2):
            fpcore.set_num_threads(threads)
            outs.append(fpcore.stamp(base, vec, 0.3))
    fpcore.set_num_threads(torch.get_num_threads())
    assert_bitwise_equal(outs[0], outs[1], what="1 vs 2 threads")


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 3000),
    alpha=st.floats(-4, 4, allow_nan=False, allow_subnormal=False),
    seed=st.integers(0, 2**31 - 1),
)
def test_stamp_then_unstamp_returns_input(n, alpha, seed):
    """fp32: (x + a*t) + (-a)*t comes back within 1 ulp when a*t is small next to x."""
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed)) + 4.0
    t = torch.rand(n, generator=torch.Generator().manual_seed(seed + 1)) * 1e-3
    back = fpcore.stamp(fpcore.stamp(x, t, alpha), t, -alpha)
    assert ulp_distance(back, x) <= 1


# ---- bad input: clear errors naming the op and the argument ----


def test_errors_dtype_and_types():
    x = torch.zeros(4)
    with pytest.raises(TypeError, match=r"stamp: base has dtype torch.int32"):
        fpcore.stamp(torch.zeros(4, dtype=torch.int32), x)
    with pytest.raises(TypeError, match=r"stamp: vector has dtype torch.float64"):
        fpcore.stamp(x, torch.zeros(4, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"stamp: base must be a torch.Tensor"):
        fpcore.stamp([1.0, 2.0], x)
    with pytest.raises(TypeError, match=r"stamp: vector\[1\] must be a torch.Tensor"):
        fpcore.stamp(x, [x, 3.0])
    with pytest.raises(TypeError, match=r"extract: result dtype torch.int8"):
        fpcore.extract(x, x, dtype=torch.int8)


def test_errors_shapes_counts_alpha():
    x = torch.zeros(4)
    with pytest.raises(ValueError, match=r"stamp: vector has shape \(5,\) but base has shape \(4,\)"):
        fpcore.stamp(x, torch.zeros(5))
    with pytest.raises(ValueError, match=r"no broadcasting"):
        fpcore.stamp(torch.zeros(2, 4), torch.zeros(4))
    with pytest.raises(ValueError, match=r"stamp: got 9 vectors; at most 8"):
        fpcore.stamp(x, [x] * 9)
    with pytest.raises(ValueError, match=r"stamp: alpha has 1 values but there are 2 vectors"):
        fpcore.stamp(x, [x, x], [1.0])
    with pytest.raises(ValueError, match=r"stamp: vector is an empty sequence"):
        fpcore.stamp(x, [])
    with pytest.raises(ValueError, match=r"stamp: out has shape \(3,\) but base has shape \(4,\)"):
        fpcore.stamp(x, x, out=torch.zeros(3))
    with pytest.raises(ValueError, match=r"stamp_tensors_: bases and vectors name different tensors"):
        fpcore.stamp_tensors_({"a": x}, {"b": x})
    with pytest.raises(ValueError, match=r"stamp_tensors_: bases has 2 tensors but vectors has 1"):
        fpcore.stamp_tensors_([x, x.clone()], [x])


def test_errors_device_overlap_grad_finite():
    x = torch.zeros(4)
    with pytest.raises(ValueError, match=r"stamp: vector is on meta but base is on cpu"):
        fpcore.stamp(x, torch.zeros(4, device="meta"))
    buf = torch.zeros(10)
    with pytest.raises(ValueError, match=r"stamp: out overlaps base"):
        fpcore.stamp(buf[0:4], x, out=buf[1:5])
    with pytest.raises(ValueError, match=r"stamp: out overlaps vector"):
        fpcore.stamp(x, buf[0:4], out=buf[2:6])
    with pytest.raises(ValueError, match=r"internal overlap"):
        fpcore.stamp(x, x, out=torch.zeros(1).expand(4))
    leaf = torch.zeros(4, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"stamp_: base requires grad"):
        fpcore.stamp_(leaf, x)
    with torch.no_grad():
        fpcore.stamp_(leaf, torch.ones(4))
    assert leaf.detach().sum() == 4
    bad = torch.tensor([1.0, float("nan"), 2.0, 3.0])
    with pytest.raises(ValueError, match=r"stamp: vector has 1 non-finite value"):
        fpcore.stamp(x, bad, check_finite=True)
    assert torch.isnan(fpcore.stamp(x, bad)).sum() == 1  # NaN propagates by default


def test_forced_backend_refusal_and_unknown(monkeypatch):
    meta = torch.zeros(4, device="meta")
    with (
        fpcore.use_backend("cpu"),
        pytest.raises(RuntimeError, match=r"stamp: backend 'cpu' was forced but cannot run"),
    ):
        fpcore.stamp(meta, meta)
    monkeypatch.setenv("FPCORE_BACKEND", "gpu9000")
    with pytest.raises(ValueError, match=r"FPCORE_BACKEND='gpu9000' is not a backend"):
        fpcore.stamp(torch.zeros(2), torch.zeros(2))
