"""The fleet driver: runs a plan's jobs on Dask distributed (an embedded LocalCluster, or a cluster by
address), skipping the ones the ledger says are done, and appends one chained ledger line per job.

Jobs that share their vectors (and alphas) go to a worker in batches, so each tau tensor is read once
per batch. Only the driver writes the ledger. A lock file in the output root keeps two runs of the same
plan apart; the next run removes the temporaries a killed run left in the output folders.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fpcore._dask import cluster_client
from fpcore.fleet.digest import file_stats, model_files
from fpcore.fleet.ledger import LedgerState, LedgerWriter, read_ledger
from fpcore.fleet.plan import Job, Plan
from fpcore.io.atomic import TMP_PREFIX
from fpcore.io.digest import ALGORITHM, checkpoint_digest

LOCK_NAME = ".fleet.lock"
DEFAULT_BATCH = 4  # jobs per task: tau read once per batch; a killed driver loses at most a batch's lines


@dataclass
class FleetResult:
    plan: Path
    ledger: Path
    scheduler: str
    workers: int
    seconds: float
    done: list[dict[str, Any]] = field(default_factory=list)  # ledger lines written by this run
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Job] = field(default_factory=list)  # done by an earlier run (the ledger says so)
    removed_temporaries: list[str] = field(default_factory=list)
    cluster_seconds: float = 0.0  # starting (or connecting to) the cluster
    start_method: str | None = None  # how the embedded cluster's workers started (None: a cluster by address)
    work_seconds: float = 0.0  # first job submitted to last result in the ledger
    worker_peak_rss: dict[str, int] = field(default_factory=dict)  # worker -> peak RSS in bytes

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_json(self) -> dict[str, Any]:
        def brief(e: dict[str, Any]) -> dict[str, Any]:
            j = e["job"]
            return {"index": j["index"], "model": j["model"], "output": j["output"], "error": e.get("error")}

        return {
            "plan": str(self.plan),
            "ledger": str(self.ledger),
            "scheduler": self.scheduler,
            "workers": self.workers,
            "seconds": self.seconds,
            "done": [brief(e) for e in self.done],
            "failed": [brief(e) for e in self.failed],
            "skipped": [{"index": j.index, "model": str(j.model), "output": str(j.output)} for j in self.skipped],
            "bytes": sum(e.get("bytes", 0) for e in self.done),
            "removed_temporaries": self.removed_temporaries,
            "cluster_seconds": self.cluster_seconds,
            "start_method": self.start_method,
            "work_seconds": self.work_seconds,
            "worker_peak_rss": self.worker_peak_rss,
        }


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            # a POSIX record lock: held by this process alone (forked workers do not inherit it, so a
            # killed driver's lock goes with it), and honoured over NFS
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise ValueError(f"{out}: another fleet run holds {LOCK_NAME}; wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def _remove_temporaries(plan: Plan) -> list[str]:
    """Hidden temporaries (.fpcore-tmp-*) a killed run left beside the plan's outputs."""
    removed = []
    for folder in sorted({j.output.parent for j in plan.jobs}):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(TMP_PREFIX):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                removed.append(str(p))
    return removed


def _is_done(job: Job, job_id: str, latest: dict[str, dict[str, Any]]) -> bool:
    """The ledger's last line for this job says done, and the output's files are the ones it recorded
    (names, sizes and modification times: a file rewritten since shows)."""
    e = latest.get(job_id)
    if e is None or e.get("status") != "done" or not job.output.exists():
        return False
    return file_stats(job.output) == e.get("output_files")


def _batches(jobs: list[tuple[Job, str]], size: int) -> list[list[tuple[Job, str]]]:
    groups: dict[Any, list[tuple[Job, str]]] = {}
    for j in jobs:
        groups.setdefault(j[0].batch_key, []).append(j)
    out = []
    for g in groups.values():
        out += [g[k : k + size] for k in range(0, len(g), size)]
    return out


def _model_bytes(p: Path) -> int:
    return sum(f.stat().st_size for _, f in model_files(p))


@contextmanager
def _bars(total_jobs: int, total_bytes: int, show: bool) -> Iterator[Any]:
    if not show:
        yield None
        return
    from tqdm import tqdm

    with (
        tqdm(total=total_jobs, desc="jobs", unit="job", position=0, file=sys.stderr) as jb,
        tqdm(
            total=total_bytes, desc="bytes", unit="B", unit_scale=True, unit_divisor=1024, position=1, file=sys.stderr
        ) as bb,
    ):

        def update(jobs: int, nbytes: int) -> None:
            jb.update(jobs)
            bb.update(nbytes)

        yield update


def run_fleet(
    plan: Plan,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    verify: bool = False,
    batch_size: int = DEFAULT_BATCH,
    progress: bool = False,
) -> FleetResult:
    """Runs every job not already done. Raises ValueError for a broken ledger or a held lock."""
    if batch_size < 1:
        raise ValueError(f"fleet run: batch size must be >= 1, got {batch_size}")
    t0 = time.perf_counter()
    plan.out.mkdir(parents=True, exist_ok=True)
    with _locked(plan.out):
        removed = _remove_temporaries(plan)
        ledger = LedgerWriter(plan.ledger)
        try:
            latest = ledger.state.latest()
            ids = {j.index: j.job_id(plan.key_id) for j in plan.jobs}
            skipped = [j for j in plan.jobs if _is_done(j, ids[j.index], latest)]
            skip = {j.index for j in skipped}
            todo = [(j, ids[j.index]) for j in plan.jobs if j.index not in skip]
            res = FleetResult(plan.path, plan.ledger, "", 0, 0.0, skipped=skipped, removed_temporaries=removed)
            if not todo:
                res.scheduler = scheduler or "none (nothing to do)"
                res.seconds = time.perf_counter() - t0
                return res
            by_id = dict((jid, j) for j, jid in todo)
            # the vectors' digests (for the ledger) are read before the cluster starts: while Dask
            # imports in a helper thread (fpcore._dask.preload; the hash runs without the GIL), not
            # on a core the workers stamp on
            vec_digest = {str(p): checkpoint_digest(p) for p in plan.vectors}
            total_bytes = sum(_model_bytes(j.model) for j, _ in todo)
            from distributed import as_completed

            from fpcore.fleet.worker import run_batch

            t_cluster = time.perf_counter()
            with cluster_client(scheduler, workers, fork=True) as (client, address, n, threads, method):
                res.scheduler, res.workers, res.start_method = address, n, method
                t_work = time.perf_counter()
                res.cluster_seconds = t_work - t_cluster
                batches = _batches(todo, batch_size)
                payloads = [
                    {
                        "jobs": [{**j.describe(), "job_id": jid} for j, jid in b],
                        "trace_key": str(plan.trace_key) if plan.trace_key else None,
                        "threads": threads,
                        "verify": verify,
                    }
                    for b in batches
                ]
                futures = {
                    client.submit(run_batch, p, key=f"fpcore-fleet-{os.getpid()}-{k}", pure=False, retries=0): p
                    for k, p in enumerate(payloads)
                }
                with _bars(len(todo), total_bytes, progress) as bar:
                    for fut in as_completed(futures):
                        payload = futures[fut]
                        try:
                            results = fut.result()
                        except Exception as exc:  # the batch never returned (workers died repeatedly)
                            results = [
                                {"job_id": j["job_id"], "status": "failed", "worker": None, "seconds": 0.0,
                                 "error": f"the batch's workers died ({type(exc).__name__}: {exc})"}
                                for j in payload["jobs"]
                            ]  # fmt: skip
                        for r in results:
                            if r.get("worker"):
                                res.worker_peak_rss[r["worker"]] = max(
                                    res.worker_peak_rss.get(r["worker"], 0), r.pop("peak_rss", 0)
                                )
                            job = by_id[r["job_id"]]
                            e = ledger.append(_line(job, r, vec_digest, plan))
                            (res.done if e["status"] == "done" else res.failed).append(e)
                        if bar:
                            bar(len(results), sum(_model_bytes(by_id[r["job_id"]].model) for r in results))
                res.work_seconds = time.perf_counter() - t_work
        finally:
            ledger.close()
    res.seconds = time.perf_counter() - t0
    return res


def _line(job: Job, r: dict[str, Any], vec_digest: dict[str, str], plan: Plan) -> dict[str, Any]:
    return {
        "job": job.describe(),
        "job_id": r["job_id"],
        "status": r["status"],
        "error": r.get("error"),
        "digest_algorithm": ALGORITHM,
        "model_digest": r.get("model_digest"),
        "vector_digests": [vec_digest[str(p)] for p, _ in job.vectors],
        "output_digest": r.get("output_digest"),
        "output_files": r.get("output_files"),
        "alpha": [a for _, a in job.vectors],
        "licensee": job.licensee,
        "trace_key_id": plan.key_id if job.licensee is not None else None,
        "bytes": r.get("bytes", 0),
        "seconds": r.get("seconds"),
        "worker": r.get("worker"),
        "verify": r.get("verify"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def fleet_status(plan: Plan) -> tuple[LedgerState, list[dict[str, Any]]]:
    """The ledger's chain and each job's state: done, done-but-output-changed, failed, or pending."""
    st = read_ledger(plan.ledger)
    latest = st.latest()
    rows = []
    for j in plan.jobs:
        jid = j.job_id(plan.key_id)
        e = latest.get(jid)
        if e is None:
            state = "pending"
        elif e["status"] != "done":
            state = "failed"
        elif _is_done(j, jid, latest):
            state = "done"
        else:
            state = "changed"  # done once, but the output is missing or its files differ now
        rows.append(
            {"index": j.index, "model": str(j.model), "output": str(j.output), "status": state,
             "error": e.get("error") if e else None}
        )  # fmt: skip
    return st, rows
