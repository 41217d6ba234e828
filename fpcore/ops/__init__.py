"""Public tensor ops: validation and dispatch; the tensor door to the kernels (fpcore.rawops is the
raw-memory one, for file streaming without torch). Names re-exported, listed in fpcore._exports."""

from fpcore._exports import TENSOR_OPS

from .extract import extract, extract_tensors  # noqa: F401
from .matching_loss import matching_loss, matching_loss_batch  # noqa: F401
from .pair_stats import PairStats, all_finite, pair_stats  # noqa: F401
from .projection import Projection, projection  # noqa: F401
from .stamp import stamp, stamp_, stamp_tensors_  # noqa: F401
from .trajectory import TrajectoryStats, trajectory_stats  # noqa: F401

__all__ = ["all_finite", *TENSOR_OPS]
