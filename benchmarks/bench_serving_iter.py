"""stamp_iter around a buffer-reusing loader vs the same loader alone, weights from disk.

A sharded bf16 Llama-shaped checkpoint of FPCORE_BENCH_MB (default 256 MB) and a bf16 tau of the same
size are built once. The loader is what fast serving loaders do: every tensor is read (pread) into
one buffer that is reused for the next tensor, and yielded as a view of it. The consumer is what
vLLM's ``load_weights`` does with each pair: ``param.copy_(tensor)`` into a model allocated
beforehand (outside the timed region).

- plain: ``for name, t in loader: params[name].copy_(t)``;
- stamp_iter: the same loop over ``fpcore.serving.stamp_iter(loader, tau)``.

Two page-cache regimes: ``cold`` (the model's files evicted with posix_fadvise before every round, tau
kept warm: a serving host stamps every load with one tau) and ``warm``. The stamp_iter benchmark also
times plain and stamp_iter in alternating pairs (FPCORE_BENCH_SERVING_ITER_PAIRS, default 7) and
records the median of the per-pair ratios, ``ratio_to_plain`` (the floor: <= 1.1 when the weights
come from disk, i.e. ``cold``).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch

from benchmarks.conftest import BENCH_MB, MB, record
from fpcore import serving, stamping
from fpcore.bench.checkpoint import evict, llama_shape, warm, write_model
from fpcore.io import Checkpoint
from fpcore.vector import FingerprintVector

PAIRS = int(os.environ.get("FPCORE_BENCH_SERVING_ITER_PAIRS", "7"))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving_iter")
    shape = llama_shape(BENCH_MB * MB / 2)
    base = write_model(root / "base", shape, seed=0, shard_bytes=BENCH_MB * MB // 2)
    tuned = write_model(root / "tuned", shape, seed=1, base_seed=0, shard_bytes=BENCH_MB * MB // 2)
    tau = root / "tau.safetensors"
    stamping.extract(tuned, base, tau, dtype="bf16")
    ck = Checkpoint(base)
    params = {n: torch.empty(i.shape, dtype=i.dtype) for n, i in ck.items()}  # the serving model, allocated
    for p in params.values():
        p.zero_()  # touched: page faults are not part of the load
    buf = torch.zeros(max(i.nbytes for _, i in ck.items()), dtype=torch.uint8)
    return {"model": base, "tau": FingerprintVector(tau), "tau_path": tau, "ck": ck, "params": params, "buf": buf}


def _loader(s):
    """pread every tensor into one reused buffer; yield a view of it (valid until the next tensor)."""
    ck, buf = s["ck"], s["buf"]
    for name, info in ck.items():
        view = buf[: info.nbytes].view(info.dtype).view(info.shape)
        yield name, ck.read(name, out=view)


def _plain(s) -> None:
    params = s["params"]
    for name, t in _loader(s):
        params[name].copy_(t)


def _stamp_iter(s) -> None:
    params = s["params"]
    for name, t in serving.stamp_iter(_loader(s), s["tau"]):
        params[name].copy_(t)


def _setup(s, cache: str):
    warm([s["tau_path"]])
    if cache == "cold":
        evict([s["model"]])


def _paired_ratio(s, cache: str) -> tuple[float, list[float]]:
    ratios = []
    for k in range(PAIRS):
        times = {}
        for fn in (_plain, _stamp_iter) if k % 2 == 0 else (_stamp_iter, _plain):
            _setup(s, cache)
            t0 = time.perf_counter()
            fn(s)
            times[fn] = time.perf_counter() - t0
        ratios.append(times[_stamp_iter] / times[_plain])
    return statistics.median(ratios), ratios


def _run(benchmark, s, fn, cache: str) -> None:
    benchmark.pedantic(fn, args=(s,), setup=lambda: _setup(s, cache), rounds=7, warmup_rounds=1)
    record(benchmark, nbytes=s["ck"].nbytes, roofline=None, op="loader -> param.copy_", cache=cache, impl="")


@pytest.mark.parametrize("cache", ["cold", "warm"])
@pytest.mark.benchmark(group="serving-iter")
def test_serving_iter_plain(benchmark, loaded, cache):
    _run(benchmark, loaded, _plain, cache)


@pytest.mark.parametrize("cache", ["cold", "warm"])
@pytest.mark.benchmark(group="serving-iter")
def test_serving_iter_stamped(benchmark, loaded, cache):
    _run(benchmark, loaded, _stamp_iter, cache)
    ratio, ratios = _paired_ratio(loaded, cache)
    benchmark.extra_info.update(
        {"impl": "fpcore", "ratio_to_plain": round(ratio, 3), "pair_ratios": [round(r, 3) for r in ratios]}
    )
    # the stamped parameters are what `fpcore stamp` writes (checked once, outside the timing)
    _stamp_iter(loaded)
    name = next(n for n in loaded["tau"].names() if loaded["ck"].info(n).numel)
    theta = loaded["ck"].read(name)
    assert torch.equal(loaded["params"][name], (theta.float() + loaded["tau"].get(name).float()).to(theta.dtype))
