"""stamp_tensors_ over a real state-dict layout vs one big tensor of the same bytes.

Two Llama-2-7B decoder layers (q, k, v, o 4096x4096; gate, up 11008x4096; down 4096x11008; two
RMSNorm vectors of 4096) plus the 32000x4096 embedding: 537M bf16 parameters, 1.07 GB, stamped in
place with a bf16 tau. The floor: within 10% of the single-big-tensor GB/s.
"""

import pytest
import torch

import fpcore
from benchmarks.conftest import record

H, FF, V = 4096, 11008, 32000
LAYER = [(H, H)] * 4 + [(FF, H), (FF, H), (H, FF), (H,), (H,)]
SHAPES = [(V, H)] + LAYER * 2


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


TOTAL = sum(_numel(s) for s in SHAPES)


@pytest.fixture(scope="module")
def state_dicts():
    g = torch.Generator().manual_seed(0)
    bases = {f"t{i}": torch.randn(s, generator=g).bfloat16() for i, s in enumerate(SHAPES)}
    taus = {k: (torch.randn(v.shape, generator=g) * 1e-2).bfloat16() for k, v in bases.items()}
    return bases, taus


def _alternating(fn):
    sign = [1.0]

    def run():
        fn(0.5 * sign[0])
        sign[0] = -sign[0]

    return run


@pytest.mark.benchmark(group="stamp_tensors")
def test_headline_stamp_tensors_llama_layers(benchmark, state_dicts):
    bases, taus = state_dicts
    benchmark(_alternating(lambda a: fpcore.stamp_tensors_(bases, taus, a)))
    record(benchmark, nbytes=6 * TOTAL, roofline="add", op="stamp_tensors_", tensors=len(SHAPES), impl="fpcore")


@pytest.mark.benchmark(group="stamp_tensors")
def test_headline_stamp_single_tensor_same_bytes(benchmark):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(TOTAL, generator=g).bfloat16()
    tau = (torch.randn(TOTAL, generator=g) * 1e-2).bfloat16()
    benchmark(_alternating(lambda a: fpcore.stamp_(base, tau, a)))
    record(benchmark, nbytes=6 * TOTAL, roofline="add", op="stamp_", tensors=1, impl="fpcore")


@pytest.mark.benchmark(group="stamp_tensors")
def test_peer_torch_foreach_add(benchmark, state_dicts):
    bases, taus = state_dicts
    b, t = list(bases.values()), list(taus.values())
    benchmark(_alternating(lambda a: torch._foreach_add_(b, t, alpha=a)))
    record(
        benchmark,
        nbytes=6 * TOTAL,
        roofline="add",
        op="stamp_tensors_",
        tensors=len(SHAPES),
        impl="torch _foreach_add_",
    )
