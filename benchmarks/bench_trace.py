"""Licensee codes: what the code costs in a stamp, and what a trace costs against a detect pass.

Group "trace", each coded figure with its plain twin measured in the same run:

- in memory: fpcore.stamp with a code against the same stamp without (bf16 and fp32 models, >= 256 MB
  operands); extra_info ratio_to_plain = coded GB/s / plain GB/s (floor: >= 0.95);
- file to file: fpcore.stamping.stamp of tau into a sharded bf16 Llama-shaped model (the builder of
  fpcore.bench.checkpoint, FPCORE_BENCH_CKPT_PARAMS parameters, default 1.3e9) with a licensee code against
  the same stamp without; ratio_to_plain = coded seconds / plain seconds (floor: <= 1.05);
- trace over 10^6 candidates (one pass over suspect and reference, then the candidates scored) against
  one `fpcore detect` pass over the same model (suspect, base, tau); ratio_to_detect = trace seconds /
  detect seconds (floor: <= 10).
"""

from __future__ import annotations

import os
import shutil
import statistics
import time

import pytest
import torch

import fpcore
from benchmarks.conftest import BENCH_MB, MB, median_seconds, record
from fpcore import stamping
from fpcore.bench.checkpoint import build_checkpoints, model_files
from fpcore.detect import detect
from fpcore.trace.find import trace
from fpcore.trace.key import TraceKey

PARAMS = float(os.environ.get("FPCORE_BENCH_CKPT_PARAMS", "1.3e9"))
ROUNDS = int(os.environ.get("FPCORE_BENCH_CKPT_ROUNDS", "3"))
PAIRS = 9
CANDIDATES = int(os.environ.get("FPCORE_BENCH_TRACE_CANDIDATES", str(10**6)))
KEY = TraceKey(bytes(range(32)))
_PLAIN: dict[str, float] = {}


# ---- in memory ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def operands(request):
    dtype = request.param
    n = BENCH_MB * MB // (2 if dtype == torch.bfloat16 else 4)
    g = torch.Generator().manual_seed(0)
    base = (torch.randn(n, generator=g) * 0.02).to(dtype)
    tau = (torch.randn(n, generator=g) * 1e-3).to(dtype)
    return dtype, base, tau, torch.empty_like(base)


@pytest.mark.benchmark(group="trace")
def test_trace_stamp_in_memory_coded(benchmark, operands):
    dtype, base, tau, out = operands
    code = KEY.code("licensee-7", "model.layers.0.mlp.down_proj.weight")
    benchmark(fpcore.stamp, base, tau, 1.0, out=out, code=code)
    # the plain twin, in A/B pairs with the coded stamp (this machine's speed drifts between runs)
    pairs = [
        (
            median_seconds(lambda: fpcore.stamp(base, tau, 1.0, out=out), reps=3, warmup=0),
            median_seconds(lambda: fpcore.stamp(base, tau, 1.0, out=out, code=code), reps=3, warmup=0),
        )
        for _ in range(9)
    ]
    plain = statistics.median(p for p, _ in pairs)
    nbytes = 3 * base.numel() * base.element_size()
    record(
        benchmark,
        nbytes=nbytes,
        roofline="add",
        op="stamp with licensee code",
        dtypes=f"{str(dtype)[6:]} (base, tau, out)",
        impl="fpcore",
        plain_gbps=round(nbytes / plain / 1e9, 3),
        ratio_to_plain=round(plain / benchmark.stats.stats.median, 3),
        pair_ratio_median=round(statistics.median(p / c for p, c in pairs), 3),
        pairs=len(pairs),
    )


# ---- file to file, and trace against detect ------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    b = build_checkpoints(tmp_path_factory.mktemp("trace"), PARAMS)
    yield b
    shutil.rmtree(b.base.parent, ignore_errors=True)


def _stamp(b, coded: bool) -> float:
    out = b.base.parent / "out"
    shutil.rmtree(out, ignore_errors=True)
    kw = {"trace_key": KEY, "licensees": ["licensee-7"]} if coded else {}
    t0 = time.perf_counter()
    stamping.stamp([(b.tau, 1.0)], [b.downstream], out, **kw)
    sec = time.perf_counter() - t0
    return sec


def _moved(b) -> int:
    return b.tau_bytes + 2 * sum(f.stat().st_size for f in model_files(b.downstream))


@pytest.mark.benchmark(group="trace")
def test_trace_stamp_file_to_file_coded(benchmark, built):
    """Rounds alternate plain and coded stamps (A B A B ...), so both see the same machine."""
    _stamp(built, False)  # warm the page cache
    plain, coded = [], []
    for _ in range(max(PAIRS, ROUNDS)):  # whole-file stamps are I/O bound and noisy (+-15 % per pair here)
        plain.append(_stamp(built, False))
        coded.append(_stamp(built, True))
    benchmark.pedantic(lambda: _stamp(built, True), rounds=1, warmup_rounds=0)
    med_plain, med_coded = statistics.median(plain), statistics.median(coded + [benchmark.stats.stats.median])
    pair_ratio = statistics.median(c / p for c, p in zip(coded, plain, strict=True))
    record(
        benchmark,
        nbytes=_moved(built),
        roofline=None,
        op="file stamp with licensee code",
        impl="fpcore.stamping.stamp",
        params=built.shape.params,
        plain_seconds=round(med_plain, 4),
        coded_seconds=round(med_coded, 4),
        ratio_to_plain=round(med_coded / med_plain, 3),
        pair_ratio_median=round(pair_ratio, 3),
        pairs=len(plain),
    )


@pytest.mark.benchmark(group="trace")
def test_trace_million_candidates_against_detect(benchmark, built):
    """The suspect: the downstream model stamped with tau and a code. detect reads suspect, base and
    tau; trace reads suspect and reference (the downstream model) and scores 10^6 candidates."""
    suspect = built.base.parent / "suspect"
    shutil.rmtree(suspect, ignore_errors=True)
    stamping.stamp([(built.tau, 1.0)], [built.downstream], suspect, trace_key=KEY, licensees=["123456"])
    t0 = time.perf_counter()
    det = detect(built.tau, suspect, built.base)
    detect_seconds = time.perf_counter() - t0
    res = benchmark.pedantic(
        lambda: trace(suspect, built.downstream, KEY, CANDIDATES), rounds=max(1, ROUNDS - 1), warmup_rounds=1
    )
    assert [c.licensee for c in res.identified] == ["123456"] and det.detected
    record(
        benchmark,
        nbytes=sum(f.stat().st_size for f in model_files(suspect)) * 2,
        roofline=None,
        op="trace 10^6 candidates",
        impl="fpcore.trace.find.trace",
        params=built.shape.params,
        candidates=CANDIDATES,
        detect_seconds=round(detect_seconds, 3),
        ratio_to_detect=round(benchmark.stats.stats.median / detect_seconds, 3),
        p=res.identified[0].p,
    )
    shutil.rmtree(suspect, ignore_errors=True)
