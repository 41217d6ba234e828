"""Recorder: a drop-in for a plain torch training loop that writes a proof-of-training record.

    rec = Recorder(folder, model, optimizer, dataset, every=k, model_spec=..., init=..., batch_size=B)
    for idx in batches:                      # idx: the sample indices of this step (LongTensor [B])
        train_step(model, optimizer, dataset, idx, aug_std=s, generator=rec.generator)
        rec.step(idx)
    rec.finish()

On the hot path the Recorder copies the parameters every step (their digest is taken on a helper thread:
record.StepDigests) and the whole state every k steps, into the memory of checkpoints already written
once there are some (no page faults). The state copies wait in memory until
`buffer_bytes` (default 64 MB) of them are queued, and at finish(); then writer threads stream them to
their files and to SHA-256 (the GIL released for every large piece; record.write_checkpoint) and fsync
them (several writers, so their fsyncs overlap). With `buffer_bytes=0` each copy goes to the writers at
once; while training runs, their Python-level work still takes the GIL from the training thread now and
then, which on short steps costs more than it saves (benchmarks/bench_pot.py measures both). The record is
built in a temporary folder beside `folder` and renamed into place by finish(), so a crashed run never
leaves a partial record.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from fpcore import trajectory_stats
from fpcore.io import AtomicOutput
from fpcore.io.atomic import fsync_dir

from .record import (
    UPDATE_METRICS,
    StepDigests,
    checkpoint_tensors,
    finish_record,
    make_header,
    write_checkpoint,
)
from .task import Dataset

WRITERS = 4  # writer threads


class _RecordOutput(AtomicOutput):
    """AtomicOutput whose final fsync skips the checkpoint files the writer threads already fsynced (on
    ext4 even a clean file's fsync costs a cache flush, ~ms: re-syncing every checkpoint would dominate)."""

    def __init__(self, dest, *, overwrite: bool) -> None:
        super().__init__(dest, overwrite=overwrite)
        self.synced: set[Path] = set()

    def _fsync_tree(self) -> None:
        assert self.tmp is not None
        for p in self.tmp.rglob("*"):
            if p.is_file() and p not in self.synced:
                with open(p, "rb+") as f:
                    os.fsync(f.fileno())
        for d in [self.tmp, *[p for p in self.tmp.rglob("*") if p.is_dir()]]:
            fsync_dir(d)


def optimizer_spec(opt: torch.optim.Optimizer) -> dict:
    """The record's `optimizer` entry for a torch optimizer (SGD with one parameter group)."""
    if type(opt) is not torch.optim.SGD or len(opt.param_groups) != 1:
        raise ValueError("Recorder: only torch.optim.SGD with a single parameter group is supported")
    g = opt.param_groups[0]
    if g.get("nesterov") or g.get("dampening", 0) or g.get("maximize"):
        raise ValueError("Recorder: SGD with nesterov, dampening or maximize is not supported")
    return {
        "name": "sgd",
        "lr": float(g["lr"]),
        "momentum": float(g["momentum"]),
        "weight_decay": float(g["weight_decay"]),
    }


def segment_seed(master: int, j: int) -> int:
    """The augmentation seed of segment j, derived from the run's master seed."""
    return int(np.random.SeedSequence([int(master), int(j)]).generate_state(1, np.uint64)[0] >> 1)


class Recorder:
    def __init__(
        self,
        folder: str | Path,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        dataset: Dataset,
        *,
        every: int,
        model_spec: dict,
        init: dict,
        batch_size: int,
        aug_std: float = 0.0,
        seed: int = 0,
        overwrite: bool = False,
        optimizer_override: dict | None = None,
        buffer_bytes: int = 64 << 20,
        task: dict | None = None,
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"Recorder: every must be an int >= 1, got {every!r}")
        if batch_size < 1 or batch_size > len(dataset):
            raise ValueError(f"Recorder: batch_size {batch_size} must be in 1..{len(dataset)}")
        self.model, self.optimizer, self.dataset = model, optimizer, dataset
        self.every, self.batch_size, self.seed = every, int(batch_size), int(seed)
        self.header = make_header(
            model_spec=model_spec,
            init=init,
            optimizer=optimizer_override or optimizer_spec(optimizer),
            dataset=dataset,
            batch_size=batch_size,
            every=every,
            aug_std=aug_std,
        )
        if task is not None:  # {name, config, code_digest} (fpcore.pot.tasks): replay runs that task's code
            self.header["task"] = task
            self.header["schedule"] = {"name": f"task:{task['name']}"}
        self._out = _RecordOutput(folder, overwrite=overwrite)
        self._tmp = self._out.__enter__()
        (self._tmp / "ckpt").mkdir()
        # several writers: their fsyncs overlap (the file system commits them together)
        self._pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="fpcore-pot-writer")
        self._pending: list[Future] = []
        self._queued: list[tuple[int, dict[str, torch.Tensor]]] = []
        self._queued_bytes = 0
        self._free: list = []  # written checkpoints' PackedStates, for the next copies
        self.buffer_bytes = int(buffer_bytes)
        self._batches: list[torch.Tensor] = []
        self._seeds: list[int] = []
        self._digests = StepDigests(model)  # the parameters' digest after every step (16 bytes each)
        self._prev_flat: torch.Tensor | None = None
        self._sizes: dict[str, list[float]] = {m: [] for m in UPDATE_METRICS}
        self.steps = 0
        self.timings = {"step_s": 0.0, "finish_s": 0.0}  # time spent inside step() and finish()
        self.generator = torch.Generator()
        self._t0 = time.perf_counter()
        self._checkpoint()
        self._next_segment()

    def _next_segment(self) -> None:
        s = segment_seed(self.seed, len(self._seeds))
        self._seeds.append(s)
        self.generator.manual_seed(s)

    def _checkpoint(self) -> None:
        # the only copy on the hot path, into a written checkpoint's memory where one is free
        reuse = self._free.pop() if self._free else None
        tensors = checkpoint_tensors(self.model, self.optimizer, reuse=reuse)
        # the committed update size of the segment this checkpoint ends (the verifier picks top-Q from these)
        flat = torch.cat([tensors[k].float().flatten() for k in sorted(tensors) if k.startswith("param.")])
        if self._prev_flat is not None:
            ts = trajectory_stats([[self._prev_flat]], mode="paired", other=[[flat]])
            for m in UPDATE_METRICS:
                self._sizes[m].append(float(getattr(ts, m)[0]))
        self._prev_flat = flat
        self._queued.append((self.steps, tensors))
        self._queued_bytes += sum(t.numel() * t.element_size() for t in tensors.values())
        if self._queued_bytes > self.buffer_bytes:
            self._drain()

    def _drain(self) -> None:
        """Hand the buffered snapshots to the writer threads."""
        for step, tensors in self._queued:
            fut = self._pool.submit(write_checkpoint, self._tmp, step, tensors, fsync=True)
            fut.add_done_callback(lambda _, t=tensors: self._free.append(t))  # written: its memory is free
            self._pending.append(fut)
        self._queued, self._queued_bytes = [], 0

    def step(self, batch_indices) -> None:
        """Call after each optimiser step with that step's sample indices (B ints into the dataset).

        Only the shape is checked here (the hot path); the index range is checked once in finish()."""
        t0 = time.perf_counter()
        idx = (
            batch_indices.detach().cpu() if isinstance(batch_indices, torch.Tensor) else torch.as_tensor(batch_indices)
        )
        if tuple(idx.shape) != (self.batch_size,):
            raise ValueError(f"Recorder.step: expected {self.batch_size} sample indices, got shape {tuple(idx.shape)}")
        self._batches.append(idx.to(torch.int64, copy=True))
        self._digests()
        self.steps += 1
        if self.steps % self.every == 0:
            self._checkpoint()
            self._next_segment()
        self.timings["step_s"] += time.perf_counter() - t0

    def finish(self) -> Path:
        """Write the final checkpoint (if the last segment is partial), batches.npy and record.json; returns
        the record folder."""
        t0 = time.perf_counter()
        if self.steps == 0:
            self.abort()
            raise ValueError("Recorder.finish: no steps were recorded")
        if self.steps % self.every:
            self._checkpoint()
        else:
            self._seeds.pop()  # the segment opened after the last checkpoint holds no steps
        self._drain()
        try:
            entries = [f.result() for f in self._pending]
        finally:
            self._pool.shutdown(wait=True)
            self._free.clear()
        self._out.synced.update(self._tmp / e["file"] for e in entries)
        digests = self._digests.results()
        batches = torch.stack(self._batches).numpy()
        if batches.min() < 0 or batches.max() >= len(self.dataset):
            self.abort()
            raise ValueError(f"Recorder.finish: a recorded sample index lies outside 0..{len(self.dataset) - 1}")
        finish_record(
            self._tmp,
            self.header,
            entries,
            batches,
            self._seeds,
            b"".join(digests),
            wall_seconds=time.perf_counter() - self._t0,
            update_sizes=self._sizes,
        )
        self._out.__exit__(None, None, None)
        self.timings["finish_s"] = time.perf_counter() - t0
        return self._out.dest

    def abort(self) -> None:
        self._pool.shutdown(wait=True)
        self._digests.close()
        self._out.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
