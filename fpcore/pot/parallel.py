"""Segment replay on Dask workers (`fpcore pot verify --workers N | --scheduler ADDRESS`).

Each worker opens the record itself (shared storage, as for fleet runs), checks that its record.json is
byte for byte the driver's, builds one Replayer per (record, dtype) and keeps it for the segments it is
given; the driver gets back each segment's reached parameters and measures them exactly as a serial
verification does, so the verdict is the serial one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

_REPLAYERS: dict[tuple[str, str, str], Any] = {}


def _replayer(record: str, doc_sha: str, data: Any, dtype: str, threads: int | None, store: str | None) -> Any:
    from .record import open_record, sha256_file
    from .replay import Replayer

    key = (record, doc_sha, dtype)
    rp = _REPLAYERS.get(key)
    if rp is None:
        if threads:
            torch.set_num_threads(threads)
        got = sha256_file(Path(record) / "record.json")
        if got != doc_sha:
            raise ValueError(f"{record}: this worker's record.json differs from the verifier's (not shared storage?)")
        rp = _REPLAYERS[key] = Replayer(open_record(record, store), data, getattr(torch, dtype))
    return rp


def replay_task(
    record: str, doc_sha: str, data: Any, j: int, dtype: str, threads: int | None, store: str | None = None
) -> tuple[torch.Tensor, int | None]:
    """Segment j's reached parameters, and the first step whose digest differs from the record's."""
    rp = _replayer(record, doc_sha, data, dtype, threads, store)
    reached = rp(j)[0]
    return reached, rp.first_mismatch.get(j)


def submit_segments(
    client: Any, threads: int | None, rec: Any, data: Any, segs: list[int], *, float64: Sequence[int] = ()
) -> Callable[[], tuple[list[list[torch.Tensor]], dict[int, int | None], list[list[torch.Tensor]]]]:
    """Start replaying `segs` on the client's workers, one task per segment, and the segments `float64` in
    float64 (the verifier's calibration; submitted first, the longest tasks). Returns a function that waits
    for them (the caller works meanwhile) and gives the reached parameters in `segs` order, per segment
    the first step whose digest differs from the record's (records with them), and the float64 segments'
    reached parameters in their order."""
    from .record import sha256_file

    doc_sha = sha256_file(rec.path / "record.json")
    store = str(rec.store) if rec.store is not None else None
    [data_f] = client.scatter([data], broadcast=True)

    def submit(j: int, dtype: str) -> Any:
        return client.submit(replay_task, str(rec.path), doc_sha, data_f, j, dtype, threads, store, pure=False)

    f64 = [submit(j, "float64") for j in float64]
    f32 = [submit(j, "float32") for j in segs]

    def collect() -> tuple[list[list[torch.Tensor]], dict[int, int | None], list[list[torch.Tensor]]]:
        out, out64 = client.gather(f32), client.gather(f64)
        firsts = {j: f for j, (_, f) in zip(segs, out, strict=True)} if rec.step_digests() is not None else {}
        return [[t] for t, _ in out], firsts, [[t] for t, _ in out64]

    return collect
