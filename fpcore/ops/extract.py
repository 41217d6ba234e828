"""extract and extract_tensors: tau = tuned - base, fp32 math, one rounding to the chosen dtype."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from fpcore._dispatch import select

from . import _validate as v
from .stamp import pair_up, run_stamp


def extract(
    tuned: torch.Tensor,
    base: torch.Tensor,
    *,
    dtype: torch.dtype | None = None,
    check_finite: bool = False,
) -> torch.Tensor:
    """tau = tuned - base computed in fp32 and rounded once (nearest even) to `dtype`.

    Args:
        tuned: the fine-tuned tensor; float32, bfloat16 or float16.
        base: the base tensor of tuned's exact shape (its own dtype may differ).
        dtype: the result's dtype (float32, bfloat16 or float16); default tuned's dtype.
        check_finite: raise if an input holds NaN or Inf.

    Returns:
        A new tensor of tuned's shape. It is the stamp kernel with alpha = -1, an exact subtraction,
        so it equals ``(tuned.float() - base.float()).to(dtype)`` bit for bit.

    Raises:
        TypeError / ValueError naming the argument (dtype, shape, device).
    """
    op = "extract"
    tuned = v.as_tensor(op, "tuned", tuned)
    base = v.as_tensor(op, "base", base)
    v.check_dtype(op, "tuned", tuned)
    v.check_dtype(op, "base", base)
    dtype = tuned.dtype if dtype is None else dtype
    v.check_out_dtype(op, "result", dtype)
    out = torch.empty(tuned.shape, dtype=dtype, device=tuned.device)
    with torch.no_grad():
        run_stamp(
            op, out, tuned, [base], [-1.0], may_alias_base=False, check_finite=check_finite, names=("tuned", "base")
        )
    return out


def extract_tensors(
    tuneds: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    bases: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    check_finite: bool = False,
) -> list[torch.Tensor] | dict[str, torch.Tensor]:
    """tau_i = tuned_i - base_i for a whole state dict in one backend call (see :func:`extract`).

    Mappings are matched by name (the result is a dict in tuneds' order), sequences by position (the
    result is a list). Raises as :func:`extract`, naming the tensor.
    """
    op = "extract_tensors"
    names, tl, bl = pair_up(op, "tuneds", tuneds, "bases", bases)
    named = []
    for name, t, b in zip(names, tl, bl, strict=True):
        tn = f"tuneds{name}" if name.startswith("[") else f"tuneds[{name!r}]"
        bn = f"bases{name}" if name.startswith("[") else f"bases[{name!r}]"
        v.check_dtype(op, tn, t)
        v.check_dtype(op, bn, b)
        v.check_same_shape(op, tn, t, bn, b)
        named += [(tn, t), (bn, b)]
    v.check_same_device(op, named)
    if dtype is not None:
        v.check_out_dtype(op, "result", dtype)
    if check_finite:
        v.check_finite(op, named)
    outs = [torch.empty(t.shape, dtype=dtype or t.dtype, device=t.device) for t in tl]
    with torch.no_grad():
        backend, fn = select(op, "stamp_multi", [*tl, *bl, *outs])
        if backend == "reference":
            fn(outs, tl, [bl], [-1.0])
        else:
            fn(outs, v.contiguous(tl), [v.contiguous(bl)], [-1.0])
    if isinstance(tuneds, Mapping) and isinstance(bases, Mapping):
        return dict(zip(names, outs, strict=True))
    return outs
