"""trajectory_stats and pair_stats: distances along a trajectory at the speed of a read.

Group "trajectory": T=16 checkpoints of 64 MB bf16 each, all metrics of each consecutive pair.
GB/s counts every checkpoint's bytes once; the roofline is fp32 torch.sum over the same bytes.
The peer is the Proof-of-Learning style loop: torch.norm(x - y, p) per metric per pair.
Group "pair_stats": two vectors of >= 256 MB.
"""

import pytest
import torch

import fpcore
from benchmarks.conftest import BENCH_MB, MB, record

T = 16
CK_MB = max(1, BENCH_MB // 4)  # 64 MB checkpoints at the default size
CK_N = CK_MB * MB // 2


@pytest.fixture(scope="module")
def trajectory():
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(CK_N, generator=g)
    ckpts = []
    for _ in range(T):
        ckpts.append(theta.bfloat16())
        theta = theta + 1e-2 * torch.randn(CK_N, generator=g)
    return ckpts


@pytest.mark.benchmark(group="trajectory")
def test_headline_trajectory_consecutive(benchmark, trajectory):
    benchmark(fpcore.trajectory_stats, trajectory)
    record(benchmark, nbytes=T * 2 * CK_N, roofline="sum", op="trajectory_stats", T=T, ckpt_mb=CK_MB, impl="fpcore")


def _pol_loop(ckpts):
    """Proof-of-Learning style: each metric of each pair is its own pass over fp32 copies."""
    out = []
    for x, y in zip(ckpts[:-1], ckpts[1:], strict=True):
        xf, yf = x.float(), y.float()
        d = xf - yf
        l1 = torch.norm(d, 1)
        l2 = torch.norm(d, 2)
        linf = torch.norm(d, float("inf"))
        cos = 1 - torch.dot(xf, yf) / (torch.norm(xf) * torch.norm(yf))
        out.append((float(l1), float(l2), float(linf), float(cos)))
    return out


@pytest.mark.benchmark(group="trajectory")
def test_headline_peer_pol_loop(benchmark, trajectory):
    benchmark.pedantic(_pol_loop, args=(trajectory,), rounds=3, iterations=1)
    record(benchmark, nbytes=T * 2 * CK_N, roofline="sum", op="trajectory_stats", T=T, ckpt_mb=CK_MB, impl="PoL loop")


@pytest.mark.benchmark(group="trajectory")
def test_trajectory_all(benchmark, trajectory):
    benchmark.pedantic(fpcore.trajectory_stats, args=(trajectory,), kwargs={"mode": "all"}, rounds=3, iterations=1)
    record(benchmark, nbytes=T * 2 * CK_N, roofline="sum", op="trajectory_stats all", T=T, ckpt_mb=CK_MB, impl="fpcore")


N = BENCH_MB * MB // 2


@pytest.fixture(scope="module")
def pair_bf16():
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, generator=g).bfloat16(), torch.randn(N, generator=g).bfloat16()


@pytest.mark.benchmark(group="pair_stats")
def test_pair_stats_bf16(benchmark, pair_bf16):
    a, b = pair_bf16
    benchmark(fpcore.pair_stats, a, b)
    record(benchmark, nbytes=4 * N, roofline="sum", op="pair_stats", dtypes="bf16,bf16", impl="fpcore")


@pytest.mark.benchmark(group="pair_stats")
def test_pair_stats_fp32(benchmark, pair_bf16):
    a, b = (t[: N // 2].float() for t in pair_bf16)
    benchmark(fpcore.pair_stats, a, b)
    record(benchmark, nbytes=4 * N, roofline="sum", op="pair_stats", dtypes="fp32,fp32", impl="fpcore")


@pytest.mark.benchmark(group="pair_stats")
def test_peer_torch_vector_norm(benchmark, pair_bf16):
    a, b = pair_bf16
    benchmark.pedantic(lambda: torch.linalg.vector_norm(a.float() - b.float()), rounds=3, iterations=1)
    record(benchmark, nbytes=4 * N, roofline="sum", op="pair_stats", dtypes="bf16,bf16", impl="torch vector_norm(a-b)")


@pytest.mark.benchmark(group="projection")
def test_projection_bf16(benchmark, pair_bf16):
    a, b = pair_bf16
    tau = (b.float() * 1e-2).bfloat16()
    benchmark(fpcore.projection, a, b, tau)
    record(benchmark, nbytes=6 * N, roofline="sum", op="projection", dtypes="bf16 x3", impl="fpcore")


@pytest.mark.benchmark(group="projection")
def test_matching_loss_bf16(benchmark, pair_bf16):
    a, b = pair_bf16
    c = (a.float() * 0.5).bfloat16()
    benchmark(fpcore.matching_loss, a, c, b)
    record(benchmark, nbytes=6 * N, roofline="sum", op="matching_loss", dtypes="bf16 x3", impl="fpcore")
