"""The licensee code: the spec against a per-element oracle, every backend bit for bit against the
spec, and the properties the issue names (layout, chunking and threads do not matter; bf16/fp16 move
by one ulp; fp32 by at most 2^(shift-23) of the value; zeros, Inf and NaN never move)."""

import random

import pytest
import torch

import fpcore
from fpcore import _native
from fpcore._code import TensorCode
from fpcore.backends.reference.code import (
    code_signs,
    fmix32,
    stamp_code_reference,
    trace_sums_reference,
)
from fpcore.ops.code import trace_sums
from fpcore.testing import assert_bitwise_equal
from tests.conftest import size_ok

M32 = 0xFFFFFFFF


def fmix_py(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & M32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & M32
    return x ^ (x >> 16)


def sign_py(code: TensorCode, idx: int) -> int:
    """The spec of one element, in plain Python integers."""
    k1, k2, k3 = code.keys
    q = idx >> 2
    h = fmix_py(fmix_py((q & M32) ^ k1) ^ ((k2 + (q >> 32) * 0x9E3779B1) & M32))
    b = (h >> (8 * (idx & 3))) & 31
    seg = fmix_py(fmix_py(((idx >> 12) & M32) ^ k3) ^ k2) >> (32 - code.seg_bits)
    return 1 if bin(b & (2 * code.symbols[seg] + 1)).count("1") % 2 else -1


def random_code(seed: int, offset: int = 0, shift: int = 14) -> TensorCode:
    r = random.Random(seed)
    keys = (r.getrandbits(32), r.getrandbits(32), r.getrandbits(32))
    return TensorCode(keys, bytes(r.randrange(16) for _ in range(64)), shift, offset)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int16)


def test_fmix32_and_signs_match_plain_integers():
    xs = [0, 1, M32, 1 << 31, 123456789] + [random.Random(1).getrandbits(32) for _ in range(500)]
    assert fmix32(torch.tensor(xs)).tolist() == [fmix_py(x) for x in xs]
    for offset in (0, 4090, (1 << 34) - 5):
        code = random_code(3, offset)
        got = code_signs(20, code).tolist()
        assert got == [sign_py(code, offset + i) for i in range(20)]
    dense = code_signs(1 << 16, random_code(4))
    assert set(dense.unique().tolist()) == {-1, 1} and abs(float(dense.float().mean())) < 0.02


def test_the_16_patterns_are_balanced_and_uncorrelated():
    """Every pattern is a fair coin and any two agree on half the elements (the masks 2p + 1)."""
    keys = random_code(6).keys
    signs = torch.stack([code_signs(1 << 18, TensorCode(keys, bytes([p]) * 64)) for p in range(16)]).float()
    corr = signs @ signs.T / signs.shape[1]
    assert float((corr - torch.eye(16)).abs().max()) < 0.01


def test_licensees_codes_differ_and_agree_where_patterns_match():
    """Two licensees with different symbols agree on about half the coded elements."""
    a, b = random_code(5), random_code(5)
    b = TensorCode(a.keys, bytes((s + 1) % 16 for s in a.symbols))
    ca, cb = code_signs(1 << 18, a), code_signs(1 << 18, b)
    agree = float((ca == cb).float().mean())
    assert 0.45 < agree < 0.55


SIZES = [0, 1, 7, 31, 4097, 70_001]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("nvec", [0, 1, 2])
def test_every_backend_matches_the_spec_bit_for_bit(backend, dtype, nvec):
    name, device = backend
    g = torch.Generator().manual_seed(7)
    for n in SIZES:
        if not size_ok(name, n):
            continue
        for offset in (0, 4000, (1 << 34) - 9):
            base = (torch.randn(n, generator=g) * 0.05).to(dtype)
            if n > 4:
                base[:4] = torch.tensor([0.0, float("inf"), -1e-40, 65504.0]).to(dtype)
            vecs = [(torch.randn(n, generator=g) * 0.01).to(torch.bfloat16) for _ in range(nvec)]
            alphas = [0.75, -1.5][:nvec]
            code = random_code(n + offset + nvec, offset)
            want = torch.empty(n, dtype=dtype)
            stamp_code_reference(want, base, vecs, alphas, code)
            got = fpcore.stamp(base.to(device), [v.to(device) for v in vecs], alphas or 1.0, code=code)
            assert_bitwise_equal(got.cpu(), want, what=f"{name} {dtype} n={n} offset={offset} nvec={nvec}")


@pytest.mark.skipif(not _native.HAS_NATIVE, reason="fpcore._C not loaded")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_chunking_threads_and_streaming_do_not_change_the_code(dtype):
    """One call over 3M elements (streaming stores, 2 threads) equals the spec, equals 1 thread, and
    equals the same tensor stamped in uneven chunks (each chunk's code at its offset)."""
    n = 3_000_001
    g = torch.Generator().manual_seed(9)
    base = (torch.randn(n, generator=g) * 0.05).to(dtype)
    vec = torch.randn(n, generator=g) * 0.01
    code = random_code(11, 0)
    want = torch.empty(n, dtype=dtype)
    stamp_code_reference(want, base, [vec], [1.0], code)
    outs = []
    with fpcore.use_backend("cpu"):
        for threads in (1, 2):
            fpcore.set_num_threads(threads)
            outs.append(fpcore.stamp(base, vec, 1.0, code=code))
        fpcore.set_num_threads(torch.get_num_threads())
        chunked = torch.empty(n, dtype=dtype)
        cuts = [0, 5, 4096, 4099, 1_000_003, n]
        for a, b in zip(cuts, cuts[1:], strict=False):
            fpcore.stamp(base[a:b], vec[a:b], 1.0, code=code.at(a), out=chunked[a:b])
    for got, what in ((outs[0], "1 thread"), (outs[1], "2 threads"), (chunked, "chunked")):
        assert_bitwise_equal(got, want, what=what)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_moves_are_one_ulp_or_the_stated_relative_amount(dtype):
    n = 200_000
    base = (torch.randn(n, generator=torch.Generator().manual_seed(2)) * 0.02).to(dtype)
    base[:3] = torch.tensor([0.0, float("inf"), float("nan")]).to(dtype)
    code = random_code(12)
    plain = base.clone()
    coded = fpcore.stamp(base, [], code=code)
    assert torch.equal(bits(coded[:2]), bits(plain[:2])) and torch.isnan(coded[2])
    d = (bits(coded).long() - bits(plain).long()).abs()
    if dtype == torch.float32:
        rel = ((coded - plain).abs() / plain.abs().clamp_min(1e-30))[3:]
        assert float(rel.max()) <= 2.0**-9 and float(rel[rel > 0].min()) >= 2.0**-10
        assert set(d[3:].unique().tolist()) <= {0, 1 << 14}
    else:
        assert set(d[3:].unique().tolist()) <= {0, 1}
    assert float((d[3:] != 0).float().mean()) > 0.99  # every eligible element moves


def test_code_alone_on_a_strided_output_follows_row_major_order():
    base = torch.randn(64, 48).to(torch.bfloat16)
    code = random_code(13)
    want = fpcore.stamp(base.contiguous(), [], code=code)
    out = torch.empty(48, 64, dtype=torch.bfloat16).t()
    fpcore.stamp(base, [], code=code, out=out)
    assert_bitwise_equal(out.contiguous(), want, what="strided out")


def test_trace_sums_match_the_spec(backend):
    name, device = backend
    n = 50_000
    g = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.bfloat16):
        ref = (torch.randn(n, generator=g) * 0.02).to(dtype)
        code = random_code(14, 777)
        stamped = fpcore.stamp(ref, [], code=code)
        suspect = (stamped.float() + torch.randn(n, generator=g) * 1e-4).to(torch.float16)
        want = trace_sums_reference(suspect, ref, code)
        got = trace_sums(suspect.to(device), ref.to(device), code)
        rtol = 1e-9 if name != "triton" else 1e-4  # triton: fp32 sums within a block
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(
                a.cpu(), b, rtol=rtol, atol=1e-6 * float(b.abs().max()) if name == "triton" else 1e-300
            )


def test_trace_sums_pick_out_the_licensees_pattern():
    """On a coded copy, the licensee's pattern has the largest score in every segment."""
    ref = torch.randn(1 << 20, generator=torch.Generator().manual_seed(4)) * 0.02
    code = random_code(15)
    A, W, Q, _ = trace_sums(fpcore.stamp(ref, [], code=code), ref, code)
    y = (2 * A - W[:, None]) / Q.sqrt()[:, None]
    assert y.argmax(dim=1).tolist() == list(code.symbols)


def test_code_errors_are_clear():
    x = torch.zeros(8)
    with pytest.raises(ValueError, match="vector"):
        fpcore.stamp(x, [])  # no vector and no code
    with pytest.raises(ValueError, match=r"trace: .*shape"):
        trace_sums(torch.zeros(4), torch.zeros(5), random_code(1))
    if _native.HAS_NATIVE:
        bad = TensorCode((1, 2, 3), bytes([16]) * 64)
        with fpcore.use_backend("cpu"), pytest.raises(ValueError, match="stamp: code\\[0\\]: a symbol is 16"):
            fpcore.stamp(x, [], code=bad)


def test_the_hash_quality_check_measures_the_shipped_hash():
    """benchmarks/trace_hash_quality.py re-implements the group hash in numpy for speed: it must be the
    spec's, and its check must pass the spec's hash while catching a hash with no mixing at all."""
    import numpy as np

    from benchmarks.trace_hash_quality import check, shipped
    from fpcore.backends.reference.code import group_hash

    keys = (0x12345678, 0x9ABCDEF0, 0)
    q = torch.arange(1000, 1512, dtype=torch.int64)
    want = group_hash(q * 4, keys)
    got = shipped(q.numpy().astype(np.uint64), keys[0], keys[1])
    assert np.array_equal(got.astype(np.int64), want.numpy())
    good = check(shipped, trials=1, log_groups=14)
    assert good["lag0_max_abs_z"] < 5 and good["pairs_max_abs_z"] < 6
    bad = check(lambda lo, k1, k2: lo ^ np.uint64(k1), trials=1, log_groups=14)
    assert bad["pairs_max_abs_z"] > 20
