"""stamp / stamp_multi on fpcore._C.stamp_many (one native call for any number of tensors)."""

from collections.abc import Sequence

import torch

from fpcore._native import require_native

from ._ptr import ptrs, sizes


def stamp_multi_cpu(
    outs: Sequence[torch.Tensor],
    bases: Sequence[torch.Tensor],
    vectors: Sequence[Sequence[torch.Tensor]],
    alphas: Sequence[float],
) -> None:
    """outs[i] = bases[i] + sum_k alphas[k] * vectors[k][i]; all tensors' work shared among threads."""
    C = require_native("stamp")
    out_p, out_d = ptrs(outs)
    base_p, base_d = ptrs(bases)
    vec_p, vec_d = zip(*(ptrs(v) for v in vectors), strict=True) if vectors else ((), ())
    C.stamp_many(out_p, out_d, base_p, base_d, list(vec_p), list(vec_d), [float(a) for a in alphas], sizes(outs))


def stamp_cpu(out: torch.Tensor, base: torch.Tensor, vectors: Sequence[torch.Tensor], alphas: Sequence[float]) -> None:
    """out = base + sum_k alphas[k] * vectors[k] (contiguous CPU tensors)."""
    stamp_multi_cpu([out], [base], [[v] for v in vectors], alphas)
