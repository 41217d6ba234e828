"""Proof of training: what recording costs and what verification costs, against training measured here.

Group "pot": the honest recipe of `fpcore pot eval` (digits, 64 -> hidden -> 10 MLP, SGD, batch 8,
checkpoint every 4 steps, 4 epochs), at hidden 64 (the eval's) and 512 (a wider net: more compute per
step, the same number of checkpoints). Benchmarks, each over the same run:

- train_plain: the training loop alone (the baseline);
- train_recorded: the same loop with a Recorder (every checkpoint written, hashed and fsynced; the
  record folder renamed into place); extra_info["recorder_overhead"] = its median / train_plain's;
  "64-streaming" hands each copy to the writer threads at once (buffer_bytes=0) instead of queueing
  up to 64 MB of them (the default);
- replay_verify: check_replay on a record of that run (top-Q per epoch, 2 random segments, float64
  calibration, the update-size profile); extra_info["replay_over_training"] = its median / train_plain's;
- matching_verify (hidden 64 only): the trajectory-matching check; extra_info["matching_over_training"].

Ratios use train_plain's median from this run (measured first in file order; if run alone, measured on
the spot). The verification benchmarks run before the recording ones, after an os.sync(), so the
kernel's write-back of freshly written records does not run during them. Torch runs on one thread
here, and so do fpcore's native kernels (the nets are tiny; `fpcore pot` does the same).
"""

import itertools
import os

import pytest
import torch

import fpcore
from benchmarks.conftest import THREADS, median_seconds
from fpcore.pot.matching import check_matching
from fpcore.pot.record import open_record
from fpcore.pot.task import load_digits_split
from fpcore.pot.train import RunConfig, train_plain, train_recorded
from fpcore.pot.verify import check_replay

HIDDEN = (64, 512)
_PLAIN: dict[int, float] = {}
_count = itertools.count()


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


@pytest.fixture(autouse=True)
def one_thread():
    """torch and fpcore's native kernels on one thread (as `fpcore pot` runs), restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    if fpcore.HAS_NATIVE:
        fpcore.set_num_threads(1)
    yield
    torch.set_num_threads(n)
    if fpcore.HAS_NATIVE:
        fpcore.set_num_threads(THREADS)


def plain_median(cfg: RunConfig, train) -> float:
    if cfg.hidden not in _PLAIN:
        _PLAIN[cfg.hidden] = median_seconds(lambda: train_plain(cfg, train, 0), reps=5)
    return _PLAIN[cfg.hidden]


@pytest.fixture(scope="module")
def records(digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("pot-bench")
    out = {h: train_recorded(root / f"h{h}", RunConfig(hidden=h), digits[0], 0)[0] for h in HIDDEN}
    os.sync()  # the kernel's write-back of these files would otherwise run during the timed verification
    return out


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.benchmark(group="pot")
def test_pot_train_plain(benchmark, digits, hidden):
    cfg = RunConfig(hidden=hidden)
    benchmark.pedantic(train_plain, args=(cfg, digits[0], 0), rounds=7, iterations=1, warmup_rounds=1)
    _PLAIN[hidden] = benchmark.stats.stats.median
    benchmark.extra_info.update({"op": f"pot train, hidden {hidden}", "impl": "plain loop", "steps": _steps(cfg)})


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.benchmark(group="pot")
def test_pot_replay_verify(benchmark, digits, records, hidden):
    cfg = RunConfig(hidden=hidden)

    def setup():  # a fresh Record each round: nothing cached from the previous one
        return (open_record(records[hidden]), digits[0]), {"seed": next(_count)}

    benchmark.pedantic(check_replay, setup=setup, rounds=7, iterations=1, warmup_rounds=1)
    res = check_replay(open_record(records[hidden]), digits[0], seed=0)
    assert res.passed, res.reason
    ratio = benchmark.stats.stats.median / plain_median(cfg, digits[0])
    benchmark.extra_info.update(
        {
            "op": f"pot verify replay, hidden {hidden}",
            "impl": "fpcore",
            "replay_over_training": round(ratio, 4),
            "replayed_steps": res.figures["replayed_steps"] + res.figures["calibration_steps"],
            "steps": _steps(cfg),
        }
    )


@pytest.mark.benchmark(group="pot")
def test_pot_matching_verify(benchmark, digits, records):
    cfg = RunConfig(hidden=64)

    def setup():
        return (open_record(records[64]), digits[1]), {"seed": 0}

    benchmark.pedantic(check_matching, setup=setup, rounds=3, iterations=1)
    ratio = benchmark.stats.stats.median / plain_median(cfg, digits[0])
    benchmark.extra_info.update(
        {"op": "pot verify matching, hidden 64", "impl": "fpcore", "matching_over_training": round(ratio, 3)}
    )


@pytest.mark.parametrize(
    "hidden, buffer_bytes", [(64, 64 << 20), (512, 64 << 20), (64, 0)], ids=["64", "512", "64-streaming"]
)
@pytest.mark.benchmark(group="pot")
def test_pot_train_recorded(benchmark, digits, hidden, buffer_bytes, tmp_path):
    cfg = RunConfig(hidden=hidden)
    runs: list[dict] = []

    def setup():
        runs.append({})
        kw = {"timings": runs[-1], "buffer_bytes": buffer_bytes}
        return (tmp_path / f"r{next(_count)}", cfg, digits[0], 0), kw

    benchmark.pedantic(train_recorded, setup=setup, rounds=7, iterations=1, warmup_rounds=1)
    plain = plain_median(cfg, digits[0])
    ratio = benchmark.stats.stats.median / plain
    step_s = sorted(r["step_s"] for r in runs)[len(runs) // 2]
    finish_s = sorted(r["finish_s"] for r in runs)[len(runs) // 2]
    benchmark.extra_info.update(
        {
            "op": f"pot train, hidden {hidden}",
            "impl": "fpcore Recorder" + ("" if buffer_bytes else " (streaming)"),
            "recorder_overhead": round(ratio, 3),
            # where the extra time goes: inside Recorder.step() (the hot path) and finish() (waiting for
            # the writer thread, batches.npy, record.json, fsync and rename), each over the plain median
            "step_share": round(step_s / plain, 3),
            "finish_share": round(finish_s / plain, 3),
        }
    )


def _steps(cfg: RunConfig) -> int:
    return cfg.epochs * (1348 // cfg.batch_size)
