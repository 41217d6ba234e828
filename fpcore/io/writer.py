"""Streaming safetensors writer: the header first (all shapes are known up front), then each
tensor's bytes in order, so a whole model never has to sit in memory."""

from __future__ import annotations

import errno
import json
import os
import queue
import struct
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .buffers import Buffer, address_of, copy_bytes
from .format import FORMAT_DTYPES, CheckpointError, format_dtype

if TYPE_CHECKING:
    import torch

ALIGN = 8  # header padded with spaces so the data starts 8-byte aligned
# Start writing back every this many bytes as they are written (posix_fadvise DONTNEED starts
# asynchronous writeback of dirty pages), so the disk works while the next bytes are produced and
# the final fsync has little left to wait for.
WRITEBACK_BYTES = 64 << 20
# Direct I/O (O_DIRECT): bytes gathered into page-aligned blocks of DIRECT_BLOCK, each written whole
# by an I/O thread while the next fills. Offsets and lengths stay multiples of DIRECT_ALIGN (4096:
# every common device's logical block divides it).
DIRECT_BLOCK = 4 << 20
DIRECT_ALIGN = 4096
DIRECT_DEPTH = 3


def direct_io_available() -> bool:
    """Whether writers may use O_DIRECT (Linux; FPCORE_DIRECT_IO=0 turns it off)."""
    return hasattr(os, "O_DIRECT") and os.environ.get("FPCORE_DIRECT_IO", "1") != "0"


class _BufferedSink:
    """Writes through the page cache (unbuffered file object: each write goes straight to the
    descriptor), with writeback started every WRITEBACK_BYTES."""

    direct = False

    def __init__(self, f: Any) -> None:
        self.f = f
        self.pos = self._kicked = 0

    def write(self, data: memoryview) -> None:
        while len(data):
            n = self.f.write(data)
            data = data[n:]
            self.pos += n
        self._kick()

    def _kick(self) -> None:
        if self.pos - self._kicked >= WRITEBACK_BYTES and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.f.fileno(), self._kicked, self.pos - self._kicked, os.POSIX_FADV_DONTNEED)
            self._kicked = self.pos

    def copy_from(self, src_fd: int, src_offset: int, nbytes: int) -> int:
        """Append `nbytes` from another file (copy_file_range: the kernel moves them); returns the
        bytes copied, fewer when the source ended early."""
        done = 0
        while done < nbytes:
            try:
                n = os.copy_file_range(src_fd, self.f.fileno(), nbytes - done, src_offset + done)
            except OSError:  # e.g. across file systems on old kernels: copy through memory
                n = 0
            if n == 0:
                chunk = os.pread(src_fd, min(nbytes - done, 8 << 20), src_offset + done)
                if not chunk:
                    break
                self.write(memoryview(chunk))
                n = len(chunk)
            else:
                self.pos += n
            done += n
        self._kick()
        return done

    def close(self) -> None:
        self.f.close()

    def abort(self) -> None:
        self.f.close()


class _DirectSink:
    """Writes with O_DIRECT, bypassing the page cache: no copy into it and no dirty-page writeback
    competing for the CPU. Bytes are gathered into page-aligned blocks (at most DIRECT_DEPTH, made
    on demand and freed at close); an I/O thread, started with the first full block, writes each
    while the next fills. close() writes the last block padded to DIRECT_ALIGN and truncates the
    file to its real size. A file system that refuses O_DIRECT writes (EINVAL) gets the same blocks
    through the page cache."""

    direct = True

    def __init__(self, f: Any) -> None:
        self.f = f
        self.pos = 0  # bytes accepted so far (the file's final size)
        self._free: queue.SimpleQueue[Buffer] = queue.SimpleQueue()
        self._blocks: list[Buffer] = []
        self._cur = self._take()
        self._fill = 0
        self._work: queue.SimpleQueue[tuple[Buffer, int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stop = False

    def _take(self) -> Buffer:
        """A free block: a new one while fewer than DIRECT_DEPTH exist, else the next one written."""
        if len(self._blocks) < DIRECT_DEPTH and self._free.empty():
            self._blocks.append(Buffer(DIRECT_BLOCK))
            return self._blocks[-1]
        return self._free.get()

    def _submit(self, buf: Buffer, n: int) -> None:
        self._raise()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fpcore-direct-io", daemon=True)
            self._thread.start()
        self._work.put((buf, n))

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            buf, n = item
            if self._error is None and not self._stop:
                try:
                    self._write_all(buf.view[:n])
                except BaseException as exc:  # noqa: BLE001 - raised in the caller
                    self._error = exc
            self._free.put(buf)

    def _write_all(self, data: memoryview) -> None:
        while len(data):
            try:
                n = self.f.write(data)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self._drop_direct():
                    raise
                continue
            data = data[n:]

    def _drop_direct(self) -> bool:
        """Clear O_DIRECT on the descriptor (the file system accepted it at open but not for I/O)."""
        import fcntl

        fd = self.f.fileno()
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if not flags & os.O_DIRECT:
            return False
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        return True

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _room(self) -> memoryview:
        """The unfilled part of the current block (a full block is handed to the I/O thread first)."""
        if self._fill == len(self._cur.view):
            self._submit(self._cur, self._fill)
            self._cur = self._take()
            self._fill = 0
        return self._cur.view[self._fill :]

    def write(self, data: memoryview) -> None:
        try:
            src: int | None = address_of(data)
        except (TypeError, ValueError):  # read-only memory: copied by slice assignment below
            src = None
        done = 0
        while done < len(data):
            room = self._room()
            n = min(len(room), len(data) - done)
            if src is not None:
                copy_bytes(self._cur.addr + self._fill, src + done, n)  # GIL released
            else:
                room[:n] = data[done : done + n]
            self._fill += n
            done += n
        self.pos += done

    def copy_from(self, src_fd: int, src_offset: int, nbytes: int) -> int:
        done = 0
        while done < nbytes:
            room = self._room()
            n = os.preadv(src_fd, [room[: min(len(room), nbytes - done)]], src_offset + done)
            if n == 0:
                break
            self._fill += n
            done += n
        self.pos += done
        return done

    def _finish_thread(self) -> None:
        if self._thread is not None:
            self._work.put(None)
            self._thread.join()
            self._thread = None

    def _free_blocks(self) -> None:
        for b in self._blocks:
            b.close()
        self._blocks.clear()

    def close(self) -> None:
        try:
            if self._fill:
                padded = -(-self._fill // DIRECT_ALIGN) * DIRECT_ALIGN
                self._cur.view[self._fill : padded] = bytes(padded - self._fill)
                self._submit(self._cur, padded)
                self._fill = 0
            self._finish_thread()
            self._raise()
            if self.pos % DIRECT_ALIGN:
                self.f.truncate(self.pos)
        finally:
            self._stop = True
            self._finish_thread()
            self.f.close()
            self._free_blocks()

    def abort(self) -> None:
        self._stop = True
        self._finish_thread()
        self.f.close()
        self._free_blocks()


def _open_sink(path: Path, direct: bool) -> _BufferedSink | _DirectSink:
    if direct and direct_io_available():
        try:
            f = open(path, "wb", buffering=0, opener=lambda p, fl: os.open(p, fl | os.O_DIRECT, 0o666))  # noqa: SIM115
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
        else:
            return _DirectSink(f)
    return _BufferedSink(open(path, "wb", buffering=0))  # noqa: SIM115 - closed by close()/abort()


def safetensors_prefix(
    path: Path, layout: Iterable[tuple[str, Any, tuple[int, ...]]], metadata: Mapping[str, str] | None
) -> tuple[list[tuple[str, str, tuple[int, ...]]], bytes]:
    """A safetensors file's first bytes (length, JSON header padded to ALIGN) for tensors laid out in
    `layout`'s order, their data back to back after it; and the layout with safetensors dtype names.
    Errors name `path` and the tensor."""
    checked: list[tuple[str, str, tuple[int, ...]]] = []
    for n, d, shape in layout:
        try:
            st = format_dtype(d)
        except KeyError:
            raise CheckpointError(f"{path}: tensor {n!r} has dtype {d}, which safetensors cannot store") from None
        checked.append((n, st, tuple(int(x) for x in shape)))
    header: dict[str, object] = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise CheckpointError(f"{path}: metadata {bad[0]!r} must map a string to a string")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, dtype, shape in checked:
        if name in header:
            raise CheckpointError(f"{path}: tensor {name!r} declared twice")
        n = 1
        for x in shape:
            n *= x
        nbytes = n * FORMAT_DTYPES[dtype][0]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % ALIGN)
    return checked, struct.pack("<Q", len(raw)) + raw


class SafetensorsWriter:
    """``SafetensorsWriter(path, [(name, dtype, shape), ...], metadata)``, then ``write(name, t)`` for
    each tensor in the declared order, then ``close()`` (or use it as a context manager). A dtype
    is a torch dtype or a safetensors name ("BF16"); write_part/copy_part write raw bytes without
    torch. ``direct=True`` writes with O_DIRECT where the file system allows (large outputs: no page
    cache copy or writeback), else through the page cache.

    Raises CheckpointError naming the tensor when one arrives out of order or with another dtype or
    shape than declared, or when closed before all were written.
    """

    def __init__(
        self,
        path: str | Path,
        layout: Iterable[tuple[str, Any, tuple[int, ...]]],
        metadata: Mapping[str, str] | None = None,
        *,
        direct: bool = False,
    ) -> None:
        self.path = Path(path)
        self._layout, prefix = safetensors_prefix(self.path, layout, metadata)
        # direct: O_DIRECT when the platform and file system allow it (_DirectSink), else through
        # the page cache (_BufferedSink).
        self._sink = _open_sink(self.path, direct)
        self._closed = False
        try:
            self._sink.write(memoryview(prefix))
        except BaseException:
            self.abort()
            raise
        self._next = 0
        self._done = 0  # bytes of the current tensor written so far

    @property
    def direct(self) -> bool:
        """True when this file is written with O_DIRECT."""
        return self._sink.direct

    def _expect(self, name: str) -> int:
        """The bytes still due for tensor `name`, which must be the one being written."""
        if self._closed:
            raise CheckpointError(f"{self.path}: tensor {name!r} written after the writer was closed")
        if self._next >= len(self._layout):
            raise CheckpointError(f"{self.path}: tensor {name!r} was not declared (all {len(self._layout)} written)")
        want, dtype, shape = self._layout[self._next]
        if name != want:
            raise CheckpointError(f"{self.path}: expected tensor {want!r} next, got {name!r}")
        n = FORMAT_DTYPES[dtype][0]
        for x in shape:
            n *= x
        return n - self._done

    def _advance(self, name: str, nbytes: int, due: int) -> None:
        if nbytes > due:
            raise CheckpointError(f"{self.path}: tensor {name!r} got {nbytes - due} bytes more than declared")
        self._done += nbytes
        if nbytes == due:
            self._next += 1
            self._done = 0

    def write_part(self, name: str, data: memoryview | bytes) -> None:
        """Append the next bytes of tensor `name` (written in parts; it is complete once its declared
        size has arrived)."""
        view = memoryview(data).cast("B")
        due = self._expect(name)
        if len(view) > due:
            self._advance(name, len(view), due)  # raises, before anything is written
        self._sink.write(view)
        self._advance(name, len(view), due)

    def copy_part(self, name: str, src_fd: int, src_offset: int, nbytes: int) -> None:
        """Append the next `nbytes` of tensor `name` straight from another file (copy_file_range
        through the page cache; with O_DIRECT, read into the aligned blocks)."""
        due = self._expect(name)
        if nbytes > due:
            self._advance(name, nbytes, due)  # raises
        if self._sink.copy_from(src_fd, src_offset, nbytes) < nbytes:
            raise CheckpointError(f"{self.path}: source of tensor {name!r} ended early (truncated?)")
        self._advance(name, nbytes, due)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append `tensor`'s bytes; it must be the next declared tensor, with its dtype and shape."""
        import torch

        due = self._expect(name)
        _, dtype, shape = self._layout[self._next]
        declared = "torch." + FORMAT_DTYPES[dtype][2]
        if str(tensor.dtype) != declared or tuple(tensor.shape) != shape or self._done:
            raise CheckpointError(
                f"{self.path}: tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, declared {declared} {shape}"
                + (" (and partly written already)" if self._done else "")
            )
        t = tensor.detach().cpu().contiguous()
        if t.numel():
            self._sink.write(memoryview(t.view(torch.uint8).reshape(-1).numpy()))
        self._advance(name, due, due)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sink.close()
        if self._next != len(self._layout):
            missing = self._layout[self._next][0]
            raise CheckpointError(f"{self.path}: closed before tensor {missing!r} was written")

    def abort(self) -> None:
        """Close without the completeness check (the file is being thrown away)."""
        if not self._closed:
            self._closed = True
            self._sink.abort()

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_safetensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Write a whole mapping of tensors to one safetensors file (not atomic by itself: write into an
    AtomicOutput's temporary)."""
    layout = [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    with SafetensorsWriter(path, layout, metadata) as w:
        for n, t in tensors.items():
            w.write(n, t)
