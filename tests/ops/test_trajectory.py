"""trajectory_stats in its three modes against a float64 oracle."""

import math

import numpy as np
import pytest
import torch

import fpcore
from fpcore import _native
from fpcore.testing import RTOL_POSITIVE, RTOL_SIGNED, sample


def np64(vec):
    return np.concatenate([t.float().cpu().numpy().ravel() for t in vec])


def close(got, want, rtol):
    np.testing.assert_allclose(got, want, rtol=rtol + 1e-12, atol=1e-300)


def make_traj(T, sizes, dtype, dev, seed=0, step=1e-2):
    """A trajectory of small updates (checkpoints close to each other, as in training)."""
    first = [sample(n, torch.float32, seed=seed + i, device=dev) for i, n in enumerate(sizes)]
    ckpts = [first]
    for t in range(1, T):
        ckpts.append(
            [
                p + step * sample(p.numel(), torch.float32, seed=1000 * t + i, device=dev)
                for i, p in enumerate(ckpts[-1])
            ]
        )
    return [[p.to(dtype) for p in ck] for ck in ckpts]


@pytest.mark.parametrize("T", [2, 3, 16])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_consecutive(backend, T, dtype):
    name, dev = backend
    sizes = [4097, 0, 31, 20_000] if name != "triton" else [4097, 31]
    ckpts = make_traj(T, sizes, dtype, dev)
    r = fpcore.trajectory_stats(ckpts)
    flat = [np64(c) for c in ckpts]
    d = [(flat[t + 1] - flat[t]).astype(np.float64) for t in range(T - 1)]  # fp32 differences, widened
    close(r.l2, [math.sqrt(x @ x) for x in d], RTOL_POSITIVE[name])
    close(r.l1, [np.abs(x).sum() for x in d], RTOL_POSITIVE[name])
    assert list(r.linf) == [float(np.abs(x).max()) for x in d]
    f64 = [f.astype(np.float64) for f in flat]
    close(r.norm_a, [math.sqrt(f @ f) for f in f64[:-1]], RTOL_POSITIVE[name])
    close(r.norm_b, [math.sqrt(f @ f) for f in f64[1:]], RTOL_POSITIVE[name])
    for t in range(T - 1):
        assert abs(r.dot[t] - f64[t] @ f64[t + 1]) <= RTOL_SIGNED[name] * (np.abs(f64[t]) @ np.abs(f64[t + 1])) + 1e-12
    assert r.cosine.shape == (T - 1,) and np.all(r.cosine >= -1e-12)
    assert r.n == sum(sizes)


def test_paired(backend):
    name, dev = backend
    ckpts = make_traj(4, [5000, 7], torch.bfloat16, dev, seed=1)
    replayed = [[p.float() + 1e-3 for p in ck] for ck in ckpts]
    r = fpcore.trajectory_stats(ckpts, mode="paired", other=replayed)
    for t in range(4):
        s = fpcore.pair_stats(ckpts[t], replayed[t])
        assert r.l2[t] == pytest.approx(s.l2, rel=1e-12)
        assert r.linf[t] == s.linf and r.l1[t] == pytest.approx(s.l1, rel=1e-12)
    assert r.l2.shape == (4,)


@pytest.mark.parametrize("T", [1, 2, 5, 17])
def test_all(backend, T):
    name, dev = backend
    sizes = [9000, 3, 4096] if name != "triton" else [3000, 3]
    ckpts = make_traj(T, sizes, torch.bfloat16, dev, seed=2, step=1e-3)
    r = fpcore.trajectory_stats(ckpts, mode="all")
    f = [np64(c) for c in ckpts]
    assert r.l2.shape == (T, T) and r.dot.shape == (T, T)
    for i in range(T):
        assert r.l2[i, i] == 0
        for j in range(T):
            d = (f[i] - f[j]).astype(np.float64)
            want = math.sqrt(d @ d)
            assert r.l2[i, j] == pytest.approx(want, rel=RTOL_POSITIVE[name] + 1e-12, abs=1e-300)
            a, b = f[i].astype(np.float64), f[j].astype(np.float64)
            assert abs(r.dot[i, j] - a @ b) <= RTOL_SIGNED[name] * (np.abs(a) @ np.abs(b)) + 1e-12
    np.testing.assert_array_equal(r.l2, r.l2.T)
    assert np.all(np.abs(np.diag(r.cosine)) < 1e-9)


def test_all_near_checkpoints_keep_precision(backend):
    """l2 of checkpoints 1e-6 apart: the Gram identity would lose it, direct differences do not."""
    name, dev = backend
    base = sample(8192, torch.float32, seed=3, device=dev) + 10.0
    ckpts = [[base], [base + 1e-5], [base - 1e-5]]
    r = fpcore.trajectory_stats(ckpts, mode="all")
    want = np.linalg.norm((base + 1e-5).cpu().numpy() - base.cpu().numpy())
    assert r.l2[0, 1] == pytest.approx(want, rel=1e-5)


@pytest.mark.skipif(not _native.HAS_NATIVE, reason="fpcore._C not loaded")
def test_trajectory_threads_identical():
    ckpts = make_traj(5, [600_001, 5], torch.bfloat16, "cpu", seed=4)
    out = []
    with fpcore.use_backend("cpu"):
        for threads in (1, 2):
            fpcore.set_num_threads(threads)
            c = fpcore.trajectory_stats(ckpts)
            a = fpcore.trajectory_stats(ckpts, mode="all")
            out.append((c.l1.tolist(), c.l2.tolist(), c.dot.tolist(), c.norm_a.tolist(), a.l2.tolist(), a.dot.tolist()))
    fpcore.set_num_threads(torch.get_num_threads())
    assert out[0] == out[1]


def test_trajectory_errors():
    x = torch.zeros(4)
    with pytest.raises(ValueError, match=r"trajectory_stats: mode must be one of"):
        fpcore.trajectory_stats([x, x], mode="pairs")
    with pytest.raises(ValueError, match=r"needs at least 2 checkpoints, got 1"):
        fpcore.trajectory_stats([x])
    with pytest.raises(ValueError, match=r"mode 'paired' needs `other` with 2 weight vectors, got None"):
        fpcore.trajectory_stats([x, x], mode="paired")
    with pytest.raises(ValueError, match=r"trajectory_stats: checkpoints\[1\] has shape \(5,\) but checkpoints\[0\]"):
        fpcore.trajectory_stats([x, torch.zeros(5)])
    with pytest.raises(
        ValueError, match=r"trajectory_stats: checkpoints\[2\] has 1 tensors but checkpoints\[0\] has 2"
    ):
        fpcore.trajectory_stats([[x, x], [x, x], [x]])
    with pytest.raises(TypeError, match=r"checkpoints must be a sequence of weight vectors"):
        fpcore.trajectory_stats(x)
