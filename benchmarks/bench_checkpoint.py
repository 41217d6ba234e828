"""Checkpoints file->file: stamp a sharded bf16 Llama-shaped model against the plain-copy I/O floor.

Group "checkpoint". The models come from fpcore.bench.checkpoint's builder (base, tuned, downstream,
tau = tuned - base) at FPCORE_BENCH_CKPT_PARAMS parameters (default 1.3e9, the issue's size; ~5e7 for
a smoke run). Both benchmarks move the same bytes (read downstream + tau, write a model's worth, fsync
the output) and remove their output between rounds, outside the timing. The page cache is warm: an
untimed warm-up round reads every input first. extra_info holds bytes, GB/s and ratio_to_floor (the
floor's median measured in the same run). The mergekit peer, peak RSS and the read-once check live in
``fpcore bench checkpoint`` (they need fresh processes).
"""

import os
import shutil
import statistics
import time

import pytest

from benchmarks.conftest import record
from fpcore import stamping
from fpcore.bench.checkpoint import build_checkpoints, copy_floor, model_files

PARAMS = float(os.environ.get("FPCORE_BENCH_CKPT_PARAMS", "1.3e9"))
ROUNDS = int(os.environ.get("FPCORE_BENCH_CKPT_ROUNDS", "3"))
ALPHA = 1.0
_FLOOR: dict[str, float] = {}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    b = build_checkpoints(tmp_path_factory.mktemp("ckpt"), PARAMS)
    yield b
    shutil.rmtree(b.base.parent, ignore_errors=True)


def _moved(b) -> int:
    """Bytes read (downstream files + tau) and written (a copy of the downstream files)."""
    return b.tau_bytes + 2 * sum(f.stat().st_size for f in model_files(b.downstream))


def _out(b):
    out = b.base.parent / "out"
    shutil.rmtree(out, ignore_errors=True)
    return out


def _floor_once(b, direct: bool) -> float:
    out = _out(b)
    t0 = time.perf_counter()
    copy_floor([b.downstream], b.tau, out, direct=direct)
    sec = time.perf_counter() - t0
    shutil.rmtree(out)
    return sec


def _floor_median(b, direct: bool = False) -> float:
    key = "direct" if direct else "copy"
    if key not in _FLOOR:  # when the stamp benchmark runs alone
        _floor_once(b, direct)
        _FLOOR[key] = statistics.median(_floor_once(b, direct) for _ in range(ROUNDS))
    return _FLOOR[key]


@pytest.mark.benchmark(group="checkpoint")
@pytest.mark.parametrize("direct", [False, True], ids=["page-cache", "o-direct"])
def test_checkpoint_floor_copy(benchmark, built, direct):
    """The floor: the model's files copied (shutil.copyfile through the page cache, or written with
    O_DIRECT as fpcore writes), tau read once, outputs fsynced."""
    if direct and not hasattr(os, "O_DIRECT"):
        pytest.skip("O_DIRECT is Linux-only")
    out = built.base.parent / "out"

    def setup():
        shutil.rmtree(out, ignore_errors=True)

    benchmark.pedantic(
        lambda: copy_floor([built.downstream], built.tau, out, direct=direct),
        setup=setup,
        rounds=ROUNDS,
        warmup_rounds=1,
    )
    shutil.rmtree(out, ignore_errors=True)
    _FLOOR["direct" if direct else "copy"] = benchmark.stats.stats.median
    record(
        benchmark,
        nbytes=_moved(built),
        roofline=None,
        op="checkpoint floor",
        impl=("O_DIRECT copy" if direct else "shutil.copyfile") + " + read tau + fsync",
        params=built.shape.params,
        cache="warm",
        ratio_to_floor=1.0,
    )


@pytest.mark.benchmark(group="checkpoint")
def test_checkpoint_stamp_file_to_file(benchmark, built):
    out = built.base.parent / "out"
    floor = _floor_median(built)

    def setup():
        shutil.rmtree(out, ignore_errors=True)

    benchmark.pedantic(
        lambda: stamping.stamp([(built.tau, ALPHA)], [built.downstream], out),
        setup=setup,
        rounds=ROUNDS,
        warmup_rounds=1,
    )
    shutil.rmtree(out, ignore_errors=True)
    record(
        benchmark,
        nbytes=_moved(built),
        roofline=None,
        op="checkpoint stamp",
        impl="fpcore.stamping.stamp",
        params=built.shape.params,
        cache="warm",
        floor_seconds=round(floor, 4),
        ratio_to_floor=round(benchmark.stats.stats.median / floor, 3),
        **(
            {"ratio_to_direct_floor": round(benchmark.stats.stats.median / _floor_median(built, True), 3)}
            if hasattr(os, "O_DIRECT")
            else {}
        ),
    )
