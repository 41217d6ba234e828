"""Public tensor ops: validation and dispatch. The only door to the kernels."""

from .extract import extract, extract_tensors
from .matching_loss import matching_loss, matching_loss_batch
from .pair_stats import PairStats, all_finite, pair_stats
from .projection import Projection, projection
from .stamp import stamp, stamp_, stamp_tensors_
from .trajectory import TrajectoryStats, trajectory_stats

__all__ = [
    "PairStats",
    "Projection",
    "TrajectoryStats",
    "all_finite",
    "extract",
    "extract_tensors",
    "matching_loss",
    "matching_loss_batch",
    "pair_stats",
    "projection",
    "stamp",
    "stamp_",
    "stamp_tensors_",
    "trajectory_stats",
]
