"""The Dask client every distributed command uses (fleet runs, proof-of-training replay): an embedded
LocalCluster (worker processes bound to 127.0.0.1, no dashboard) or an existing cluster by address.
Importing this module does not import Dask; calling cluster_client does."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def require_dask(what: str) -> None:
    """ValueError naming the extra when Dask is not installed (the CLI maps it to exit 2)."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"{what} needs the `fleet` extra (pip install 'fpcore[fleet]'): {exc}") from None


@contextmanager
def cluster_client(scheduler: str | None, workers: int | None) -> Iterator[tuple[Any, str, int, int | None]]:
    """(client, scheduler address, workers, kernel threads per worker; None for a remote cluster's own)."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler, timeout="20s") as client:
            n = len(client.scheduler_info(n_workers=-1)["workers"])
            if n == 0:
                raise ValueError(f"--scheduler {scheduler}: the cluster has no workers")
            yield client, scheduler, n, None
        return
    cores = os.cpu_count() or 1
    n = workers if workers else max(1, cores - 1)
    if n < 1:
        raise ValueError(f"--workers must be >= 1, got {n}")
    with (
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
        yield client, cluster.scheduler_address, n, max(1, cores // n)
