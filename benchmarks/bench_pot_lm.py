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
- verification: after each A/B pair, check_replay of the new record (opened afresh; other random segments
  each round) with R chosen for a miss chance <= 1e-6 against a forger who faked 50 % of the segments;
  verify_over_training per seed = median over its rounds of verification / that round's plain training
  (floor <= 0.10; the top-level figure is the worst seed), and the miss chance the same R gives against
  a 5 % forger. R is fixed by the soundness target, so this ratio falls as training grows: one epoch
  (128 segments) replays ~18 % of the steps;
- scaling: an embedded LocalCluster of 1 worker, then one of 2 (one at a time, each warmed by one check
  per record); FPCORE_BENCH_POT_LM_SCALING_ROUNDS (default 5) checks per seed on each; two_over_one per
  seed, and the worst (floor <= 0.6).
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
SCALING_ROUNDS = int(os.environ.get("FPCORE_BENCH_POT_LM_SCALING_ROUNDS", "5"))
RESULT: dict = {}


def _verify_once(path, data, seed: int, cluster=None) -> tuple[float, dict]:
    """One check_replay of a freshly opened record (nothing read before is reused), its seconds and figures."""
    rec = open_record(path)
    t0 = time.perf_counter()
    res = check_replay(rec, data, q=1, seed=seed, soundness=1e-6, cluster=cluster)
    sec = time.perf_counter() - t0
    assert res.passed
    return sec, res.figures


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """Per seed: PAIRS rounds of (plain training, recorded training, in alternating order; then one serial
    verification of the new record): the A/B pairs and the verification measured next to its training."""
    torch.set_num_threads(1)  # torch's and fpcore's threads as `fpcore pot` sets them (--threads 1)
    if fpcore.HAS_NATIVE:
        fpcore.set_num_threads(1)
    task = TinyLM({"epochs": EPOCHS})
    data = task.load_data()
    root = tmp_path_factory.mktemp("potlm")
    runs = {}
    k = 0
    for seed in SEEDS:
        pairs, verifies = [], []
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
            # the baseline is the same training: the recorded run ends at the same weights, bit for bit
            for (n, a), (_, b) in zip(m_plain.state_dict().items(), m_rec.state_dict().items(), strict=True):
                assert torch.equal(a, b), n
            pairs.append((plain, rec))
            verifies.append(_verify_once(path, data, 11 + k))  # other random segments each round
            k += 1
        runs[seed] = (path, pairs, verifies)
    return task, runs


@pytest.mark.benchmark(group="pot-lm")
def test_pot_lm_recorder_overhead_and_size(benchmark, lm):
    task, runs = lm
    benchmark.pedantic(lambda: None, rounds=1)  # the figures are the A/B pairs measured in the fixture
    every = [pr for _, pairs, _ in runs.values() for pr in pairs]
    plain = statistics.median(p for p, _ in every)
    recd = statistics.median(r for _, r in every)
    path = runs[SEEDS[0]][0]
    rec = open_record(path)
    ck_bytes = sum(int(e["bytes"]) for e in rec.entries)
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    steps = int(rec.doc["steps"])
    per_seed = {}
    for seed, (_, pairs, _) in runs.items():
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
    """verify_over_training per seed: the median over its rounds of (serial verification / the plain
    training of the same round). Scaling: an embedded LocalCluster of 1 worker, then one of 2, each started
    and warmed by one check per record before timing SCALING_ROUNDS checks of each seed's record (other
    random segments each); two_over_one per seed = median 2-worker seconds / median 1-worker seconds."""
    task, runs = lm
    data = task.load_data()
    from fpcore._dask import cluster_client

    seeds: dict[str, dict] = {}
    for seed, (_, pairs, verifies) in runs.items():
        f = verifies[-1][1]
        seeds[str(seed)] = {
            "plain_training_seconds": [round(p, 3) for p, _ in pairs],
            "verify_seconds": [round(v, 3) for v, _ in verifies],
            "verify_over_training": round(
                statistics.median(v / p for (v, _), (p, _) in zip(verifies, pairs, strict=True)), 4
            ),
            "replayed_segments": f["replayed"],
            "replayed_steps": f["replayed_steps"],
            "calibration_steps": f["calibration_steps"],
            "r": f["soundness"]["r"],
            "miss_f50": f["soundness"]["miss_f50"],
            "miss_f05": f["soundness"]["miss_f05"],
        }
    for n in (1, 2):  # one cluster at a time, as a user runs one (an idle one's monitors take CPU too)
        with cluster_client(None, n) as (client, _, _, _, _):
            for seed, (path, _, _) in runs.items():
                _verify_once(path, data, 10, cluster=(client, 1))  # each worker builds its replayer once
                walls = [_verify_once(path, data, 11 + k, cluster=(client, 1))[0] for k in range(SCALING_ROUNDS)]
                seeds[str(seed)][f"workers_{n}_seconds"] = round(statistics.median(walls), 3)
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
