"""Plain-torch twins: the spec, the test oracle, the fallback. Any device, readable over fast."""

from .code import stamp_code_multi_reference, stamp_code_reference, trace_sums_reference
from .pair_stats import (
    pair_stats_reference,
    trajectory_all_reference,
    trajectory_consecutive_reference,
    triple_stats_reference,
)
from .stamp import stamp_multi_reference, stamp_reference  # noqa: F401  (the plain twins, for tests)

OPS = {
    "stamp": stamp_code_reference,
    "stamp_multi": stamp_code_multi_reference,
    "trace_sums": trace_sums_reference,
    "pair_stats": pair_stats_reference,
    "trajectory_consecutive": trajectory_consecutive_reference,
    "trajectory_all": trajectory_all_reference,
    "triple_stats": triple_stats_reference,
}
