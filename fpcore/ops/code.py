"""trace_sums: a suspect's correlation with every pattern of a licensee code, per segment (the
trace's one pass); TensorCode: a licensee code over one tensor, which fpcore.ops.stamp takes as
``code=``. The spec and plain-torch twin: fpcore/backends/reference/code.py."""

from __future__ import annotations

import torch

from fpcore._code import TensorCode
from fpcore._dispatch import select

from . import _validate as v

__all__ = ["TensorCode", "trace_sums"]


def trace_sums(
    suspect: torch.Tensor, reference: torch.Tensor, code: TensorCode
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A [S, 16], W [S], Q [S], U [S]) float64: W, Q, U = sums of w, w^2, u^2 and A[s, p] = sum of w
    over elements whose hash has bit p set, per segment s; w = (suspect - reference) * sign(reference)
    * u, u the code's move at the reference (fpcore/backends/reference/code.py).

    Args:
        suspect, reference: tensors of the same shape, float32/bfloat16/float16 (independently); the
            reference's dtype is the one the code moved in. Flattened row-major.
        code: the tensor's code (its keys and fp32 step; the symbols are not used).

    Raises:
        TypeError for another dtype; ValueError for a shape mismatch or mixed devices.
    """
    op = "trace"
    suspect = v.as_tensor(op, "suspect", suspect)
    reference = v.as_tensor(op, "reference", reference)
    for name, t in (("suspect", suspect), ("reference", reference)):
        v.check_dtype(op, name, t)
    v.check_same_shape(op, "reference", reference, "suspect", suspect)
    v.check_same_device(op, [("suspect", suspect), ("reference", reference)])
    backend, fn = select(op, "trace_sums", [suspect, reference])
    s_c, r_c = v.contiguous([suspect, reference])
    with torch.no_grad():
        return fn(s_c, r_c, code)
