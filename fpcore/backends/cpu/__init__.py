"""Thin adapters onto fpcore._C: tensors -> raw pointers, dtype codes, sizes."""

from .pair_stats import pair_stats_cpu, trajectory_all_cpu, trajectory_consecutive_cpu, triple_stats_cpu
from .stamp import stamp_cpu, stamp_multi_cpu, trace_sums_cpu

OPS = {
    "stamp": stamp_cpu,
    "stamp_multi": stamp_multi_cpu,
    "trace_sums": trace_sums_cpu,
    "pair_stats": pair_stats_cpu,
    "trajectory_consecutive": trajectory_consecutive_cpu,
    "trajectory_all": trajectory_all_cpu,
    "triple_stats": triple_stats_cpu,
}
