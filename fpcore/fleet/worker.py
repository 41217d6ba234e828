"""What a Dask worker runs: one batch of jobs that share their vectors (each tau tensor read once for
the whole batch, as `fpcore stamp V M1..Mn` does), each output appearing atomically on its own.

A job's own fault (a truncated or foreign model, an output in the way, a full disk) is caught and
returned as that job's failure; it never raises, so Dask never retries a bad input. Only a worker that
dies mid-batch makes Dask run the batch again, and a job run again writes the same bytes (stamping is
deterministic; an output this job already committed is replaced by an identical one).
"""

from __future__ import annotations

import os
import resource
import socket
import time
from pathlib import Path
from typing import Any

from fpcore.fleet.digest import file_stats


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def stamped_output(output: Path) -> bool:
    """Whether `output` is a model fpcore stamped (its shards' metadata say so). The fleet replaces such
    an output when its job runs again (after a crash, or Dask re-running a dead worker's batch: the bytes
    are the same); anything else in the way fails the job. No fleet-only mark is added, so that an output
    is byte for byte what `fpcore stamp` writes."""
    from fpcore.io import Checkpoint

    try:
        ck = Checkpoint(output)
        return any("fpcore_stamped" in ck.metadata[f] for f in ck.files)
    except (OSError, ValueError):
        return False


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _verify(job: dict[str, Any], key_path: str | None) -> dict[str, Any]:
    """The white-box check of a finished output against its model: alpha-hat of each vector (fpcore
    detect with the job's model as the base) and the licensee code (fpcore trace, this licensee alone)."""
    from fpcore.detect import detect

    out: dict[str, Any] = {"vectors": []}
    for v in job["vectors"]:
        r = detect(v["path"], job["output"], job["model"])
        out["vectors"].append(
            {"path": v["path"], "alpha": v["alpha"], "alpha_hat": r.alpha_hat, "cosine": r.cosine, "p": r.p}
        )
    if job["licensee"] is not None and key_path is not None:
        from fpcore.trace.find import trace
        from fpcore.trace.key import TraceKey

        t = trace(job["output"], job["model"], TraceKey.load(key_path), [job["licensee"]])
        best = (t.identified or t.runners_up or [None])[0]
        out["licensee"] = {
            "licensee": job["licensee"],
            "found": bool(t.identified),
            "z": best.z if best else None,
            "p": best.p if best else None,
        }
    return out


def _stamp(jobs: list[dict[str, Any]], key_path: str | None) -> dict[str, tuple[str, str]]:
    """One stamp call for `jobs` (they share vectors and alphas); each job's (model digest, output
    digest), hashed while the stamp streams the bytes."""
    from fpcore.stamping import stamp
    from fpcore.trace.key import TraceKey

    vecs = [(v["path"], v["alpha"]) for v in jobs[0]["vectors"]]
    coded = jobs[0]["licensee"] is not None
    for j in jobs:
        Path(j["output"]).parent.mkdir(parents=True, exist_ok=True)
    res = stamp(
        vecs,
        [j["model"] for j in jobs],
        None,
        outputs=[j["output"] for j in jobs],
        overwrite=True,  # only stamped outputs (this job's, from a run cut short) are in the way (run_batch)
        trace_key=TraceKey.load(key_path) if coded and key_path else None,
        licensees=[j["licensee"] for j in jobs] if coded else None,
        digests=True,
    )
    return {j["job_id"]: d for j, d in zip(jobs, zip(res.model_digests, res.output_digests, strict=True), strict=True)}


def run_batch(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """batch: {"jobs": [job dicts with job_id], "trace_key": path or None, "threads": int, "verify": bool}.
    Returns one result per job: status "done" or "failed", error, digests, bytes, seconds, worker."""
    import fpcore

    if batch.get("threads"):
        fpcore.set_num_threads(int(batch["threads"]))
    key_path = batch.get("trace_key")
    worker = _worker_name()
    results: dict[str, dict[str, Any]] = {}
    todo: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for j in batch["jobs"]:
        out = Path(j["output"])
        if (out.exists() or out.is_symlink()) and not stamped_output(out):
            results[j["job_id"]] = {
                "status": "failed",
                "error": f"output {out} exists and is not a model fpcore stamped (remove it or change `output:`)",
            }
        else:
            todo.append(j)
    seconds: dict[str, float] = {}
    digests: dict[str, tuple[str, str]] = {}
    if todo:
        try:
            digests = _stamp(todo, key_path)
            share = (time.perf_counter() - t0) / len(todo)
            seconds = {j["job_id"]: share for j in todo}
        except Exception:  # one bad model fails the batch call: find it by running each job alone
            for j in todo:
                t1 = time.perf_counter()
                try:
                    digests.update(_stamp([j], key_path))
                    seconds[j["job_id"]] = time.perf_counter() - t1
                except Exception as exc:
                    results[j["job_id"]] = {"status": "failed", "error": _error(exc)}
    for j in todo:
        jid = j["job_id"]
        if jid in results:
            continue
        t1 = time.perf_counter()
        try:
            files = file_stats(Path(j["output"]))
            r: dict[str, Any] = {
                "status": "done",
                "error": None,
                "model_digest": digests[jid][0],
                "output_digest": digests[jid][1],
                "output_files": files,
                "bytes": sum(size for size, _ in files.values()),
            }
            if batch.get("verify"):
                r["verify"] = _verify(j, key_path)
        except Exception as exc:
            r = {"status": "failed", "error": f"after stamping: {_error(exc)}"}
        seconds[jid] = seconds.get(jid, 0.0) + time.perf_counter() - t1
        results[jid] = r
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return [
        {"job_id": jid, "worker": worker, "peak_rss": peak, "seconds": round(seconds.get(jid, 0.0), 4), **results[jid]}
        for jid in (j["job_id"] for j in batch["jobs"])
    ]
