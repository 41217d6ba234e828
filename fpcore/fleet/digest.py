"""Content digests for the ledger: BLAKE3 (cryptographic, several GB/s per core) over a model's files.

A file model's digest covers its bytes; a folder's covers every regular file in it (sorted relative
names, each name and size hashed before its bytes), so a renamed, added, dropped or changed file
changes it. Hidden temporaries of an interrupted write (``.fpcore-tmp-*``) are not part of a model.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from fpcore.io.atomic import TMP_PREFIX

ALGORITHM = "blake3"


def model_files(path: Path) -> list[tuple[str, Path]]:
    if path.is_file():
        return [(path.name, path)]
    files = [p for p in path.rglob("*") if p.is_file() and not any(x.startswith(TMP_PREFIX) for x in p.parts)]
    return sorted((str(p.relative_to(path)), p) for p in files)


def files_digest(path: Path, threads: int = 1) -> tuple[str, dict[str, list[int]]]:
    """(blake3 hex digest, {relative name: [size, mtime_ns]}) of a model file or folder."""
    import blake3

    h = blake3.blake3(max_threads=threads)
    stats: dict[str, list[int]] = {}
    for rel, p in model_files(path):
        st = p.stat()
        name = rel.encode()
        h.update(struct.pack("<Q", len(name)) + name + struct.pack("<Q", st.st_size))
        stats[rel] = [st.st_size, st.st_mtime_ns]
        if st.st_size:
            with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                h.update(m)
    return h.hexdigest(), stats
