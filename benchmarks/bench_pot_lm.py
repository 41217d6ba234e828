"""Proof of training on the tiny-lm task (AdamW, dropout, warm-up + cosine, clipping): what recording
costs, what the record weighs, and what verification costs, against training measured in the same run
(group "pot-lm"). Torch and fpcore's native kernels on one thread, as `fpcore pot` runs them. Each seed
of FPCORE_BENCH_POT_LM_SEEDS (default 0,1,2) trains FPCORE_BENCH_POT_LM_EPOCHS epochs (default 3: 1,536
steps of 8 windows of 64 bytes, a checkpoint every 4 steps: 384 segments).

- recorder overhead: train_task with and without the Recorder in A/B pairs of alternating order
  (FPCORE_BENCH_POT_LM_PAIRS per seed, default 3); extra_info recorder_overhead = median recorded /
  median plain - 1 over every pair (floor <= 0.10), recorder_overhead_per_seed, and every pair's;
- record size: the record folder against a full-state-every-k record at the same k (the checkpoints'
  bytes alone); extra_info size_ratio, and light_size_ratio for the light record `pot split` leaves
  (sealed header, batches, step digests, committed update sizes; floor <= 0.10), bytes_per_step;
- verification: check_replay of each seed's record with R chosen for a miss chance <= 1e-6 against a
  forger who faked 50 % of the segments; verify_over_training = its seconds / that seed's plain training
  (floor <= 0.10; the top-level figure is the worst seed), and the miss chance the same R gives against
  a 5 % forger. R is fixed by the soundness target, so this ratio falls as training grows: one epoch
  (128 segments) replays ~18 % of the steps;
- scaling: the same check on an embedded LocalCluster of 1 and of 2 workers (started, and warmed by one
  check, before timing); two_over_one per seed, and the worst (floor <= 0.6).
Every timed check opens the record afresh and draws other random segments (seeds 11, 12, 13): no
checkpoint read by an earlier round is reused.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time

import pytest
import torch

import fpcore

pytest.importorskip("transformers")

from fpcore.pot.record import open_record  # noqa: E402
from fpcore.pot.tasks import TinyLM  # noqa: E402
from fpcore.pot.train import train_task  # noqa: E402
from fpcore.pot.verify import check_replay  # noqa: E402

EPOCHS = int(os.environ.get("FPCORE_BENCH_POT_LM_EPOCHS", "3"))
PAIRS = int(os.environ.get("FPCORE_BENCH_POT_LM_PAIRS", "3"))
SEEDS = [int(x) for x in os.environ.get("FPCORE_BENCH_POT_LM_SEEDS", "0,1,2").split(",")]
RESULT: dict = {}


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """Per seed: PAIRS A/B pairs (plain, recorded) and the last recorded run's record."""
    torch.set_num_threads(1)  # torch's and fpcore's threads as `fpcore pot` sets them (--threads 1)
    if fpcore.HAS_NATIVE:
        fpcore.set_num_threads(1)
    task = TinyLM({"epochs": EPOCHS})
    root = tmp_path_factory.mktemp("potlm")
    runs = {}
    k = 0
    for seed in SEEDS:
        pairs = []
        for _ in range(PAIRS):  # the order alternates: neither run always goes second
            folder = root / f"rec{seed}"
            if folder.exists():
                shutil.rmtree(folder)
            if k % 2 == 0:
                _, m_plain, plain = train_task(None, task, seed, record=False)
                path, m_rec, rec = train_task(folder, task, seed, every=4)
            else:
                path, m_rec, rec = train_task(folder, task, seed, every=4)
                _, m_plain, plain = train_task(None, task, seed, record=False)
            k += 1
            # the baseline is the same training: the recorded run ends at the same weights, bit for bit
            for (n, a), (_, b) in zip(m_plain.state_dict().items(), m_rec.state_dict().items(), strict=True):
                assert torch.equal(a, b), n
            pairs.append((plain, rec))
        runs[seed] = (path, pairs)
    return task, runs


@pytest.mark.benchmark(group="pot-lm")
def test_pot_lm_recorder_overhead_and_size(benchmark, lm):
    task, runs = lm
    benchmark.pedantic(lambda: None, rounds=1)  # the figures are the A/B pairs measured in the fixture
    every = [pr for _, pairs in runs.values() for pr in pairs]
    plain = statistics.median(p for p, _ in every)
    recd = statistics.median(r for _, r in every)
    path = runs[SEEDS[0]][0]
    rec = open_record(path)
    ck_bytes = sum(int(e["bytes"]) for e in rec.entries)
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    steps = int(rec.doc["steps"])
    per_seed = {}
    for seed, (_, pairs) in runs.items():
        per_seed[str(seed)] = round(
            statistics.median(r for _, r in pairs) / statistics.median(p for p, _ in pairs) - 1, 4
        )
    benchmark.extra_info.update(
        {
            "seeds": SEEDS,
            "pairs_per_seed": PAIRS,
            "steps": steps,
            "segments": len(rec.entries) - 1,
            "plain_seconds": round(plain, 3),
            "recorded_seconds": round(recd, 3),
            # median recorded / median plain over every pair of every seed
            "recorder_overhead": round(recd / plain - 1, 4),
            "recorder_overhead_per_seed": per_seed,
            "pair_overheads": [round(r / p - 1, 4) for p, r in every],
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
    """Each seed's record: serial verification (3 rounds, median) against that seed's plain training, and
    the same check on 1 and on 2 LocalCluster workers (warmed, then 3 rounds each, median)."""
    task, runs = lm
    data = task.load_data()
    from fpcore._dask import cluster_client

    seeds: dict[str, dict] = {}
    for seed, (path, pairs) in runs.items():
        plain = statistics.median(p for p, _ in pairs)
        ts = []
        for k in range(3):  # a fresh record and other segments each round: nothing read before is reused
            rec = open_record(path)
            t0 = time.perf_counter()
            res = check_replay(rec, data, q=1, seed=11 + k, soundness=1e-6)
            ts.append(time.perf_counter() - t0)
            assert res.passed
        seeds[str(seed)] = {
            "plain_training_seconds": round(plain, 3),
            "verify_seconds": round(statistics.median(ts), 3),
            "verify_over_training": round(statistics.median(ts) / plain, 4),
            "replayed_segments": res.figures["replayed"],
            "replayed_steps": res.figures["replayed_steps"],
            "calibration_steps": res.figures["calibration_steps"],
            "r": res.figures["soundness"]["r"],
            "miss_f50": res.figures["soundness"]["miss_f50"],
            "miss_f05": res.figures["soundness"]["miss_f05"],
        }
    for n in (1, 2):
        with cluster_client(None, n) as (client, _, _, _, _):
            for seed, (path, _) in runs.items():
                # warm the workers (each builds its replayer once per record), then other segments each round
                check_replay(open_record(path), data, q=1, seed=10, soundness=1e-6, cluster=(client, 1))
                ts = []
                for k in range(3):
                    rec = open_record(path)
                    t0 = time.perf_counter()
                    r = check_replay(rec, data, q=1, seed=11 + k, soundness=1e-6, cluster=(client, 1))
                    ts.append(time.perf_counter() - t0)
                    assert r.passed
                seeds[str(seed)][f"workers_{n}_seconds"] = round(statistics.median(ts), 3)
    for f in seeds.values():
        f["two_over_one"] = round(f["workers_2_seconds"] / f["workers_1_seconds"], 3)
    first = seeds[str(SEEDS[0])]
    benchmark.pedantic(lambda: None, rounds=1)  # the figures are the per-seed timings above
    benchmark.extra_info.update(
        {
            "per_seed": seeds,
            "verify_over_training": max(f["verify_over_training"] for f in seeds.values()),  # the worst seed
            "two_over_one": max(f["two_over_one"] for f in seeds.values()),
            "r": first["r"],
            "miss_f50": first["miss_f50"],
            "miss_f05": first["miss_f05"],
        }
    )
