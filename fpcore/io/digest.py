"""A checkpoint's content digest: BLAKE3 (cryptographic, several GB/s per core) of every tensor's bytes,
combined with the layout (tensor -> shard, dtype, shape), each shard's metadata and every other file
of the folder (config, tokenizer, index).

Built from per-tensor hashes so that a stamp can compute its model's and its output's digests while
it streams them (fpcore.stamping, ``digests=True``) instead of reading both again afterwards; the
standalone :func:`checkpoint_digest` reads the files and gives the same value. A single-file model's
own file name is not part of it (a copy renamed is the same model); a folder's shard names are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fpcore.io.reader import Checkpoint

ALGORITHM = "blake3-tensors/1"
WINDOW = 64 << 20  # bytes hashed per step of a standalone digest (then the pages are released)


def hasher() -> Any:
    import blake3

    return blake3.blake3(max_threads=1)


def tensor_hash(ck: Checkpoint, name: str) -> str:
    """blake3 of tensor `name`'s bytes, read a window at a time (resident memory stays bounded)."""
    h = hasher()
    nbytes = ck.info(name).nbytes
    for off in range(0, nbytes, WINDOW):
        n = min(WINDOW, nbytes - off)
        h.update(ck.view(name, off, n))
        ck.release_range(name, off, n)
    return h.hexdigest()


def file_hash(path: Path) -> str:
    h = hasher()
    with open(path, "rb") as f:
        while chunk := f.read(WINDOW):
            h.update(chunk)
    return h.hexdigest()


def finish(ck: Checkpoint, tensor_hashes: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The digest of `ck` given some of its tensors' hashes (the rest are read from its files), and
    every tensor's hash."""
    single = ck.path.is_file()

    def rel(f: Path) -> str:
        return "" if single else str(f.relative_to(ck.root))

    tensors = {}
    hashes = {}
    for name in sorted(ck.names()):
        info = ck.info(name)
        h = hashes[name] = tensor_hashes.get(name) or tensor_hash(ck, name)
        tensors[name] = [rel(info.file), info.format_dtype, list(info.shape), h]
    extra = ck.other_files() + ([ck.index_file] if ck.index_file is not None else [])
    body = {
        "format": ALGORITHM,
        "tensors": tensors,
        "metadata": {rel(f): ck.metadata[f] for f in ck.files},
        "files": {rel(f): file_hash(f) for f in sorted(extra)},
    }
    import blake3

    return blake3.blake3(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest(), hashes


def checkpoint_digest(path: str | Path) -> str:
    """The content digest of a model file or folder, read from its files."""
    from fpcore.io.reader import Checkpoint

    ck = Checkpoint(path)
    try:
        return finish(ck, {})[0]
    finally:
        ck.close()
