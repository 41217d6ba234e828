"""Proof of training on the tiny-lm task (AdamW, dropout, warm-up + cosine, clipping): what recording
costs, what the record weighs, and what verification costs, against training measured in the same run
(group "pot-lm"). Torch on one thread (FPCORE_BENCH_POT_LM_EPOCHS epochs, default 1: 512 steps of 8
windows of 64 bytes, a checkpoint every 4 steps: 128 segments).

- recorder overhead: train_task with and without the Recorder in A/B pairs of alternating order
  (FPCORE_BENCH_POT_LM_PAIRS, default 7); extra_info
  recorder_overhead = median recorded / median plain - 1 (floor <= 0.10), and the pairs' spread;
- record size: the record folder against a full-state-every-k record at the same k (the checkpoints'
  bytes alone); extra_info size_ratio, and light_size_ratio for the light record `pot split` leaves
  (sealed header, batches, step digests, committed update sizes; floor <= 0.10), bytes_per_step;
- verification: check_replay with R chosen for a miss chance <= 1e-6 against a forger who faked 50 % of
  the segments; extra_info verify_over_training = its seconds / plain training's (floor <= 0.10), and
  the miss chance the same R gives against a 5 % forger;
- scaling: the same check on an embedded LocalCluster of 1 and of 2 workers (started before timing);
  extra_info two_over_one (floor <= 0.6).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch

pytest.importorskip("transformers")

from fpcore.pot.record import open_record  # noqa: E402
from fpcore.pot.tasks import TinyLM  # noqa: E402
from fpcore.pot.train import train_task  # noqa: E402
from fpcore.pot.verify import check_replay  # noqa: E402

EPOCHS = int(os.environ.get("FPCORE_BENCH_POT_LM_EPOCHS", "1"))
PAIRS = int(os.environ.get("FPCORE_BENCH_POT_LM_PAIRS", "7"))
RESULT: dict = {}


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    torch.set_num_threads(1)
    task = TinyLM({"epochs": EPOCHS})
    root = tmp_path_factory.mktemp("potlm")
    pairs = []
    for k in range(PAIRS):  # the order alternates: neither run always goes second
        if k % 2 == 0:
            _, m_plain, plain = train_task(None, task, 0, record=False)
            path, m_rec, rec = train_task(root / f"rec{k}", task, 0, every=4)
        else:
            path, m_rec, rec = train_task(root / f"rec{k}", task, 0, every=4)
            _, m_plain, plain = train_task(None, task, 0, record=False)
        # the baseline is the same training: the recorded run ends at the same weights, bit for bit
        for (n, a), (_, b) in zip(m_plain.state_dict().items(), m_rec.state_dict().items(), strict=True):
            assert torch.equal(a, b), n
        pairs.append((plain, rec))
    return task, path, pairs


@pytest.mark.benchmark(group="pot-lm")
def test_pot_lm_recorder_overhead_and_size(benchmark, lm):
    task, path, pairs = lm
    benchmark.pedantic(lambda: None, rounds=1)  # the figures are the A/B pairs measured in the fixture
    plain = statistics.median(p for p, _ in pairs)
    recd = statistics.median(r for _, r in pairs)
    rec = open_record(path)
    ck_bytes = sum(int(e["bytes"]) for e in rec.entries)
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    steps = int(rec.doc["steps"])
    benchmark.extra_info.update(
        {
            "steps": steps,
            "segments": len(rec.entries) - 1,
            "plain_seconds": round(plain, 3),
            "recorded_seconds": round(recd, 3),
            "recorder_overhead": round(recd / plain - 1, 4),
            "pair_overheads": [round(r / p - 1, 4) for p, r in pairs],
            "record_bytes": total,
            "full_state_every_k_bytes": ck_bytes,
            "size_ratio": round(total / ck_bytes, 4),
            "light_record_bytes": total - ck_bytes,  # what `pot split` leaves: the checkpoints go to the store
            "light_size_ratio": round((total - ck_bytes) / ck_bytes, 5),
            "bytes_per_step": round(total / steps, 1),
            "step_digest_bytes_per_step": 16,
        }
    )
    RESULT["plain"] = plain


@pytest.mark.benchmark(group="pot-lm")
def test_pot_lm_verify_cost_and_scaling(benchmark, lm):
    task, path, pairs = lm
    plain = statistics.median(p for p, _ in pairs)
    rec = open_record(path)
    data = task.load_data()

    def serial():
        return check_replay(rec, data, q=1, seed=11, soundness=1e-6)

    res = benchmark.pedantic(serial, rounds=3, warmup_rounds=0)
    assert res.passed
    snd = res.figures["soundness"]
    from fpcore._dask import cluster_client

    walls = {}
    for n in (1, 2):
        with cluster_client(None, n) as (client, _, _, _, _):
            check_replay(rec, data, q=1, seed=11, soundness=1e-6, cluster=(client, 1))  # warm the workers
            ts = []
            for _ in range(3):
                t0 = time.perf_counter()
                r = check_replay(rec, data, q=1, seed=11, soundness=1e-6, cluster=(client, 1))
                ts.append(time.perf_counter() - t0)
                assert r.passed
            walls[n] = statistics.median(ts)
    benchmark.extra_info.update(
        {
            "plain_training_seconds": round(plain, 3),
            "verify_seconds": round(benchmark.stats.stats.median, 3),
            "verify_over_training": round(benchmark.stats.stats.median / plain, 4),
            "replayed_segments": res.figures["replayed"],
            "replayed_steps": res.figures["replayed_steps"],
            "calibration_steps": res.figures["calibration_steps"],
            "r": snd["r"],
            "miss_f50": snd["miss_f50"],
            "miss_f05": snd["miss_f05"],
            "one_worker_seconds": round(walls[1], 3),
            "two_workers_seconds": round(walls[2], 3),
            "two_over_one": round(walls[2] / walls[1], 3),
        }
    )
