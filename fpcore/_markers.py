"""Generated sections of text files (the docs/ pages' tables): the text between a
``<!-- perf-SECTION:start -->`` and ``<!-- perf-SECTION:end -->`` marker pair, replaced atomically.
Used by the benchmark harness (fpcore.bench), the demo's report (fpcore.fingerprint.report), the
proof-of-training report (fpcore pot report) and the trace study (benchmarks/trace_study.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
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


def update_sections(pages: Sequence[str | Path], blocks: Mapping[str, str]) -> list[tuple[str, Path]]:
    """Write each section of `blocks` (section -> text) into every page of `pages` that holds its
    markers, with :func:`update_section`. A generator that makes several tables (a study and its
    benchmark) thus takes every page they live on, in any order. Every section is placed before
    anything is written: ValueError naming the section when none of the pages holds its markers.
    Returns the (section, page) pairs written."""
    paths = [Path(p) for p in pages]
    texts = {p: p.read_text() for p in paths}
    plan: list[tuple[str, Path]] = []
    for section in blocks:
        start, end = markers(section)
        hits = [p for p in paths if start in texts[p] and end in texts[p]]
        if not hits:
            names = ", ".join(str(p) for p in paths)
            raise ValueError(f"no page of {names} has the {start} ... {end} markers")
        plan += [(section, p) for p in hits]
    for section, p in plan:
        update_section(p, blocks[section], section)
    return plan
