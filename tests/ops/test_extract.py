"""extract / extract_tensors: tau = tuned - base, bit for bit on every backend."""

import itertools

import pytest
import torch

import fpcore
from fpcore.testing import assert_bitwise_equal, sample
from tests.conftest import size_ok

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("n", [0, 1, 7, 31, 4097, (1 << 20) + 3])
@pytest.mark.parametrize("tdt,bdt", list(itertools.product(DTYPES, DTYPES)))
@pytest.mark.parametrize("odt", [None, torch.float32, torch.bfloat16])
def test_extract_bitexact(backend, n, tdt, bdt, odt):
    name, dev = backend
    if not size_ok(name, n):
        pytest.skip("interpreter: small sizes only")
    tuned = sample(n, tdt, seed=n + 3, device=dev, special=True)
    base = sample(n, bdt, seed=n + 4, device=dev, special=True)
    got = fpcore.extract(tuned, base, dtype=odt)
    with torch.no_grad():
        want = (tuned.float().cpu() - base.float().cpu()).to(odt or tdt)  # one fp32 subtraction, one rounding
    assert_bitwise_equal(got.cpu(), want, what=f"{name} {tdt}-{bdt}->{odt}")


def test_extract_then_stamp_recovers_tuned_fp32(backend):
    name, dev = backend
    base = sample(4097, torch.float32, seed=1, device=dev)
    tuned = base + sample(4097, torch.float32, seed=2, device=dev, scale=1e-3)
    tau = fpcore.extract(tuned, base)
    back = fpcore.stamp(base, tau)
    # base + (tuned - base) is within 1 ulp of tuned in fp32
    assert torch.allclose(back, tuned, rtol=2**-23, atol=0)


def test_extract_tensors_dict_and_list(backend):
    name, dev = backend
    shapes = {"a": (3, 4), "b": (0,), "c": (4097,), "d": (16, 16)}
    tuned = {
        k: sample(int(torch.tensor(s).prod()), torch.bfloat16, seed=i, device=dev).view(s)
        for i, (k, s) in enumerate(shapes.items())
    }
    base = {
        k: sample(t.numel(), torch.float32, seed=10 + i, device=dev).view(t.shape)
        for i, (k, t) in enumerate(tuned.items())
    }
    got = fpcore.extract_tensors(tuned, dict(reversed(list(base.items()))), dtype=torch.float32)
    assert list(got) == list(tuned)
    for k in tuned:
        assert_bitwise_equal(got[k].cpu(), (tuned[k].float() - base[k].float()).cpu(), what=f"{name} {k}")
    as_list = fpcore.extract_tensors(list(tuned.values()), list(base.values()))
    assert isinstance(as_list, list) and as_list[2].dtype == torch.bfloat16


def test_extract_errors():
    x = torch.zeros(4)
    with pytest.raises(ValueError, match=r"extract: base has shape \(3,\) but tuned has shape \(4,\)"):
        fpcore.extract(x, torch.zeros(3))
    with pytest.raises(TypeError, match=r"extract: tuned has dtype torch.int64"):
        fpcore.extract(torch.zeros(4, dtype=torch.long), x)
    with pytest.raises(ValueError, match=r"extract_tensors: tuneds and bases name different tensors"):
        fpcore.extract_tensors({"w": x}, {"v": x})
    with pytest.raises(ValueError, match=r"extract: tuned has 1 non-finite"):
        fpcore.extract(torch.tensor([1.0, float("inf")]), torch.zeros(2), check_finite=True)
