"""`fpcore trace`: which licensee's copy is this? One streaming pass over SUSPECT and REF scores every
pattern of every segment (fpcore.rawops.trace_sums_raw, the native kernel); the candidates are then
scored from that small table (fpcore.trace.score), so a million candidates cost a second, not a pass.

Which tensors carry a code: every floating tensor (float32, bfloat16, float16) with two or more
dimensions (weight matrices and embeddings); norms and biases are never moved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fpcore import _stream as streaming
from fpcore import rawops
from fpcore._code import is_coded
from fpcore._stream import streaming_threads
from fpcore.io import Checkpoint, CheckpointError
from fpcore.vector import is_embedding
from fpcore.verdict import SIGNIFICANCE

from .key import TraceKey, check_licensee
from .score import Candidate, TensorSums, pattern_scores, score_candidates

Progress = Callable[[int], None]


def candidate_ids(spec: str | Path | int | Sequence[str]) -> list[str]:
    """Candidates from a count N ("0" .. "N-1"), a file of ids (one per line; blank lines skipped), or a list."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit() and not Path(spec).exists()):
        n = int(spec)
        if n < 1:
            raise ValueError(f"trace: the candidate count must be >= 1, got {n}")
        return [str(i) for i in range(n)]
    if isinstance(spec, str | Path):
        p = Path(spec)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such candidate list (give a file of ids, one per line, or a count)")
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{p}: the candidate list is not UTF-8 text ({exc})") from None
        ids = [ln.strip() for ln in lines if ln.strip()]
        where = str(p)
    else:
        ids, where = list(spec), "candidates"
    if not ids:
        raise ValueError(f"{where}: no candidate ids")
    for i, c in enumerate(ids):
        check_licensee(c, f"{where}: candidate {i + 1}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: candidate ids repeat")
    return ids


@dataclass
class TraceResult:
    """`identified`: licensees whose code is in the suspect (p corrected for the candidates < the
    significance), best first; `runners_up`: the next best, not named."""

    identified: list[Candidate]
    runners_up: list[Candidate]
    verdict: str
    significance: float
    suspect: Path
    reference: Path
    key: Path | None
    figures: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        def c(x: Candidate) -> dict:
            return {"licensee": x.licensee, "z": x.z, "p": x.p}

        return {
            "identified": [c(x) for x in self.identified],
            "runners_up": [c(x) for x in self.runners_up],
            "verdict": self.verdict,
            "significance": self.significance,
            "suspect": str(self.suspect),
            "reference": str(self.reference),
            "figures": self.figures,
            "notes": self.notes,
        }


def scores(
    suspect: str | Path, reference: str | Path, key: TraceKey, progress: Progress | None = None
) -> tuple[np.ndarray, dict, list[str]]:
    """The pattern-score table Y [S, 16] of SUSPECT against REF, figures, and notes."""
    sck, rck = Checkpoint(suspect), Checkpoint(reference)
    notes: list[str] = []
    names = [n for n, info in rck.items() if is_coded(info)]
    if not names:
        raise CheckpointError(f"{rck.path}: no float tensor of 2 or more dimensions to trace")
    for n in names:
        if n not in sck:
            raise CheckpointError(f"{sck.path}: tensor {n!r} of the reference is missing (another architecture?)")
        si, ri = sck.info(n), rck.info(n)
        if not si.is_float or si.format_dtype not in rawops.CODES:
            raise CheckpointError(
                f"{sck.path}: tensor {n!r} is {si.dtype_name}; trace reads float32, bfloat16 or float16"
            )
        grown = (
            is_embedding(n)
            and len(si.shape) == len(ri.shape)
            and si.shape[1:] == ri.shape[1:]
            and si.shape[0] > ri.shape[0]
        )
        if si.shape != ri.shape and not grown:
            raise CheckpointError(
                f"{sck.path}: tensor {n!r} has shape {si.shape}, the reference {rck.path} has {ri.shape} "
                "(another architecture?)"
            )
        if grown:
            notes.append(
                f"{n}: the suspect has {si.shape[0]} rows, the reference {ri.shape[0]}; the shared rows are scored"
            )
    sums: list[TensorSums] = []
    S = key.segments
    elements = 0
    with streaming_threads():
        for n in names:
            ri, si = rck.info(n), sck.info(n)
            r_addr, s_addr = rck.address(n), sck.address(n)
            acc = TensorSums(np.zeros((S, 16)), np.zeros(S), np.zeros(S), np.zeros(S))
            base_code = key.scoring_code(n)
            for off in range(0, ri.numel, streaming.STREAM_ELEMS):
                e = min(streaming.STREAM_ELEMS, ri.numel - off)
                A, W, Q, U = rawops.trace_sums_raw(
                    (s_addr + off * si.itemsize, si.format_dtype),
                    (r_addr + off * ri.itemsize, ri.format_dtype),
                    e,
                    base_code.at(off),
                )
                acc += TensorSums(np.asarray(A).reshape(S, 16), np.asarray(W), np.asarray(Q), np.asarray(U))
                sck.release_range(n, off * si.itemsize, e * si.itemsize)
                rck.release_range(n, off * ri.itemsize, e * ri.itemsize)
                if progress:
                    progress(e * (si.itemsize + ri.itemsize))
            elements += ri.numel
            sums.append(acc)
    Y, figures = pattern_scores(sums)
    figures.update({"tensors": len(names), "elements": elements})
    return Y, figures, notes


def trace(
    suspect: str | Path,
    reference: str | Path,
    key: TraceKey,
    candidates: str | Path | int | Sequence[str],
    *,
    significance: float = SIGNIFICANCE,
    progress: Progress | None = None,
) -> TraceResult:
    """Names the licensees whose code SUSPECT carries, among the candidates (fpcore.trace.score).

    Raises:
        CheckpointError: REF and SUSPECT do not share the architecture (a missing tensor, another
            shape), or a file cannot be read; ValueError / FileNotFoundError for the candidates.
    """
    ids = candidate_ids(candidates)
    Y, figures, notes = scores(suspect, reference, key, progress)
    identified, runners, sf = score_candidates(Y, key.symbol_matrix(ids), ids, significance)
    figures.update(sf)
    if identified:
        verdict = "identified: " + ", ".join(f"{c.licensee} (z {c.z:.1f}, p {c.p:.3g})" for c in identified)
    else:
        best = runners[0] if runners else None
        verdict = "no licensee identified" + (
            f" (best candidate {best.licensee}: z {best.z:.1f}, p {best.p:.3g})" if best else ""
        )
    figures["p_floor_note"] = "p is corrected for the number of candidates (Bonferroni)"
    return TraceResult(
        identified,
        runners,
        verdict,
        significance,
        Path(suspect),
        Path(reference),
        key.path,
        {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in figures.items()},
        notes,
    )
