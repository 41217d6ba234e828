"""fpcore.rawops: the torch-free ops of the streaming stamp, against fpcore.ops (bit for bit) and
its reference twin; errors; the finiteness check."""

import ctypes
import subprocess
import sys

import pytest
import torch

import fpcore
from fpcore import _native, rawops
from fpcore.backends.reference.stamp import stamp_reference

ST = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
DTYPES = list(ST)
BACKENDS = ["reference"] + (["cpu"] if _native.HAS_NATIVE else [])


def region(t):
    return (t.data_ptr(), ST[t.dtype])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [1, 7, 4097, (1 << 16) + 3])
@pytest.mark.parametrize("odt", DTYPES)
@pytest.mark.parametrize("vdt", DTYPES)
def test_stamp_raw_matches_reference_bit_for_bit(backend, n, odt, vdt):
    g = torch.Generator().manual_seed(n)
    base = torch.randn(n, generator=g).to(odt)
    vecs = [torch.randn(n, generator=g).to(vdt), torch.randn(n, generator=g).to(torch.float32)]
    alphas = [0.731, -1.25]
    want = torch.empty(n, dtype=odt)
    stamp_reference(want, base, vecs, alphas)
    out = torch.full((n,), 7.0, dtype=odt)
    with fpcore.use_backend(backend):
        rawops.stamp_raw(region(out), region(base), [region(v) for v in vecs], alphas, n)
    assert torch.equal(
        out.view(torch.uint8) if odt != torch.float32 else out.view(torch.int32),
        want.view(torch.uint8) if odt != torch.float32 else want.view(torch.int32),
    )
    assert torch.equal(out, fpcore.stamp(base, vecs, alphas))


def test_stamp_raw_errors():
    a, b, o = torch.zeros(8), torch.zeros(8), torch.zeros(8)
    with pytest.raises(TypeError, match=r"stamp: vector\[0\] has dtype 'F64'"):
        rawops.stamp_raw(region(o), region(a), [(b.data_ptr(), "F64")], [1.0], 8)
    with pytest.raises(ValueError, match="stamp: takes 1 to 8 vectors, got 0"):
        rawops.stamp_raw(region(o), region(a), [], [], 8)
    with pytest.raises(ValueError, match="stamp: 1 vectors but 2 alphas"):
        rawops.stamp_raw(region(o), region(a), [region(b)], [1.0, 2.0], 8)
    with pytest.raises(ValueError, match="element count"):
        rawops.stamp_raw(region(o), region(a), [region(b)], [1.0], -1)
    with pytest.raises(ValueError, match="stamp: out overlaps vector"):
        rawops.stamp_raw((b.data_ptr() + 4, "F32"), region(a), [region(b)], [1.0], 4)
    with pytest.raises(ValueError, match="no valid address"):
        rawops.stamp_raw((0, "F32"), region(a), [region(b)], [1.0], 8)
    rawops.stamp_raw(region(o), region(a), [region(b)], [1.0], 0)  # nothing to do


def test_forced_triton_refuses_host_memory():
    a = torch.zeros(4)
    with fpcore.use_backend("triton"), pytest.raises(RuntimeError, match="stamp: backend 'triton' was forced"):
        rawops.stamp_raw(region(torch.empty(4)), region(a), [region(a)], [1.0], 4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), -float("inf"), "huge"])
def test_all_finite_raw(backend, dtype, bad):
    t = torch.randn(5000, generator=torch.Generator().manual_seed(1)).to(dtype)
    if bad == "huge":  # the largest finite value is finite
        t[17] = torch.finfo(dtype).max
        want = True
    elif bad is not None:
        t[4999] = bad
        want = False
    else:
        want = True
    with fpcore.use_backend(backend):
        assert rawops.all_finite_raw(region(t), t.numel()) is want
        assert rawops.all_finite_raw(region(t), 0) is True


def test_reference_wraps_memory_without_copies():
    buf = (ctypes.c_char * 16)()
    t = rawops._tensor((ctypes.addressof(buf), "F32"), 4)
    t.fill_(2.0)
    assert bytes(buf)[:4] == torch.tensor([2.0]).numpy().tobytes()


def test_streaming_modules_import_without_torch():
    code = (
        "import sys; import fpcore, fpcore.cli, fpcore.stamping, fpcore.rawops, fpcore.io, fpcore.vector; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("adt", DTYPES)
@pytest.mark.parametrize("bdt", DTYPES)
def test_pair_stats_raw_matches_ops_pair_stats(backend, adt, bdt):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4099, generator=g).to(adt)
    b = torch.randn(4099, generator=g).to(bdt)
    with fpcore.use_backend(backend):
        got = rawops.pair_stats_raw(region(a), region(b), a.numel())
    want = fpcore.pair_stats(a, b)
    assert got.n == 4099 and got.linf == want.linf
    for x, y in [(got.l2sq, want.l2sq), (got.yy, want.norm_b**2), (got.dot, want.dot), (got.l1, want.l1)]:
        assert x == pytest.approx(y, rel=1e-6)  # fp64 sums in another order (reference vs native)
    assert rawops.pair_stats_raw(region(a), region(b), 0).n == 0
