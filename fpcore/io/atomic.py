"""Outputs that appear whole or not at all: built beside the destination, fsynced, renamed."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

TMP_PREFIX = ".fpcore-tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicOutput:
    """``with AtomicOutput(dest) as tmp:`` write into `tmp` (a folder, or with ``is_file=True`` a file
    path); on a clean exit every file is fsynced and `tmp` is renamed to `dest`. On any error the
    temporary is removed and `dest` is left as it was. An existing `dest` is refused unless
    ``overwrite=True`` (then it is replaced only after the new output is complete).

    The temporary lives in dest's folder (same file system, so the rename is atomic) under a hidden
    name starting with ``.fpcore-tmp-``; one left by a killed process is never mistaken for output.
    """

    def __init__(self, dest: str | Path, *, overwrite: bool = False, is_file: bool = False) -> None:
        self.dest = Path(dest)
        self.overwrite = overwrite
        self.is_file = is_file
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        if self.dest.exists() and not self.overwrite:
            raise FileExistsError(f"{self.dest}: already exists (pass overwrite to replace it)")
        parent = self.dest.parent
        if not parent.is_dir():
            raise FileNotFoundError(f"{self.dest}: parent folder {parent} does not exist")
        if self.is_file:
            fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=self.dest.suffix, dir=parent)
            os.close(fd)
            self.tmp = Path(name)
        else:
            self.tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=parent))
        return self.tmp

    def _remove_tmp(self) -> None:
        if self.tmp is None:
            return
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            self.tmp.unlink(missing_ok=True)

    def _fsync_tree(self) -> None:
        assert self.tmp is not None
        paths = [self.tmp] if self.is_file else [p for p in self.tmp.rglob("*") if p.is_file()]
        for p in paths:
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
        if not self.is_file:
            for d in [self.tmp, *[p for p in self.tmp.rglob("*") if p.is_dir()]]:
                fsync_dir(d)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.tmp is not None
        if exc_type is not None:
            self._remove_tmp()
            return
        try:
            self._fsync_tree()
            if self.is_file:
                os.replace(self.tmp, self.dest)  # atomic, also over an existing file
            elif self.dest.exists():  # overwrite a folder: move the old one aside, then swap
                old = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + "old-", dir=self.dest.parent))
                aside = old / "previous"
                os.rename(self.dest, aside)
                os.rename(self.tmp, self.dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(self.tmp, self.dest)
            fsync_dir(self.dest.parent)
        except BaseException:
            self._remove_tmp()
            raise
