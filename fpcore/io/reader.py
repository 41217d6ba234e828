"""Checkpoint: a model on disk, its tensors addressed by name and read lazily through mmap."""

from __future__ import annotations

import json
import mmap
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import TMP_PREFIX
from .buffers import address_of, memory_at
from .format import CheckpointError, TensorInfo, read_header

if TYPE_CHECKING:
    import torch

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def as_bytes(t: torch.Tensor) -> memoryview:
    """A writable byte view of a contiguous CPU tensor's memory (for pread/write without copies)."""
    import torch

    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


class Checkpoint:
    """One ``.safetensors`` file, a folder holding ``model.safetensors``, or a folder holding
    ``model.safetensors.index.json`` and its shards.

    Every header is validated when the checkpoint opens (errors name the file and tensor). Tensors
    are read by name, one at a time, as views of a private (copy-on-write) memory map: nothing is
    loaded until touched, and nothing written to a returned tensor ever reaches the file.
    """

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        if not p.exists():
            raise CheckpointError(f"{p}: no such file or folder")
        self.path = p
        self.index_file: Path | None = None
        if p.is_file():
            if p.suffix != ".safetensors":
                raise CheckpointError(f"{p}: expected a .safetensors file or a model folder")
            self.root, files = p.parent, [p]
        elif (p / INDEX).is_file():
            self.root, self.index_file = p, p / INDEX
            files = self._read_index()
        elif (p / SINGLE).is_file():
            self.root, files = p, [p / SINGLE]
        else:
            raise CheckpointError(f"{p}: folder has neither {INDEX} nor {SINGLE}")
        self.files: list[Path] = files
        self.metadata: dict[Path, dict[str, str]] = {}
        self._tensors: dict[str, TensorInfo] = {}
        for f in files:
            infos, meta = read_header(f)
            self.metadata[f] = meta
            for name, info in infos.items():
                if name in self._tensors:
                    raise CheckpointError(f"{f}: tensor {name!r} is also in {self._tensors[name].file}")
                self._tensors[name] = info
        if self.index_file is not None:
            self._check_index_matches()
        self._maps: dict[Path, mmap.mmap] = {}
        self._addrs: dict[Path, int] = {}
        self._fds: dict[Path, int] = {}

    # -- the shard index ------------------------------------------------------------------------
    def _read_index(self) -> list[Path]:
        assert self.index_file is not None
        try:
            idx = json.loads(self.index_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{self.index_file}: not a readable JSON index ({exc})") from exc
        wm = idx.get("weight_map") if isinstance(idx, dict) else None
        if not isinstance(wm, dict) or not all(isinstance(v, str) for v in wm.values()):
            raise CheckpointError(f"{self.index_file}: no 'weight_map' of tensor name -> shard file")
        self.weight_map: dict[str, str] = wm
        self.index_metadata = idx.get("metadata", {})
        shards: list[Path] = []
        for shard in dict.fromkeys(wm.values()):
            sp = self.root / shard
            if Path(shard).name != shard:
                raise CheckpointError(f"{self.index_file}: shard name {shard!r} must be a plain file name")
            if not sp.is_file():
                raise CheckpointError(f"{self.index_file}: names shard {shard!r}, which does not exist")
            shards.append(sp)
        return sorted(shards, key=lambda s: s.name)

    def _check_index_matches(self) -> None:
        for name, shard in self.weight_map.items():
            info = self._tensors.get(name)
            if info is None or info.file.name != shard:
                raise CheckpointError(f"{self.index_file}: tensor {name!r} is not in its shard {shard!r}")
        extra = [n for n in self._tensors if n not in self.weight_map]
        if extra:
            raise CheckpointError(f"{self._tensors[extra[0]].file}: tensor {extra[0]!r} is missing from the index")

    # -- lookup -----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Tensor names, shard by shard in file order."""
        return list(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __len__(self) -> int:
        return len(self._tensors)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def items(self) -> Iterator[tuple[str, TensorInfo]]:
        return iter(self._tensors.items())

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self._tensors.values())

    @property
    def numel(self) -> int:
        return sum(t.numel for t in self._tensors.values())

    def other_files(self) -> list[Path]:
        """Files of the model folder that are not weights (config, tokenizer, README, ...)."""
        if self.path.is_file():
            return []
        skip = set(self.files) | ({self.index_file} if self.index_file else set())
        return sorted(
            f for f in self.root.iterdir() if f.is_file() and f not in skip and not f.name.startswith(TMP_PREFIX)
        )

    # -- reading ----------------------------------------------------------------------------------
    def _map(self, file: Path) -> mmap.mmap:
        m = self._maps.get(file)
        if m is None:
            with open(file, "rb") as f:
                m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            self._maps[file] = m
        return m

    def address(self, name: str) -> int:
        """The address of tensor `name`'s first byte in a private (copy-on-write) memory map of its
        file, valid until close(): native kernels read the page cache in place, with no copy and no
        torch. Never write through it. Pair with release_range() to keep resident memory bounded."""
        info = self.info(name)
        m = self._map(info.file)
        # a file cut short after it was mapped would fault (SIGBUS) on the missing pages: check first
        if info.end > min(len(m), os.fstat(self.fd(info.file)).st_size):
            raise CheckpointError(f"{info.file}: tensor {name!r} ends past the file's end (it shrank while open?)")
        base = self._addrs.get(info.file)
        if base is None:
            base = self._addrs[info.file] = address_of(m)
        return base + info.start

    def view(self, name: str, offset: int, nbytes: int) -> memoryview:
        """Bytes [offset, offset + nbytes) of tensor `name` in place (see address(); e.g. to hash)."""
        info = self.info(name)
        if offset < 0 or nbytes < 0 or offset + nbytes > info.nbytes:
            raise CheckpointError(
                f"{info.file}: bytes [{offset}, {offset + nbytes}) are outside tensor {name!r} ({info.nbytes} bytes)"
            )
        return memory_at(self.address(name) + offset, nbytes) if nbytes else memoryview(b"")

    def release_range(self, name: str, offset: int, nbytes: int) -> None:
        """Let the OS drop the mapped pages of bytes [offset, offset + nbytes) of tensor `name` (the
        pages wholly inside; clean file pages are re-read if touched again)."""
        info = self.info(name)
        m = self._maps.get(info.file)
        if m is None or nbytes <= 0 or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        start = -(-(info.start + offset) // page) * page
        end = (info.start + offset + nbytes) // page * page
        if end > start:
            m.madvise(mmap.MADV_DONTNEED, start, end - start)

    def get(self, name: str) -> torch.Tensor:
        """The tensor `name`, shaped, as a copy-on-write view of the file (read lazily by the OS)."""
        import torch

        info = self.info(name)
        if info.numel == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        m = self._map(info.file)
        if info.end > len(m):
            raise CheckpointError(f"{info.file}: tensor {name!r} ends past the file's end (it shrank while open?)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.frombuffer(m, dtype=info.dtype, count=info.numel, offset=info.start)
        return flat.view(info.shape)

    def fd(self, file: Path) -> int:
        """A read-only descriptor of one of the checkpoint's files (opened once, closed by close())."""
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds[file] = os.open(file, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        return fd

    def read_into(self, name: str, offset: int, dest: memoryview | bytearray) -> None:
        """Copy bytes [offset, offset + len(dest)) of tensor `name` into `dest` with pread: no memory
        map, so a streaming pass holds only its own reusable buffers, whatever the model's size.

        Raises CheckpointError naming the file and tensor when the range is outside the tensor or
        the file ends early (truncated after it was opened)."""
        info = self.info(name)
        view = memoryview(dest).cast("B")
        if offset < 0 or offset + len(view) > info.nbytes:
            raise CheckpointError(
                f"{info.file}: read of bytes [{offset}, {offset + len(view)}) is outside tensor {name!r} "
                f"({info.nbytes} bytes)"
            )
        fd, pos, done = self.fd(info.file), info.start + offset, 0
        while done < len(view):
            n = os.preadv(fd, [view[done:]], pos + done)
            if n == 0:
                raise CheckpointError(f"{info.file}: tensor {name!r} ends past the file's end (truncated?)")
            done += n

    def read(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        """Tensor `name` as memory of its own (pread, no memory map): into `out` when given (a
        contiguous CPU tensor of the tensor's dtype and shape, e.g. pinned), else a new tensor."""
        import torch

        info = self.info(name)
        if out is None:
            out = torch.empty(info.shape, dtype=info.dtype)
        elif out.dtype != info.dtype or tuple(out.shape) != info.shape or not out.is_contiguous() or out.is_cuda:
            raise CheckpointError(
                f"{info.file}: tensor {name!r} is {info.dtype} {info.shape}; out is {out.dtype} "
                f"{tuple(out.shape)} on {out.device} (contiguous CPU memory of that dtype and shape needed)"
            )
        if info.numel:
            self.read_into(name, 0, as_bytes(out))
        return out

    def release(self, name: str) -> None:
        """Let the OS drop the pages of tensor `name` (clean file pages; re-read on next touch), so a
        streaming pass keeps its resident memory to the tensors in flight, not the whole model."""
        info = self.info(name)
        m = self._maps.get(info.file)
        if m is None or info.nbytes == 0 or not hasattr(mmap, "MADV_DONTNEED"):
            return
        page = mmap.PAGESIZE
        start = (info.start // page) * page
        m.madvise(mmap.MADV_DONTNEED, start, info.end - start)

    def close(self) -> None:
        """Drop the memory maps (tensors already returned keep theirs alive) and file descriptors."""
        self._maps.clear()
        self._addrs.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}: {len(self)} tensors in {len(self.files)} file(s), {self.nbytes} bytes)"
