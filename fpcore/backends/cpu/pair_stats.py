"""The reduction family on fpcore._C (pair_stats, trajectories, triple_stats)."""

from collections.abc import Sequence

import torch

from fpcore._native import require_native

from ._ptr import ptrs, sizes

Vector = Sequence[torch.Tensor]


def pair_stats_cpu(xs: Vector, ys: Vector) -> tuple[float, float, float, float, float, float, int]:
    """(<x,y>, |x|^2, |y|^2, l1, l2^2, linf, n) in one pass over both lists."""
    C = require_native("pair_stats")
    xp, xd = ptrs(xs)
    yp, yd = ptrs(ys)
    return tuple(C.pair_stats(xp, xd, yp, yd, sizes(xs)))


def _trajectory_args(ckpts: Sequence[Vector]) -> tuple[list[list[int]], list[list[int]], list[int]]:
    pd = [ptrs(ck) for ck in ckpts]
    return [p for p, _ in pd], [d for _, d in pd], sizes(ckpts[0])


def trajectory_consecutive_cpu(ckpts: Sequence[Vector]) -> dict[str, list[float]]:
    """Consecutive-pair sums; every checkpoint read once."""
    C = require_native("trajectory_stats")
    return dict(C.trajectory_consecutive(*_trajectory_args(ckpts)))


def trajectory_all_cpu(ckpts: Sequence[Vector]) -> tuple[list[float], list[float]]:
    """All-pairs dot and squared l2, row-major T*T."""
    C = require_native("trajectory_stats")
    dot, l2sq = C.trajectory_all(*_trajectory_args(ckpts))
    return list(dot), list(l2sq)


def triple_stats_cpu(xs: Vector, ys: Vector, zs: Vector) -> tuple[float, float, float, float, int]:
    """d = x - y: (<d,z>, |d|^2, |z|^2, |z-y|^2, n) in one pass over three lists."""
    C = require_native("triple_stats")
    xp, xd = ptrs(xs)
    yp, yd = ptrs(ys)
    zp, zd = ptrs(zs)
    return tuple(C.triple_stats(xp, xd, yp, yd, zp, zd, sizes(xs)))
