"""What the ledger records of an output besides its content digest (fpcore.io.digest): each file's
size and modification time, so that a rerun can tell at a glance that an output is still the one the
ledger describes (a file rewritten since shows) without reading it again."""

from __future__ import annotations

from pathlib import Path

from fpcore.io.atomic import TMP_PREFIX


def model_files(path: Path) -> list[tuple[str, Path]]:
    """(relative name, path) of every regular file of a model file or folder, sorted; hidden
    temporaries of an interrupted write are not part of a model."""
    if path.is_file():
        return [(path.name, path)]
    files = [p for p in path.rglob("*") if p.is_file() and not any(x.startswith(TMP_PREFIX) for x in p.parts)]
    return sorted((str(p.relative_to(path)), p) for p in files)


def file_stats(path: Path) -> dict[str, list[int]]:
    """{relative name: [size, mtime_ns]} of a model file or folder."""
    out = {}
    for rel, p in model_files(path):
        st = p.stat()
        out[rel] = [st.st_size, st.st_mtime_ns]
    return out
