"""The Triton backend against the reference backend (its spec), primitive by primitive.

Without CUDA the kernels run in triton's interpreter on CPU tensors (small sizes: it is slow);
with CUDA the same tests run on the GPU, with larger sizes added.
"""

import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    # Before triton is first imported: its kernels then run in the interpreter, on CPU tensors.
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="triton is not installed")

from fpcore.backends import reference as ref  # noqa: E402
from fpcore.backends import triton as tri  # noqa: E402
from fpcore.testing import RTOL_POSITIVE, RTOL_SIGNED, assert_bitwise_equal, sample  # noqa: E402

ON_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if ON_CUDA else "cpu"
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DT_IDS = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}
SIZES = [0, 1, 7, 31, 4097, (1 << 16) + 3] + ([(1 << 22) + 5] if ON_CUDA else [])
ALPHAS = [1.0, -1.0, 0.37, -2.5, 0.37, 1.0, -1.0, 3.0]
RTOL_P, RTOL_S = RTOL_POSITIVE["triton"], RTOL_SIGNED["triton"]

_why = tri.unavailable_reason([torch.empty(0, device=DEVICE)])
pytestmark = [
    pytest.mark.skipif(_why is not None, reason=f"triton backend unavailable: {_why}"),
    pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning"),  # the interpreter's numpy on inf/NaN
]


def _vals(n: int, dtype: torch.dtype, seed: int, special: bool = True) -> torch.Tensor:
    return sample(n, dtype, seed=seed, device=DEVICE, special=special)


def _stamp_both(out_dt, base, vectors, alphas):
    out = torch.full(base.shape, 7.0, dtype=out_dt, device=DEVICE)  # poisoned: every element must be written
    want = torch.empty_like(out)
    tri.stamp_triton(out, base, vectors, alphas)
    ref.stamp_reference(want, base, vectors, alphas)
    return out, want


# ---- availability -------------------------------------------------------------------------------------


def test_unavailable_reason():
    assert tri.unavailable_reason([torch.empty(3, device=DEVICE)]) is None
    assert tri.unavailable_reason([[torch.empty(3, device=DEVICE)], (torch.empty(1, device=DEVICE),)]) is None
    why = tri.unavailable_reason([torch.empty(3, device="meta")])
    assert isinstance(why, str) and "meta" in why
    assert set(tri.OPS) == set(ref.OPS)


# ---- stamp --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("out_dt", DTYPES, ids=DT_IDS.get)
@pytest.mark.parametrize("base_dt", DTYPES, ids=DT_IDS.get)
@pytest.mark.parametrize("vec_dt", DTYPES, ids=DT_IDS.get)
def test_stamp_all_dtype_combos(out_dt, base_dt, vec_dt):
    n = 4099 if ON_CUDA else 257
    base, vec = _vals(n, base_dt, 1), _vals(n, vec_dt, 2)
    for alpha in (1.0, -1.0, 0.37):
        out, want = _stamp_both(out_dt, base, [vec], [alpha])
        assert_bitwise_equal(out, want, what=f"alpha={alpha}")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("nvec", [0, 1, 2, 3, 8])
def test_stamp_sizes_and_vector_counts(n, nvec):
    dts = [DTYPES[(n + k) % 3] for k in range(nvec + 2)]
    base = _vals(n, dts[0], n)
    vectors = [_vals(n, dts[2 + k], n + 10 + k, special=k == 0) for k in range(nvec)]
    out, want = _stamp_both(dts[1], base, vectors, ALPHAS[:nvec])
    assert_bitwise_equal(out, want, what=f"n={n} nvec={nvec}")


def test_stamp_rounding_ties_and_subnormals():
    """fp32 sums exactly halfway between bf16/fp16 neighbours, and results in the subnormal ranges."""
    g = torch.Generator().manual_seed(5)
    bits = torch.randint(-(2**31), 2**31 - 1, (4096,), generator=g, dtype=torch.int64).to(torch.int32)
    ties = ((bits & ~0xFFFF) | 0x8000).view(torch.float32)  # bf16 ties
    ties16 = ((bits & ~0x1FFF) | 0x1000).view(torch.float32)  # fp16 ties (normal range only)
    tiny = torch.tensor([1e-40, -3e-39, 2e-45, 6e-8, -3e-6, 1e-5, 6.1e-5, 0.0], dtype=torch.float32).repeat(8)
    for base32 in (ties, ties16, tiny):
        base32 = base32.to(DEVICE)
        zero = torch.zeros_like(base32)
        for out_dt in (torch.bfloat16, torch.float16):
            out, want = _stamp_both(out_dt, base32, [zero], [1.0])
            assert_bitwise_equal(out, want, what=f"ties -> {out_dt}")
        sub = torch.tensor([2.0**-130, -(2.0**-133), 2.0**-140], dtype=torch.float32).repeat(64).to(DEVICE)
        for vdt in (torch.bfloat16, torch.float32):
            out, want = _stamp_both(torch.float32, sub.to(vdt), [sub.to(vdt)], [0.5])
            assert_bitwise_equal(out, want, what=f"subnormal operands {vdt}")


def test_stamp_in_place():
    n = SIZES[-1]
    for dt in DTYPES:
        base = _vals(n, dt, 3)
        vec = _vals(n, torch.float32, 4)
        want = torch.empty_like(base)
        ref.stamp_reference(want, base, [vec], [-0.37])
        tri.stamp_triton(base, base, [vec], [-0.37])
        assert_bitwise_equal(base, want, what=f"in place {dt}")


def test_stamp_extract_is_exact_difference():
    """alpha = -1 gives tuned - base exactly in fp32."""
    n = 4097
    tuned, base = _vals(n, torch.bfloat16, 6, special=False), _vals(n, torch.bfloat16, 7, special=False)
    out = torch.empty(n, dtype=torch.float32, device=DEVICE)
    tri.stamp_triton(out, tuned, [base], [-1.0])
    assert torch.equal(out, tuned.float() - base.float())


# ---- stamp_multi --------------------------------------------------------------------------------------


def _multi_case(nvec: int, seed: int):
    sizes = [5, 4096, 9000, 1, 0, 33, (1 << 16) + 3, 8, 100, 4097, 3] + ([(1 << 21) + 1] if ON_CUDA else [])
    sigs = [  # (out, base, vectors): four dtype signatures, interleaved
        (torch.bfloat16, torch.bfloat16, torch.bfloat16),
        (torch.bfloat16, torch.bfloat16, torch.float32),
        (torch.float32, torch.float16, torch.bfloat16),
        (torch.float16, torch.float32, torch.float16),
    ]
    outs, bases, vectors = [], [], [[] for _ in range(nvec)]
    for i, n in enumerate(sizes):
        out_dt, base_dt, vec_dt = sigs[i % len(sigs)]
        outs.append(torch.full((n,), 7.0, dtype=out_dt, device=DEVICE))
        bases.append(_vals(n, base_dt, seed + i))
        for k in range(nvec):
            vectors[k].append(_vals(n, vec_dt if k % 2 == 0 else torch.float32, seed + 100 * (k + 1) + i))
    return outs, bases, vectors, len(sigs)


@pytest.mark.parametrize("nvec", [1, 2, 8])
def test_stamp_multi_mixed_sizes_and_dtypes(nvec):
    from fpcore.backends.triton import _common, stamp

    outs, bases, vectors, nsig = _multi_case(nvec, seed=nvec)
    wants = [torch.empty_like(o) for o in outs]
    alphas = ALPHAS[:nvec]
    tri.stamp_multi_triton(outs, bases, vectors, alphas)
    ref.stamp_multi_reference(wants, bases, vectors, alphas)
    for i, (o, w) in enumerate(zip(outs, wants, strict=True)):
        assert_bitwise_equal(o, w, what=f"tensor {i}")
    groups = _common.plan([outs, bases, *vectors], stamp.MULTI_BLOCK, torch.device(DEVICE))
    assert len(groups) == nsig  # one launch per dtype signature, not one per tensor


def test_stamp_multi_in_place_and_unaligned():
    """out is base; and operands at odd element offsets (no 16-byte alignment) take the unhinted path."""
    n = 4099
    bases = [_vals(n + 1, dt, 20 + i)[1:] for i, dt in enumerate(DTYPES)]  # 2- or 4-byte offsets
    vecs = [_vals(n, torch.bfloat16, 30 + i) for i in range(3)]
    wants = [torch.empty_like(b) for b in bases]
    ref.stamp_multi_reference(wants, bases, [vecs], [0.37])
    tri.stamp_multi_triton(bases, bases, [vecs], [0.37])
    for b, w in zip(bases, wants, strict=True):
        assert_bitwise_equal(b, w, what="unaligned in place")


def test_state_dict_in_three_launches(monkeypatch):
    """A state dict of mixed sizes, bf16/fp16/fp32 weights stamped in place with a bf16 and an fp32
    vector, one of its tensors an unaligned view: 3 launches (one per weight dtype), bit-exact."""
    from fpcore.backends.triton import pair_stats as tri_pair
    from fpcore.backends.triton import stamp as tri_stamp

    sizes = [1, 4097, 31, (1 << 16) + 3, 7, 8192, 300]
    bases = [_vals(n, DTYPES[i % 3], 40 + i, special=False) for i, n in enumerate(sizes)]
    bases[3] = _vals(sizes[3] + 1, DTYPES[0], 60, special=False)[1:]  # unaligned
    v1 = [_vals(n, torch.bfloat16, 70 + i, special=False) for i, n in enumerate(sizes)]
    v2 = [_vals(n, torch.float32, 80 + i, special=False) for i, n in enumerate(sizes)]
    wants = [torch.empty_like(b) for b in bases]
    ref.stamp_multi_reference(wants, bases, [v1, v2], [0.5, -1.25])

    launches = []

    class Counting:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            launches.append(grid)
            return self.kernel[grid]

    monkeypatch.setattr(tri_stamp, "_stamp_multi_kernel", Counting(tri_stamp._stamp_multi_kernel))
    tri.stamp_multi_triton(bases, bases, [v1, v2], [0.5, -1.25])
    assert len(launches) == 3
    for i, (b, w) in enumerate(zip(bases, wants, strict=True)):
        assert_bitwise_equal(b, w, what=f"tensor {i}")

    monkeypatch.setattr(tri_pair, "_pair_kernel", Counting(tri_pair._pair_kernel))
    launches.clear()
    got = tri.pair_stats_triton(bases, v2)
    assert len(launches) == 3  # pair_stats over the same state dict: one launch per dtype pair
    want = ref.pair_stats_reference(bases, v2)
    assert got[6] == want[6] and _close_pos(got[1], want[1])


def test_stamp_multi_empty():
    tri.stamp_multi_triton([], [], [[]], [1.0])
    e = torch.empty(0, device=DEVICE)
    tri.stamp_multi_triton([e], [e], [[e]], [1.0])


# ---- reductions ---------------------------------------------------------------------------------------


def _close_pos(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=RTOL_P + 1e-12, abs_tol=1e-300)


def _close_signed(got: float, want: float, cond: float) -> bool:
    return abs(got - want) <= (RTOL_S + 1e-12) * cond


def _cond(xs, ys) -> float:
    return sum(
        float(torch.dot(x.double().abs().reshape(-1), y.double().abs().reshape(-1)))
        for x, y in zip(xs, ys, strict=True)
    )


def _check_pair(got, want, cond):
    dot, xx, yy, l1, l2sq, linf, n = got
    assert n == want[6]
    assert _close_signed(dot, want[0], cond), (dot, want[0])
    for g, w in ((xx, want[1]), (yy, want[2]), (l1, want[3]), (l2sq, want[4])):
        assert _close_pos(g, w), (g, w)
    assert linf == want[5]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("xdt,ydt", [(a, b) for a in DTYPES for b in DTYPES], ids=lambda d: DT_IDS[d])
def test_pair_stats(n, xdt, ydt):
    if n > 5000 and xdt != ydt and not ON_CUDA:
        pytest.skip("interpreter: large sizes on matching dtypes only")
    xs, ys = [_vals(n, xdt, n, special=False)], [_vals(n, ydt, n + 1, special=False)]
    _check_pair(tri.pair_stats_triton(xs, ys), ref.pair_stats_reference(xs, ys), _cond(xs, ys))


def test_pair_stats_lists_and_empty():
    sizes = [0, 5, 4096, 4097, 100, 0, 9000]
    xs = [_vals(n, DTYPES[i % 3], i, special=False) for i, n in enumerate(sizes)]
    ys = [_vals(n, DTYPES[(i + 1) % 3], 50 + i, special=False) for i, n in enumerate(sizes)]
    _check_pair(tri.pair_stats_triton(xs, ys), ref.pair_stats_reference(xs, ys), _cond(xs, ys))
    assert tri.pair_stats_triton([], []) == (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    e = torch.empty(0, device=DEVICE)
    assert tri.pair_stats_triton([e], [e]) == (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)


def test_pair_stats_deterministic():
    xs, ys = [_vals(SIZES[-1], torch.bfloat16, 1, special=False)], [_vals(SIZES[-1], torch.float32, 2, special=False)]
    assert tri.pair_stats_triton(xs, ys) == tri.pair_stats_triton(xs, ys)


@pytest.mark.parametrize("where", [0, 2048, 4096, 4100])
def test_pair_stats_nan_propagates(where):
    """A NaN difference makes linf NaN (tl.max alone may drop it), wherever it sits in its block."""
    n = 8191
    x = _vals(n, torch.float32, 3, special=False)
    y = _vals(n, torch.bfloat16, 4, special=False)
    x[where] = math.nan
    got = tri.pair_stats_triton([x], [y])
    want = ref.pair_stats_reference([x], [y])
    for i in range(6):
        assert math.isnan(got[i]) == math.isnan(want[i]), (i, got, want)
    assert math.isnan(got[5])
    inf_x = x.clone()
    inf_x[where] = math.inf  # inf - finite is inf, not NaN: linf inf, l2sq inf
    got = tri.pair_stats_triton([inf_x], [y])
    assert got[5] == math.inf and got[4] == math.inf


@pytest.mark.parametrize("T", [1, 2, 3])
def test_trajectory_consecutive(T):
    sizes = [31, 4097, 0, 9]
    ckpts = [[_vals(n, DTYPES[(t + i) % 3], 10 * t + i, special=False) for i, n in enumerate(sizes)] for t in range(T)]
    got = tri.trajectory_consecutive_triton(ckpts)
    want = ref.trajectory_consecutive_reference(ckpts)
    assert {k: len(v) for k, v in got.items()} == {k: len(v) for k, v in want.items()}
    for key in ("norm2", "l1", "l2sq"):
        assert all(_close_pos(g, w) for g, w in zip(got[key], want[key], strict=True)), key
    assert got["linf"] == want["linf"]
    for t in range(T - 1):
        assert _close_signed(got["dot"][t], want["dot"][t], _cond(ckpts[t], ckpts[t + 1]))


@pytest.mark.parametrize("T", [0, 1, 3])
def test_trajectory_all(T):
    sizes = [4097, 5]
    ckpts = [[_vals(n, DTYPES[(t + i) % 3], 7 * t + i, special=False) for i, n in enumerate(sizes)] for t in range(T)]
    dot, l2sq = tri.trajectory_all_triton(ckpts)
    want_dot, want_l2 = ref.trajectory_all_reference(ckpts)
    assert len(dot) == len(l2sq) == T * T
    for i in range(T):
        assert l2sq[i * T + i] == 0.0
        for j in range(T):
            k = i * T + j
            assert dot[k] == dot[j * T + i] and l2sq[k] == l2sq[j * T + i]
            assert _close_signed(dot[k], want_dot[k], _cond(ckpts[i], ckpts[j]))
            assert _close_pos(l2sq[k], want_l2[k])


@pytest.mark.parametrize("n", [0, 7, 4097, SIZES[-1]])
def test_triple_stats(n):
    xs = [_vals(n, torch.bfloat16, 1, special=False), _vals(3, torch.float32, 9, special=False)]
    ys = [_vals(n, torch.float32, 2, special=False), _vals(3, torch.float16, 8, special=False)]
    zs = [_vals(n, torch.float16, 3, special=False), _vals(3, torch.bfloat16, 7, special=False)]
    dz, dd, zz, ee, m = tri.triple_stats_triton(xs, ys, zs)
    w = ref.triple_stats_reference(xs, ys, zs)
    assert m == w[4]
    ds = [x.float() - y.float() for x, y in zip(xs, ys, strict=True)]
    assert _close_signed(dz, w[0], _cond(ds, zs))
    assert _close_pos(dd, w[1]) and _close_pos(zz, w[2]) and _close_pos(ee, w[3])
