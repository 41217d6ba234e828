"""The Dask client every distributed command uses (fleet runs, proof-of-training replay): an embedded
LocalCluster (worker processes bound to 127.0.0.1, no dashboard) or an existing cluster by address.
Importing this module does not import Dask; calling cluster_client does."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def require_dask(what: str, *, load: bool = True) -> None:
    """fpcore._extras.MissingExtra naming the `fleet` extra when Dask is not installed (the CLI prints
    it as one line and exits 2). load=False looks without importing (~0.4 s): see preload."""
    from fpcore._extras import require

    require("dask", "distributed", extra="fleet", what=what, load=load)


_PRELOAD: threading.Thread | None = None


def preload() -> None:
    """Start importing Dask distributed (~0.4 s on 2 cores) in a helper thread, so that a command can
    read its inputs meanwhile; cluster_client waits for it (and so starts with one thread, as forking
    workers needs). An import error here is left for cluster_client's own import to raise."""
    global _PRELOAD
    import sys

    if _PRELOAD is not None or "distributed" in sys.modules:
        return

    def load() -> None:
        try:
            import distributed  # noqa: F401
        except Exception:  # noqa: BLE001, S110 - the caller's own import reports it
            pass

    _PRELOAD = threading.Thread(target=load, name="fpcore-import-distributed", daemon=True)
    _PRELOAD.start()


def _join_preload() -> None:
    if _PRELOAD is not None:
        _PRELOAD.join()


def _fork_is_safe() -> bool:
    """Whether embedded workers may be forked from this process rather than spawned: only while it runs
    one thread, has not imported torch (its thread pools do not survive a fork), and the user has not
    chosen a start method in Dask's config (an explicit choice wins)."""
    import sys

    import dask

    return (
        threading.active_count() == 1
        and "torch" not in sys.modules
        and "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD" not in os.environ
        and dask.config.get("distributed.worker.multiprocessing-method") == "spawn"
    )


@contextmanager
def cluster_client(
    scheduler: str | None, workers: int | None, *, fork: bool = False
) -> Iterator[tuple[Any, str, int, int | None, str | None]]:
    """(client, scheduler address, workers, kernel threads per worker (None for a remote cluster's own),
    how embedded workers were started: "fork", "spawn" or "forkserver" (None for a remote cluster)).

    fork: start embedded workers by forking this process where that is safe (_fork_is_safe): a worker
    is ready in ~0.1 s instead of importing Dask afresh (~0.6 s per worker, measured on 2 cores). The
    caller must start no threads of its own while the cluster starts."""
    _join_preload()
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler, timeout="20s") as client:
            n = len(client.scheduler_info(n_workers=-1)["workers"])
            if n == 0:
                raise ValueError(f"--scheduler {scheduler}: the cluster has no workers")
            yield client, scheduler, n, None, None
        return
    cores = os.cpu_count() or 1
    n = workers if workers else max(1, cores - 1)
    if n < 1:
        raise ValueError(f"--workers must be >= 1, got {n}")
    method = "fork" if fork and _fork_is_safe() else dask.config.get("distributed.worker.multiprocessing-method")
    with (
        dask.config.set(
            {
                "distributed.worker.multiprocessing-method": method,  # restarts use it too
                # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536: glibc then hands freed memory
                # back to the OS at once, and a torch training step (pot replay) faults its activations
                # in again every step: 2.1x slower (tiny-lm segments, 3.96 s vs 1.85 s). Unset: glibc's
                # own adaptive threshold (an explicit MALLOC_TRIM_THRESHOLD_ in the environment still wins)
                "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
            }
        ),
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client, cluster.scheduler_address, n, max(1, cores // n), method
