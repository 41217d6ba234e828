"""The elementwise family's spec.

acc = f32(base); for each k: acc = acc + f32(alpha_k) * f32(vector_k), every multiply and add rounded
to fp32 separately (never fused), then one rounding of acc to out's dtype (nearest, ties to even).
alpha = -1 makes the add an exact subtraction, so extract (tuned - base) is this op too.
"""

from collections.abc import Sequence

import torch


def _alpha32(alpha: float, device: torch.device) -> torch.Tensor:
    # A 0-dim fp32 tensor keeps the multiply in fp32 (alpha itself rounded to fp32 first).
    return torch.tensor(alpha, dtype=torch.float32, device=device)


def stamp_reference(
    out: torch.Tensor, base: torch.Tensor, vectors: Sequence[torch.Tensor], alphas: Sequence[float]
) -> None:
    """out = base + sum_k alphas[k] * vectors[k], fp32 math, one rounding to out.dtype."""
    acc = base.to(torch.float32)
    for vec, alpha in zip(vectors, alphas, strict=True):
        acc = torch.add(acc, torch.mul(vec.to(torch.float32), _alpha32(alpha, acc.device)))
    out.copy_(acc.view(out.shape))


def stamp_multi_reference(
    outs: Sequence[torch.Tensor],
    bases: Sequence[torch.Tensor],
    vectors: Sequence[Sequence[torch.Tensor]],
    alphas: Sequence[float],
) -> None:
    """stamp_reference over many tensors; vectors[k][i] is vector k's tensor i."""
    for i, (out, base) in enumerate(zip(outs, bases, strict=True)):
        stamp_reference(out, base, [vec[i] for vec in vectors], alphas)
