"""projection: white-box fingerprint detection without materialising suspect - base."""

from __future__ import annotations

import math
from typing import NamedTuple

from .pair_stats import Vector, paired_vectors, run_reduction


class Projection(NamedTuple):
    """alpha_hat = <s-b, v> / |v|^2 (the stamping strength read back); cosine = cos(s-b, v) in [-1, 1]."""

    alpha_hat: float
    cosine: float


def projection(suspect: Vector, base: Vector, vector: Vector, *, check_finite: bool = False) -> Projection:
    """alpha_hat = <s - b, v> / |v|^2 and cos(s - b, v), in one pass over the three vectors.

    Args:
        suspect: the model under test (a tensor or a sequence of tensors).
        base: the base model the fingerprint vector was extracted from.
        vector: the fingerprint vector tau. All pair tensor by tensor with equal shapes.

    Returns:
        Projection(alpha_hat, cosine): about (alpha, 1) for a model stamped with alpha*tau, about
        (0, 0) for an unrelated one. cosine is NaN when s == b or v == 0.

    Raises:
        TypeError / ValueError naming the argument; ValueError when vector is all zeros.
    """
    op = "projection"
    s, b, vec = paired_vectors(op, ["suspect", "base", "vector"], [suspect, base, vector], check_finite=check_finite)
    dz, dd, zz, _, _ = run_reduction(op, "triple_stats", [s, b, vec])
    if zz == 0.0:
        raise ValueError(f"{op}: vector is all zeros; nothing to project onto")
    den = math.sqrt(dd * zz)
    return Projection(dz / zz, dz / den if den > 0 else float("nan"))
