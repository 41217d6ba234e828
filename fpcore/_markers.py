"""Generated sections of text files (the README's and docs/ pages' tables): the text between a
``<!-- perf-SECTION:start -->`` and ``<!-- perf-SECTION:end -->`` marker pair, replaced atomically.
Used by the benchmark harness (fpcore.bench) and the demo's report (fpcore.fingerprint.report)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

MARKER = "<!-- perf-{section}:{edge} -->"


def markers(section: str) -> tuple[str, str]:
    """The start and end markers of `section`."""
    return MARKER.format(section=section, edge="start"), MARKER.format(section=section, edge="end")


def update_section(path: str | Path, text: str, section: str) -> None:
    """Replace what lies between the file's perf-SECTION markers with `text` (the markers stay; the
    start marker is followed by a newline, `text` runs up to the end marker). Atomic: the new file is
    written beside the old one, fsynced and renamed over it, keeping its permissions. ValueError when
    the file lacks either marker."""
    from fpcore.io import AtomicOutput

    p = Path(path)
    old = p.read_text()
    start, end = markers(section)
    if start not in old or end not in old:
        raise ValueError(f"{path} has no {start} ... {end} markers")
    head, rest = old.split(start, 1)
    _, tail = rest.split(end, 1)
    mode = stat.S_IMODE(p.stat().st_mode)
    with AtomicOutput(p, overwrite=True, is_file=True) as tmp:
        tmp.write_text(head + start + "\n" + text + end + tail)
        os.chmod(tmp, mode)
