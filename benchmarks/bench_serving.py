"""Stamp-on-load vs a plain safetensors load of the same model, to a model whose weights are in memory.

A sharded bf16 Llama-shaped checkpoint of FPCORE_BENCH_MB (default 256 MB) and a bf16 tau of the same
size are built once. Each round builds a module skeleton on the meta device (the same in both), fills
it with ``load_state_dict(assign=True)`` and reads every weight once (a sum: what the first forward
pass or a copy to the GPU does, and what makes a lazily mapped load actually load):

- plain: ``safetensors.torch.load_file`` per shard (memory-mapped, the usual loader);
- stamped: ``dict(fpcore.serving.stamped_tensors(model, tau))`` (pread + stamp per tensor).

Two page-cache regimes: ``warm`` (model and tau in the page cache) and ``cold`` (the model's files
evicted before every round with posix_fadvise, tau kept warm: a serving host stamps many loads with
one tau). The floor: stamped within 10% of plain (speed ratio >= 1/1.1).
"""

from __future__ import annotations

import pytest
import safetensors.torch
import torch

from benchmarks.conftest import BENCH_MB, MB, record
from fpcore import serving, stamping
from fpcore.bench.checkpoint import evict, llama_shape, write_model
from fpcore.io import Checkpoint


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    shape = llama_shape(BENCH_MB * MB / 2)
    base = write_model(root / "base", shape, seed=0, shard_bytes=BENCH_MB * MB // 2)
    tuned = write_model(root / "tuned", shape, seed=1, base_seed=0, shard_bytes=BENCH_MB * MB // 2)
    tau = root / "tau.safetensors"
    stamping.extract(tuned, base, tau, dtype="bf16")
    ck = Checkpoint(base)
    with torch.device("meta"):
        skeleton = {n: torch.empty(i.shape, dtype=i.dtype) for n, i in ck.items()}
    return {"model": base, "tau": tau, "ck": ck, "skeleton": skeleton}


class _Module(torch.nn.Module):
    """A module with the checkpoint's parameter names (dots become nested submodules), on meta."""

    def __init__(self, skeleton: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for name, t in skeleton.items():
            *path, leaf = name.split(".")
            mod = self
            for part in path:
                if not hasattr(mod, part):
                    mod.add_module(part, torch.nn.Module())
                mod = getattr(mod, part)
            mod.register_parameter(leaf, torch.nn.Parameter(t, requires_grad=False))


def _ready(skeleton: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> float:
    m = _Module(skeleton)
    m.load_state_dict(state, assign=True)
    return float(sum(p.float().sum() for p in m.parameters() if p.numel()))  # every weight read once


def _plain(s) -> float:
    state: dict[str, torch.Tensor] = {}
    for f in s["ck"].files:
        state.update(safetensors.torch.load_file(f))
    return _ready(s["skeleton"], state)


def _stamped(s) -> float:
    return _ready(s["skeleton"], dict(serving.stamped_tensors(s["model"], s["tau"])))


def _run(benchmark, s, fn, cache: str) -> None:
    setup = (lambda: evict([s["model"]])) if cache == "cold" else None
    benchmark.pedantic(fn, args=(s,), setup=setup, rounds=7, warmup_rounds=1)
    record(benchmark, nbytes=s["ck"].nbytes, roofline=None, op="load to a ready model", cache=cache, impl="")


@pytest.mark.parametrize("cache", ["warm", "cold"])
@pytest.mark.benchmark(group="serving-load")
def test_serving_plain_load(benchmark, served, cache):
    _run(benchmark, served, _plain, cache)


@pytest.mark.parametrize("cache", ["warm", "cold"])
@pytest.mark.benchmark(group="serving-load")
def test_serving_stamped_load(benchmark, served, cache):
    _run(benchmark, served, _stamped, cache)
    benchmark.extra_info["impl"] = "fpcore"
