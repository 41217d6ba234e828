"""stamp: theta' = theta + alpha*tau over >= 256 MB operands, against torch's own adds.

Group "stamp": fpcore (out of place and in place) and the peers on the same inputs: fp32
torch.add(out=) (the roofline), torch bf16 add_, torch bf16 add(out=), and the eager upcast
pattern most tools use. Ratios between them come from `fpcore bench report`.
"""

import pytest
import torch

import fpcore
from benchmarks.conftest import BENCH_MB, MB, record

N = BENCH_MB * MB // 2  # elements: a bf16 operand of BENCH_MB
ALPHA = 0.75


@pytest.fixture(scope="module")
def bf16_pair():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, generator=g).bfloat16(), (torch.randn(N, generator=g) * 1e-2).bfloat16()


@pytest.fixture(scope="module")
def tau_fp32():
    return torch.randn(N, generator=torch.Generator().manual_seed(1)) * 1e-2


@pytest.mark.benchmark(group="stamp")
def test_headline_stamp_bf16_bf16(benchmark, bf16_pair):
    base, tau = bf16_pair
    out = torch.empty_like(base)
    benchmark(fpcore.stamp, base, tau, ALPHA, out=out)
    record(benchmark, nbytes=6 * N, roofline="add", op="stamp", dtypes="bf16+bf16->bf16", impl="fpcore")


@pytest.mark.benchmark(group="stamp")
def test_headline_stamp_bf16_fp32(benchmark, bf16_pair, tau_fp32):
    base, _ = bf16_pair
    out = torch.empty_like(base)
    benchmark(fpcore.stamp, base, tau_fp32, ALPHA, out=out)
    record(benchmark, nbytes=8 * N, roofline="add", op="stamp", dtypes="bf16+fp32->bf16", impl="fpcore")


@pytest.mark.benchmark(group="stamp")
def test_stamp_inplace_bf16(benchmark, bf16_pair):
    base, tau = bf16_pair
    work = base.clone()
    # in place, alternating +alpha / -alpha keeps the values bounded across rounds
    sign = [1.0]

    def run():
        fpcore.stamp_(work, tau, ALPHA * sign[0])
        sign[0] = -sign[0]

    benchmark(run)
    record(benchmark, nbytes=6 * N, roofline="add", op="stamp_", dtypes="bf16+bf16->bf16 in place", impl="fpcore")


@pytest.mark.benchmark(group="stamp")
def test_stamp_fp32_fp32(benchmark, tau_fp32):
    base = torch.randn(N // 2, generator=torch.Generator().manual_seed(2))
    tau = tau_fp32[: N // 2]
    out = torch.empty_like(base)
    benchmark(fpcore.stamp, base, tau, ALPHA, out=out)
    record(benchmark, nbytes=12 * (N // 2), roofline="add", op="stamp", dtypes="fp32+fp32->fp32", impl="fpcore")


@pytest.mark.benchmark(group="stamp")
def test_headline_peer_torch_fp32_add_roofline(benchmark):
    a = torch.rand(N // 2)
    b = torch.rand(N // 2)
    c = torch.empty(N // 2)
    benchmark(torch.add, a, b, out=c)
    record(benchmark, nbytes=12 * (N // 2), roofline=None, op="stamp", dtypes="fp32+fp32->fp32", impl="torch add(out=)")


@pytest.mark.benchmark(group="stamp")
def test_headline_peer_torch_bf16_add_inplace(benchmark, bf16_pair):
    base, tau = bf16_pair
    work = base.clone()
    sign = [1.0]

    def run():
        work.add_(tau, alpha=ALPHA * sign[0])
        sign[0] = -sign[0]

    benchmark(run)
    record(benchmark, nbytes=6 * N, roofline="add", op="stamp", dtypes="bf16+bf16->bf16 in place", impl="torch add_")


@pytest.mark.benchmark(group="stamp")
def test_peer_torch_bf16_add_out(benchmark, bf16_pair):
    base, tau = bf16_pair
    out = torch.empty_like(base)
    benchmark(torch.add, base, tau, alpha=ALPHA, out=out)
    record(benchmark, nbytes=6 * N, roofline="add", op="stamp", dtypes="bf16+bf16->bf16", impl="torch add(out=)")


@pytest.mark.benchmark(group="stamp")
def test_headline_peer_eager_upcast(benchmark, bf16_pair):
    base, tau = bf16_pair
    benchmark.pedantic(lambda: (base.float() + ALPHA * tau.float()).bfloat16(), rounds=3, iterations=1)
    record(benchmark, nbytes=6 * N, roofline="add", op="stamp", dtypes="bf16+bf16->bf16", impl="eager upcast")
