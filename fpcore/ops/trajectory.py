"""trajectory_stats: pair statistics along a training trajectory, batched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .pair_stats import Vector, paired_vectors, run_reduction

MODES = ("consecutive", "paired", "all")


@dataclass(frozen=True)
class TrajectoryStats:
    """Arrays of PairStats fields over the pairs of a trajectory.

    mode "consecutive": pair t is (theta_t, theta_t+1), arrays of length T-1.
    mode "paired": pair t is (checkpoints[t], other[t]), length T.
    mode "all": dot, l2, cosine are T x T matrices; l1 and linf are None.
    norm_a / norm_b are the Euclidean norms of each pair's first / second vector (for "all", both are
    the T checkpoint norms).
    """

    mode: str
    dot: np.ndarray
    norm_a: np.ndarray
    norm_b: np.ndarray
    l1: np.ndarray | None
    l2: np.ndarray
    linf: np.ndarray | None
    n: int

    @property
    def cosine(self) -> np.ndarray:
        """Cosine distance 1 - <x,y>/(|x||y|), NaN where a norm is 0."""
        den = np.multiply.outer(self.norm_a, self.norm_b) if self.mode == "all" else self.norm_a * self.norm_b
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, 1.0 - self.dot / den, np.nan)


def trajectory_stats(
    checkpoints: Sequence[Vector],
    *,
    mode: str = "consecutive",
    other: Sequence[Vector] | None = None,
    check_finite: bool = False,
) -> TrajectoryStats:
    """Pair statistics over T checkpoints (update sizes, replay distances, or all-pairs matrices).

    Args:
        checkpoints: T weight vectors, each a tensor or a sequence of tensors (a state dict's
            values), paired tensor by tensor; float32, bfloat16 or float16.
        mode: "consecutive" (T-1 updates theta_t -> theta_t+1; each checkpoint read once),
            "paired" (checkpoints[t] vs other[t], e.g. replayed vs recorded), or "all" (T x T dot and
            l2 from blocks held in cache; each checkpoint read once; l2 from the differences, not
            the Gram identity, so near checkpoints keep their precision).
        other: T weight vectors for mode "paired".

    Returns:
        TrajectoryStats with float64 numpy arrays.

    Raises:
        TypeError / ValueError naming the checkpoint and tensor; ValueError for an unknown mode,
        fewer than 2 checkpoints in "consecutive", or `other` missing / of another length.
    """
    op = "trajectory_stats"
    if mode not in MODES:
        raise ValueError(f"{op}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(checkpoints, torch.Tensor) or not isinstance(checkpoints, Sequence):
        raise TypeError(f"{op}: checkpoints must be a sequence of weight vectors, got {type(checkpoints).__name__}")
    T = len(checkpoints)
    if mode == "consecutive" and T < 2:
        raise ValueError(f"{op}: mode 'consecutive' needs at least 2 checkpoints, got {T}")
    if T < 1:
        raise ValueError(f"{op}: checkpoints is empty")
    if mode == "paired":
        if other is None or isinstance(other, torch.Tensor) or len(other) != T:
            got = "None" if other is None else (len(other) if not isinstance(other, torch.Tensor) else "a tensor")
            raise ValueError(f"{op}: mode 'paired' needs `other` with {T} weight vectors, got {got}")
    elif other is not None:
        raise ValueError(f"{op}: `other` is only used with mode 'paired'")
    names = [f"checkpoints[{t}]" for t in range(T)]
    vectors: list = list(checkpoints)
    if mode == "paired":
        names += [f"other[{t}]" for t in range(T)]
        vectors += list(other)
    lists = paired_vectors(op, names, vectors, check_finite=check_finite)
    n = sum(t.numel() for t in lists[0])
    if mode == "consecutive":
        r = run_reduction(op, "trajectory_consecutive", [lists])
        norms = np.sqrt(np.asarray(r["norm2"], dtype=np.float64))
        return TrajectoryStats(
            mode,
            dot=np.asarray(r["dot"], dtype=np.float64),
            norm_a=norms[:-1],
            norm_b=norms[1:],
            l1=np.asarray(r["l1"], dtype=np.float64),
            l2=np.sqrt(np.asarray(r["l2sq"], dtype=np.float64)),
            linf=np.asarray(r["linf"], dtype=np.float64),
            n=n,
        )
    if mode == "paired":
        rows = [run_reduction(op, "pair_stats", [lists[t], lists[T + t]]) for t in range(T)]
        a = np.asarray([r[:6] for r in rows], dtype=np.float64).reshape(T, 6)
        return TrajectoryStats(
            mode,
            dot=a[:, 0],
            norm_a=np.sqrt(a[:, 1]),
            norm_b=np.sqrt(a[:, 2]),
            l1=a[:, 3],
            l2=np.sqrt(a[:, 4]),
            linf=a[:, 5],
            n=n,
        )
    dot, l2sq = run_reduction(op, "trajectory_all", [lists])
    dot_m = np.asarray(dot, dtype=np.float64).reshape(T, T)
    norms = np.sqrt(np.clip(np.diag(dot_m), 0.0, None))
    return TrajectoryStats(
        mode,
        dot=dot_m,
        norm_a=norms,
        norm_b=norms,
        l1=None,
        l2=np.sqrt(np.asarray(l2sq, dtype=np.float64).reshape(T, T)),
        linf=None,
        n=n,
    )
