"""The fleet ledger: `fleet-ledger.jsonl` beside the outputs, one line per finished job (done or failed).

Every line carries `prev` (the previous line's `hash`; GENESIS for the first) and `hash` (sha256 of the
line's canonical JSON without `hash`), so that an edited, dropped, reordered or inserted line breaks the
chain. Lines are appended by one writer (the driver), flushed and fsynced one by one; a line cut short by
a crash is the only damage a reader forgives, and only at the end (it is reported and ignored).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
FORMAT = "fpcore.fleet-ledger/1"


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def line_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


@dataclass
class LedgerState:
    """What a ledger says: its lines in order, whether the chain holds, and why not."""

    path: Path
    entries: list[dict[str, Any]] = field(default_factory=list)
    intact: bool = True
    problems: list[str] = field(default_factory=list)
    torn_tail: bool = False  # a last line cut short by a crash (ignored)

    @property
    def head(self) -> str:
        return self.entries[-1]["hash"] if self.entries else GENESIS

    def latest(self) -> dict[str, dict[str, Any]]:
        """Each job id's last line."""
        out: dict[str, dict[str, Any]] = {}
        for e in self.entries:
            out[e["job_id"]] = e
        return out


def _line_problem(e: dict[str, Any], k: int, prev: str) -> str | None:
    """Why line k (already parsed) breaks the chain, or None."""
    if e.get("format") != FORMAT:
        return f": format {e.get('format')!r}, expected {FORMAT}"
    if e.get("prev") != prev:
        return f": prev does not match line {k - 1}'s hash (a line removed or moved)"
    if e.get("hash") != line_hash(e):
        return f" (job {e.get('job', {}).get('index')}): hash mismatch (edited)"
    if e.get("seq") != k:
        return f": seq {e.get('seq')!r}, expected {k}"
    return None


def read_ledger(path: Path) -> LedgerState:
    """Reads and checks the chain. A missing ledger is an empty, intact one."""
    st = LedgerState(path)
    if not path.exists():
        return st
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    prev = GENESIS
    for k, line in enumerate(lines, 1):
        try:
            e = json.loads(line)
            if not isinstance(e, dict):
                raise ValueError("not an object")
        except ValueError:
            if k == len(lines) and not raw.endswith(b"\n"):
                st.torn_tail = True  # the last append was cut short: it never finished, so it never counted
                break
            st.intact = False
            st.problems.append(f"{path}: line {k} is not a JSON object")
            break
        problem = _line_problem(e, k, prev)
        if problem:
            st.intact = False
            st.problems.append(f"{path}: line {k}{problem}")
            break
        st.entries.append(e)
        prev = e["hash"]
    return st


class LedgerWriter:
    """Appends chained lines. Refuses to extend a broken chain; cuts a torn last line off first."""

    def __init__(self, path: Path) -> None:
        st = read_ledger(path)
        if not st.intact:
            raise ValueError(f"{path}: the ledger's chain is broken ({'; '.join(st.problems)}); not appending to it")
        if st.torn_tail:
            os.truncate(path, path.read_bytes().rfind(b"\n") + 1)
        self.path = path
        self.state = st
        self._f = open(path, "ab")  # noqa: SIM115 - held open for the run

    def append(self, body: dict[str, Any]) -> dict[str, Any]:
        e = {"format": FORMAT, "seq": len(self.state.entries) + 1, "prev": self.state.head, **body}
        e["hash"] = line_hash(e)
        self._f.write(canonical(e) + b"\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.state.entries.append(e)
        return e

    def close(self) -> None:
        self._f.close()
