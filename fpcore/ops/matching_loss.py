"""matching_loss: the normalised trajectory-matching distance (MTT / TESLA)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .pair_stats import Vector, paired_vectors, run_reduction


def _sums(op: str, start: Vector, reached: Vector, target: Vector, check_finite: bool) -> tuple[float, float]:
    s, r, t = paired_vectors(op, ["start", "reached", "target"], [start, reached, target], check_finite=check_finite)
    # x = reached, y = target, z = start:  dd = |reached - target|^2,  ee = |start - target|^2
    _, dd, _, ee, _ = run_reduction(op, "triple_stats", [r, t, s])
    return dd, ee


def matching_loss(start: Vector, reached: Vector, target: Vector, *, check_finite: bool = False) -> float:
    """|reached - target|^2 / |start - target|^2, in one pass over the three vectors.

    Args:
        start: theta_s, where the student (or replay) began; a tensor or a sequence of tensors.
        reached: theta_hat_s+n, where it arrived.
        target: theta_s+m, the expert checkpoint it should match.
        All three pair tensor by tensor with equal shapes; float32, bfloat16 or float16.

    Returns:
        The loss as a float: 1 when reached == start, 0 when reached == target.

    Raises:
        TypeError / ValueError naming the argument; ValueError when start equals target (the
        normaliser |start - target|^2 is 0).
    """
    op = "matching_loss"
    dd, ee = _sums(op, start, reached, target, check_finite)
    if ee == 0.0:
        raise ValueError(f"{op}: start equals target, so the normaliser |start - target|^2 is 0")
    return dd / ee


def matching_loss_batch(triples: Sequence[tuple[Vector, Vector, Vector]], *, check_finite: bool = False) -> np.ndarray:
    """matching_loss over many (start, reached, target) triples; float64 array, NaN where start == target."""
    op = "matching_loss_batch"
    if isinstance(triples, (str, bytes)) or not isinstance(triples, Sequence):
        raise TypeError(f"{op}: triples must be a sequence of (start, reached, target)")
    out = np.empty(len(triples), dtype=np.float64)
    for i, tr in enumerate(triples):
        if not isinstance(tr, Sequence) or len(tr) != 3:
            raise ValueError(f"{op}: triples[{i}] must be (start, reached, target)")
        dd, ee = _sums(f"{op}: triples[{i}]", *tr, check_finite)
        out[i] = dd / ee if ee != 0.0 else np.nan
    return out
