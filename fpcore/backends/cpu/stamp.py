"""stamp / stamp_multi on fpcore._C.stamp_many (one native call for any number of tensors)."""

from collections.abc import Sequence
from typing import Any

import torch

from fpcore._native import require_native
from fpcore.rawops import code_tuple

from ._ptr import ptrs, sizes


def stamp_multi_cpu(
    outs: Sequence[torch.Tensor],
    bases: Sequence[torch.Tensor],
    vectors: Sequence[Sequence[torch.Tensor]],
    alphas: Sequence[float],
    codes: Sequence[Any] | None = None,
) -> None:
    """outs[i] = bases[i] + sum_k alphas[k] * vectors[k][i], then codes[i]'s move (a licensee
    code, or None); all tensors' work shared among threads."""
    C = require_native("stamp")
    out_p, out_d = ptrs(outs)
    base_p, base_d = ptrs(bases)
    vec_p, vec_d = zip(*(ptrs(v) for v in vectors), strict=True) if vectors else ((), ())
    C.stamp_many(
        out_p,
        out_d,
        base_p,
        base_d,
        list(vec_p),
        list(vec_d),
        [float(a) for a in alphas],
        sizes(outs),
        [None if c is None else code_tuple(c) for c in codes] if codes else [],
    )


def stamp_cpu(
    out: torch.Tensor, base: torch.Tensor, vectors: Sequence[torch.Tensor], alphas: Sequence[float], code: Any = None
) -> None:
    """out = base + sum_k alphas[k] * vectors[k] (contiguous CPU tensors), then the code's move."""
    stamp_multi_cpu([out], [base], [[v] for v in vectors], alphas, None if code is None else [code])


def trace_sums_cpu(suspect: torch.Tensor, ref: torch.Tensor, code: Any) -> tuple[torch.Tensor, ...]:
    """(A [S, 16], W, Q, U) float64 over contiguous CPU tensors (fpcore/backends/reference/code.py)."""
    C = require_native("trace")
    (sp,), (sd,) = ptrs([suspect])
    (rp,), (rd,) = ptrs([ref])
    A, W, Q, U = C.trace_sums(sp, sd, rp, rd, ref.numel(), code_tuple(code))
    S = len(W)
    return torch.tensor(A, dtype=torch.float64).view(S, -1), *(torch.tensor(x, dtype=torch.float64) for x in (W, Q, U))
