"""Page-aligned memory with a known address, without torch: reusable chunk buffers for a streaming
pass (native kernels take raw addresses) and staging blocks for O_DIRECT writes (which need aligned
memory). Also the address of a memory map."""

from __future__ import annotations

import ctypes
import mmap


def address_of(buf: mmap.mmap | memoryview) -> int:
    """The address of a writable buffer's first byte (valid while the buffer is). Raises TypeError
    for read-only memory (e.g. bytes)."""
    c = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(c)
    finally:
        del c  # release the buffer export, so the map can be closed later


class Buffer:
    """``Buffer(nbytes)``: private anonymous, page-aligned, zero-filled memory; ``.addr`` its address,
    ``.view`` a writable memoryview of it. Freed when the object is."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
        self._mem = mmap.mmap(-1, max(self.nbytes, 1), flags=flags) if flags else mmap.mmap(-1, max(self.nbytes, 1))
        self.addr = address_of(self._mem)
        self.view = memoryview(self._mem)[: self.nbytes]

    def close(self) -> None:
        """Unmap now, unless views of it are still alive (e.g. held by a traceback): then the
        memory goes when the last one does."""
        try:
            self.view.release()
            self._mem.close()
        except BufferError:
            pass


def memory_at(addr: int, nbytes: int) -> memoryview:
    """A byte view of `nbytes` of memory at `addr` (no copy; valid while that memory is)."""
    return memoryview((ctypes.c_char * nbytes).from_address(addr)).cast("B") if nbytes else memoryview(b"")


def copy_bytes(dst_addr: int, src_addr: int, nbytes: int) -> None:
    """memmove between raw addresses (ctypes releases the GIL for the call)."""
    if nbytes:
        ctypes.memmove(dst_addr, src_addr, nbytes)
