"""Alignment against a plain detect pass on a synthetic Llama-shaped bf16 model (group "align").

FPCORE_BENCH_ALIGN_PARAMS parameters (default 1e9), FPCORE_BENCH_ALIGN_ROUNDS rounds (default 3).
The suspect: the downstream model stamped with tau. Measured in the same run, each the median of its
rounds, A and B alternating:
- detect: `fpcore.detect.detect(tau, suspect, base)`, one streaming pass;
- align, nothing to undo: `align_checkpoint(suspect, base, out)` on the suspect as it is (the identity
  fast path; nothing written);
- align, permuted: the same on the suspect after permute_residual, permute_mlp and permute_heads
  (written once, not timed): matching every layer and writing the aligned copy.
extra_info ratio_to_detect = align seconds / detect seconds (floor <= 2), and the detect verdict on the
aligned copy (it must be found again).
"""

from __future__ import annotations

import os
import shutil
import statistics
import time

import pytest

from benchmarks.conftest import record
from fpcore import stamping
from fpcore.bench.checkpoint import build_checkpoints, model_files
from fpcore.detect import detect
from fpcore.fingerprint import transforms
from fpcore.fingerprint.align import align_checkpoint
from fpcore.fingerprint.folders import load_config, load_state, write_like

PARAMS = float(os.environ.get("FPCORE_BENCH_ALIGN_PARAMS", "1e9"))
ROUNDS = int(os.environ.get("FPCORE_BENCH_ALIGN_ROUNDS", "3"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    b = build_checkpoints(tmp_path_factory.mktemp("align"), PARAMS)
    root = b.base.parent
    stamping.stamp([(b.tau, 1.0)], [b.downstream], root / "suspect")
    cfg = load_config(b.base)
    sd = load_state(root / "suspect", "bench")
    sd = transforms.permute_residual(sd, 1)
    sd = transforms.permute_mlp(sd, 2)
    sd = transforms.permute_heads(sd, int(cfg.num_attention_heads), int(cfg.num_key_value_heads), 3)
    write_like(root / "suspect", root / "permuted", sd, {})
    del sd
    yield b, root
    shutil.rmtree(root, ignore_errors=True)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@pytest.mark.benchmark(group="align")
@pytest.mark.parametrize("which", ["suspect", "permuted"], ids=["nothing-to-undo", "permuted"])
def test_align_against_a_detect_pass(benchmark, built, which):
    b, root = built
    out = root / "aligned"

    def do_align():
        shutil.rmtree(out, ignore_errors=True)
        return align_checkpoint(root / which, b.base, out)

    def do_detect():
        return detect(b.tau, root / "suspect", b.base)

    do_detect()  # warm the page cache
    det, al = [], []
    for _ in range(ROUNDS):
        det.append(_timed(do_detect))
        al.append(_timed(do_align))
    path, report = benchmark.pedantic(do_align, rounds=1, warmup_rounds=0)
    al.append(benchmark.stats.stats.median)
    found = detect(b.tau, path or root / which, b.base)
    assert found.detected and (path is None) == (which == "suspect")
    d, a = statistics.median(det), statistics.median(al)
    record(
        benchmark,
        nbytes=sum(f.stat().st_size for f in model_files(root / which)) * 2,
        roofline=None,
        op=f"align ({which})",
        impl="fpcore.fingerprint.align.align_checkpoint",
        params=b.shape.params,
        detect_seconds=round(d, 3),
        align_seconds=round(a, 3),
        ratio_to_detect=round(a / d, 3),
        moved={s.step: s.moved for s in report.steps},
        quality=round(report.quality, 4),
        alpha_star_after=round(found.alpha_star, 3),
        rounds=ROUNDS,
    )
    shutil.rmtree(out, ignore_errors=True)
