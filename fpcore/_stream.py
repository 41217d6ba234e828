"""What every streaming pass over checkpoints shares (stamp, extract, detect): the chunk size, the
native kernels' thread count while a pass runs, and the write-behind thread with its buffer pool."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import fpcore
from fpcore._native import HAS_NATIVE
from fpcore.io.buffers import Buffer

# Elements per streamed chunk (4 MiB of bf16 output): large enough that per-chunk Python costs vanish,
# small enough that a chunk stays in the last-level cache between the finiteness check, the kernel
# and the copy into the writer's block. Read at call time (tests shrink it).
STREAM_ELEMS = 1 << 21


@contextmanager
def streaming_threads() -> Iterator[None]:
    """Native kernel threads for the duration of a pass: one core fewer than usual, which the
    writer, the I/O thread or the hasher use. With every core in a kernel's parallel region, a
    preempted thread stalls the region: on this 2-core machine, with another process on one core,
    pair_stats over 2.6 GB pairs took 5.6 s on 2 threads and 0.48 s on 1."""
    old = fpcore.get_num_threads()
    if HAS_NATIVE:
        fpcore.set_num_threads(max(1, old - 1))
    try:
        yield
    finally:
        if HAS_NATIVE:
            fpcore.set_num_threads(old)


class WriteBehind:
    """Output work (writes and file-to-file copies, in submission order) on one background thread
    while the caller reads and computes the next chunk. Output buffers cycle through a pool of
    `depth`, so memory stays fixed; the first error on the thread is raised in the caller at its next
    call (and by close()), after which the thread does nothing more."""

    def __init__(self, depth: int = 4) -> None:
        self._work: queue.SimpleQueue[tuple[Callable[[], None], Buffer | None] | None] = queue.SimpleQueue()
        self._free: queue.SimpleQueue[Buffer] = queue.SimpleQueue()
        for _ in range(depth):
            self._free.put(Buffer(0))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fpcore-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            fn, buf = item
            if self._error is None:
                try:
                    fn()
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    self._error = exc
            if buf is not None:
                self._free.put(buf)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def buffer(self, nbytes: int) -> Buffer:
        """A free output buffer of at least `nbytes` (waits while all are being written)."""
        self._raise()
        b = self._free.get()
        return b if b.nbytes >= nbytes else Buffer(nbytes)

    def submit(self, fn: Callable[[], None], buf: Buffer | None = None) -> None:
        """Run fn() on the writer thread; `buf` (from buffer()) returns to the pool afterwards."""
        self._raise()
        self._work.put((fn, buf))

    def close(self, *, raise_error: bool = True) -> None:
        """Wait for all submitted work; raise its first error."""
        self._work.put(None)
        self._thread.join()
        if raise_error:
            self._raise()


class HashingWriteBehind(WriteBehind):
    """WriteBehind with a stage before the writer: each item's `pre` (hashing the bytes it writes, and
    those it read) runs on a hasher thread, in submission order, then the item goes to the writer
    thread. Hashing thus overlaps both the caller's compute and the writes. Buffers cycle as in
    WriteBehind (a deeper pool: an item holds its buffer through both stages); after the first error
    in either stage nothing more runs, and buffers still return to the pool."""

    def __init__(self, depth: int = 6) -> None:
        super().__init__(depth)
        self._pre: queue.SimpleQueue[tuple[Callable[[], None] | None, Callable[[], None], Buffer | None] | None] = (
            queue.SimpleQueue()
        )
        self._pre_error: BaseException | None = None
        self._hasher = threading.Thread(target=self._run_pre, name="fpcore-hasher", daemon=True)
        self._hasher.start()

    def _run_pre(self) -> None:
        while (item := self._pre.get()) is not None:
            pre, fn, buf = item
            if pre is not None and self._pre_error is None:
                try:
                    pre()
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    self._pre_error = exc
            self._work.put((_skip if self._pre_error is not None else fn, buf))
        self._work.put(None)

    def _raise(self) -> None:
        if self._pre_error is not None:
            raise self._pre_error
        super()._raise()

    def submit(self, fn: Callable[[], None], buf: Buffer | None = None, pre: Callable[[], None] | None = None) -> None:
        """Run pre() on the hasher thread, then fn() on the writer thread; `buf` returns to the pool after."""
        self._raise()
        self._pre.put((pre, fn, buf))

    def close(self, *, raise_error: bool = True) -> None:
        self._pre.put(None)
        self._hasher.join()
        self._thread.join()
        if raise_error:
            self._raise()


def _skip() -> None:
    return None
