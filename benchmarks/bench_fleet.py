"""Fleet stamping on Dask against the single process, both as whole commands (group "fleet").

- throughput: 8 copies of a ~0.3B bf16 Llama-shaped model (FPCORE_BENCH_FLEET_PARAMS, default 3e8) and
  one tau. `fpcore stamp TAU M1..M8 -o OUT` against `fpcore fleet run PLAN --workers 2` (embedded
  LocalCluster) on the same inputs, in A/B pairs of alternating order, each command started after an
  os.sync() (outside its time: no command pays for writing back the other's outputs)
  (FPCORE_BENCH_FLEET_ROUNDS, default 3). extra_info:
  ratio_whole = single-process seconds / fleet seconds (whole commands: the fleet's includes starting
  its cluster, hashing every model and output for the ledger, and the ledger); ratio_steady = the
  single process's stamp seconds / the fleet's seconds from first submit to last ledger line (the
  rate a long plan runs at); worker_peak_rss_mb. Floors: throughput >= 0.9, peak RSS <= 512 MB per worker.
- per-job overhead: 64 jobs of a 1 MB model, one job per task, 2 workers. overhead_ms = (work seconds x
  workers - the jobs' own seconds) / jobs: scheduling, transfers and the ledger per job (floor <= 100 ms).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from benchmarks.conftest import record  # noqa: E402
from fpcore.bench.checkpoint import build_checkpoints, model_files  # noqa: E402

PARAMS = float(os.environ.get("FPCORE_BENCH_FLEET_PARAMS", "3e8"))
ROUNDS = int(os.environ.get("FPCORE_BENCH_FLEET_ROUNDS", "3"))
MODELS = 8


def _cli(*args: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "fpcore.cli", *args, "--json"], capture_output=True, text=True)
    sec = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    return sec, json.loads(r.stdout)


def _plan(root: Path, tau: Path, models: list[Path], out: Path) -> Path:
    jobs = "\n".join(f"  - model: {m}" for m in models)
    p = root / "plan.yaml"
    p.write_text(f"vector: {tau}\nalpha: 1.0\nout: {out}\njobs:\n{jobs}\n")
    return p


@pytest.fixture(scope="module")
def fleet_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    b = build_checkpoints(root / "ck", PARAMS)
    models = [b.downstream]
    for i in range(1, MODELS):
        models.append(shutil.copytree(b.downstream, root / f"m{i}"))
    yield root, b, models
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.benchmark(group="fleet")
def test_fleet_throughput_against_single_process(benchmark, fleet_inputs):
    root, b, models = fleet_inputs
    single_out, fleet_out = root / "out-single", root / "out-fleet"
    plan = _plan(root, b.tau, models, fleet_out)

    def single() -> tuple[float, dict]:
        shutil.rmtree(single_out, ignore_errors=True)
        os.sync()  # the other command's 4.8 GB of dirty pages are not written back on this one's time
        return _cli("stamp", str(b.tau), *map(str, models), "-o", str(single_out), "--quiet")

    def fleet() -> tuple[float, dict]:
        shutil.rmtree(fleet_out, ignore_errors=True)
        os.sync()
        return _cli("fleet", "run", str(plan), "--workers", "2", "--quiet")

    single()  # warm the page cache
    pairs = []
    for k in range(ROUNDS):  # the order alternates: neither command always runs second
        if k % 2 == 0:
            s = single()
            pairs.append((s, fleet()))
        else:
            f = fleet()
            pairs.append((single(), f))
    benchmark.pedantic(fleet, rounds=1, warmup_rounds=0)
    for m in models:  # the outputs are the single process's, byte for byte
        name = m.name
        for f in model_files(single_out / name):
            assert (fleet_out / name / f.name).read_bytes() == f.read_bytes(), f"{name}/{f.name} differs"
    s_whole = statistics.median(s for (s, _), _ in pairs)
    f_whole = statistics.median(f for _, (f, _) in pairs)
    s_stamp = statistics.median(j["seconds"] for (_, j), _ in pairs)
    f_work = statistics.median(j["work_seconds"] for _, (_, j) in pairs)
    rss = max(max(j["worker_peak_rss"].values()) for _, (_, j) in pairs)
    model_bytes = sum(f.stat().st_size for m in models for f in model_files(m))
    record(
        benchmark,
        nbytes=2 * model_bytes + b.tau_bytes,
        roofline=None,
        params=PARAMS,
        models=MODELS,
        workers=2,
        pairs=len(pairs),
        single_seconds=round(s_whole, 3),
        fleet_seconds=round(f_whole, 3),
        ratio_whole=round(s_whole / f_whole, 3),
        single_stamp_seconds=round(s_stamp, 3),
        fleet_work_seconds=round(f_work, 3),
        fleet_cluster_seconds=round(statistics.median(j["cluster_seconds"] for _, (_, j) in pairs), 3),
        ratio_steady=round(s_stamp / f_work, 3),
        pair_ratios_whole=[round(s / f, 3) for (s, _), (f, _) in pairs],
        worker_peak_rss_mb=round(rss / 2**20, 1),
    )


@pytest.mark.benchmark(group="fleet")
def test_fleet_per_job_overhead(benchmark, tmp_path):
    import torch

    from fpcore import stamping
    from fpcore.io import write_safetensors

    g = torch.Generator().manual_seed(0)
    shapes = {f"layers.{k}.weight": (256, 256) for k in range(8)}  # 1 MB of bf16
    base = {n: torch.randn(s, generator=g) * 0.02 for n, s in shapes.items()}
    for name, scale in (("base", 0.0), ("tuned", 1e-3), ("m0", 2e-3)):
        (tmp_path / name).mkdir()
        sd = {n: (t + scale * torch.randn(t.shape, generator=g)).bfloat16() for n, t in base.items()}
        write_safetensors(tmp_path / name / "model.safetensors", sd, {"format": "pt"})
    tau = tmp_path / "tau.safetensors"
    stamping.extract(tmp_path / "tuned", tmp_path / "base", tau)
    models = [tmp_path / "m0"] + [shutil.copytree(tmp_path / "m0", tmp_path / f"m{i}") for i in range(1, 64)]
    out = tmp_path / "out"
    plan = _plan(tmp_path, tau, models, out)
    res: dict = {}

    def fleet() -> None:
        shutil.rmtree(out, ignore_errors=True)
        res.update(_cli("fleet", "run", str(plan), "--workers", "2", "--batch", "1", "--quiet")[1])

    benchmark.pedantic(fleet, rounds=3, warmup_rounds=0)
    ledger = [json.loads(x) for x in (out / "fleet-ledger.jsonl").read_text().splitlines()]
    own = sum(e["seconds"] for e in ledger)
    overhead = (res["work_seconds"] * res["workers"] - own) / len(ledger)
    record(
        benchmark,
        nbytes=sum(e["bytes"] for e in ledger),
        roofline=None,
        jobs=len(ledger),
        work_seconds=round(res["work_seconds"], 3),
        jobs_own_seconds=round(own, 3),
        overhead_ms=round(overhead * 1e3, 1),
    )
