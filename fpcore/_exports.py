"""The tensor ops fpcore re-exports from fpcore.ops (one list for both, importable without torch)."""

TENSOR_OPS = (
    "PairStats",
    "Projection",
    "TrajectoryStats",
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
)
