"""stamp, stamp_ and stamp_tensors_: theta' = theta + sum_k alpha_k * tau_k, fp32 math, one rounding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fpcore._code import TensorCode
from fpcore._dispatch import select

from . import _validate as v

Alpha = float | Sequence[float]


def _vectors(op: str, vector: Any, *, allow_none: bool = False) -> list[torch.Tensor]:
    if allow_none and isinstance(vector, Sequence) and not isinstance(vector, torch.Tensor) and len(vector) == 0:
        return []
    vecs = v.as_vector(op, "vector", vector)
    if len(vecs) > v.MAX_VECTORS:
        raise ValueError(f"{op}: got {len(vecs)} vectors; at most {v.MAX_VECTORS} are fused in one call")
    return vecs


def run_stamp(
    op: str,
    out: torch.Tensor,
    base: torch.Tensor,
    vecs: list[torch.Tensor],
    alphas: list[float],
    *,
    may_alias_base: bool,
    check_finite: bool,
    names: tuple[str, str] = ("base", "vector"),
    code: TensorCode | None = None,
) -> None:
    """Validated single-tensor stamp: writes out (any strides) from base and vecs, then the code's move.

    `names` are what errors call the base and the vectors (extract calls them tuned and base).
    """
    bname, vname = names
    named = [(bname, base)] + [(f"{vname}[{k}]" if len(vecs) > 1 else vname, t) for k, t in enumerate(vecs)]
    for name, t in named:
        v.check_dtype(op, name, t)
        v.check_same_shape(op, bname, base, name, t)
    v.check_dtype(op, "out", out)
    v.check_same_shape(op, bname, base, "out", out)
    v.check_same_device(op, named + [("out", out)])
    v.check_out(op, out, named, bname if may_alias_base else None)
    if check_finite:
        v.check_finite(op, named)
    extra = {} if code is None else {"code": code}
    backend, fn = select(op, "stamp", [out, base, *vecs])
    if backend == "reference" and code is None:
        fn(out, base, vecs, alphas)  # the reference handles any layout
        return
    base_c, *vecs_c = v.contiguous([base, *vecs])
    if out.is_contiguous():
        fn(out, base_c, vecs_c, alphas, **extra)
    else:  # the code follows the flattened (row-major) order, so a strided out gets a contiguous copy
        tmp = torch.empty(out.shape, dtype=out.dtype, device=out.device)
        fn(tmp, base_c, vecs_c, alphas, **extra)
        out.copy_(tmp)


def stamp(
    base: torch.Tensor,
    vector: torch.Tensor | Sequence[torch.Tensor],
    alpha: Alpha = 1.0,
    *,
    out: torch.Tensor | None = None,
    check_finite: bool = False,
    code: TensorCode | None = None,
) -> torch.Tensor:
    """out = base + sum_k alpha_k * vector_k, in fp32, rounded once (nearest even) to out's dtype.

    Args:
        base: tensor of any shape; float32, bfloat16 or float16.
        vector: one tensor, or a list of up to 8, each of base's exact shape; each float32,
            bfloat16 or float16 independently.
        alpha: a float for every vector, or a list with one per vector.
        out: optional destination of base's shape (any supported dtype); must not overlap the
            inputs. Default: a new tensor of base's dtype.
        check_finite: raise if an input holds NaN or Inf (by default they propagate as IEEE says).
        code: a licensee code for this tensor (fpcore.trace.TraceKey.code(licensee, name)): each
            rounded output element then moves by it (one ulp for bf16/fp16; see
            fpcore/backends/reference/code.py). `vector` may then be an empty list.

    Returns:
        out. Every multiply and add is rounded to fp32 separately (never fused), so results match
        the reference backend bit for bit on every backend.

    Raises:
        TypeError: a non-tensor argument or an unsupported dtype.
        ValueError: shape mismatch, more than 8 vectors, alpha of the wrong length, tensors on
            different devices, out overlapping an input, or a non-finite input with check_finite.
    """
    op = "stamp"
    base = v.as_tensor(op, "base", base)
    vecs = _vectors(op, vector, allow_none=code is not None)
    alphas = v.alphas_for(op, alpha, len(vecs)) if vecs else []
    if out is None:
        out = torch.empty(base.shape, dtype=base.dtype, device=base.device)
    else:
        v.as_tensor(op, "out", out)
        if out.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(f"{op}: out requires grad; out= tensors cannot take part in autograd")
    with torch.no_grad():
        run_stamp(op, out, base, vecs, alphas, may_alias_base=False, check_finite=check_finite, code=code)
    return out


def stamp_(
    base: torch.Tensor,
    vector: torch.Tensor | Sequence[torch.Tensor],
    alpha: Alpha = 1.0,
    *,
    check_finite: bool = False,
) -> torch.Tensor:
    """base <- base + sum_k alpha_k * vector_k in place (fp32 math, one rounding to base's dtype).

    Same arguments and numerics as :func:`stamp`. Refuses a tensor that requires grad while grad
    is enabled (wrap parameter updates in ``torch.no_grad()``). Returns base.
    """
    op = "stamp_"
    base = v.as_tensor(op, "base", base)
    vecs = _vectors(op, vector)
    alphas = v.alphas_for(op, alpha, len(vecs))
    v.check_inplace_grad(op, "base", base)
    with torch.no_grad():
        run_stamp(op, base, base, vecs, alphas, may_alias_base=True, check_finite=check_finite)
    return base


def pair_up(
    op: str, first_name: str, first: Any, second_name: str, second: Any
) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor]]:
    """Two state dicts (mappings, matched by name) or two sequences (matched by position)."""
    if isinstance(first, Mapping) and isinstance(second, Mapping):
        missing = [k for k in first if k not in second]
        extra = [k for k in second if k not in first]
        if missing or extra:
            raise ValueError(
                f"{op}: {first_name} and {second_name} name different tensors "
                f"(only in {first_name}: {missing[:5]}, only in {second_name}: {extra[:5]})"
            )
        names = list(first)
        return names, [first[k] for k in names], [second[k] for k in names]
    a = v.as_vector(op, first_name, first)
    b = v.as_vector(op, second_name, second)
    if len(a) != len(b):
        raise ValueError(f"{op}: {first_name} has {len(a)} tensors but {second_name} has {len(b)}")
    return [f"[{i}]" for i in range(len(a))], a, b


def stamp_tensors_(
    bases: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    vectors: Sequence[torch.Tensor] | Mapping[str, torch.Tensor] | Sequence[Sequence[torch.Tensor] | Mapping],
    alpha: Alpha = 1.0,
    *,
    check_finite: bool = False,
) -> Sequence[torch.Tensor] | Mapping[str, torch.Tensor]:
    """bases[i] <- bases[i] + sum_k alpha_k * vectors_k[i] in place, for a whole state dict at once.

    Args:
        bases: a state dict (name -> tensor) or a sequence of tensors.
        vectors: one fingerprint vector given like bases (a mapping matched by name, or a sequence
            matched by position), or a list of up to 8 such vectors.
        alpha: a float, or one per vector.

    One backend call covers every tensor: on the CPU the flattened work of all tensors is shared
    among the threads; on CUDA a multi-tensor launch walks a chunk table. Numerics as :func:`stamp`.
    Returns bases.

    Raises:
        TypeError / ValueError / RuntimeError as :func:`stamp_`, naming the tensor.
    """
    op = "stamp_tensors_"
    is_list_of_vectors = (
        isinstance(vectors, Sequence)
        and not isinstance(vectors, torch.Tensor)
        and len(vectors) > 0
        and not isinstance(vectors[0], torch.Tensor)
    )
    vector_list = list(vectors) if is_list_of_vectors else [vectors]
    if len(vector_list) > v.MAX_VECTORS:
        raise ValueError(f"{op}: got {len(vector_list)} vectors; at most {v.MAX_VECTORS} are fused in one call")
    alphas = v.alphas_for(op, alpha, len(vector_list))
    names: list[str] = []
    base_list: list[torch.Tensor] = []
    per_vector: list[list[torch.Tensor]] = []
    for k, vec in enumerate(vector_list):
        vname = "vectors" if len(vector_list) == 1 else f"vectors[{k}]"
        names, base_list, vt = pair_up(op, "bases", bases, vname, vec)
        per_vector.append(vt)
    named_all: list[tuple[str, torch.Tensor]] = []
    for i, (name, b) in enumerate(zip(names, base_list, strict=True)):
        tname = f"bases{name}" if name.startswith("[") else f"bases[{name!r}]"
        v.check_dtype(op, tname, b)
        v.check_inplace_grad(op, tname, b)
        named_all.append((tname, b))
        for k, vt in enumerate(per_vector):
            vn = f"vector {k} tensor {name}"
            v.check_dtype(op, vn, vt[i])
            v.check_same_shape(op, tname, b, vn, vt[i])
            named_all.append((vn, vt[i]))
    v.check_same_device(op, named_all)
    if check_finite:
        v.check_finite(op, named_all)
    for i, b in enumerate(base_list):
        v.check_out(op, b, [(f"vector {k} tensor {names[i]}", vt[i]) for k, vt in enumerate(per_vector)], None)
    tensors = [t for _, t in named_all]
    with torch.no_grad():
        backend, fn = select(op, "stamp_multi", tensors)
        if backend == "reference":
            fn(base_list, base_list, per_vector, alphas)
            return bases
        dense = [i for i, b in enumerate(base_list) if b.is_contiguous() and b.numel()]
        outs = [base_list[i] for i in dense]
        vecs_c = [v.contiguous([vt[i] for i in dense]) for vt in per_vector]
        if outs:
            fn(outs, outs, vecs_c, alphas)
        for i, b in enumerate(base_list):  # strided bases: stamp a copy, write it back
            if not b.is_contiguous() and b.numel():
                tmp = b.contiguous()
                fn([tmp], [tmp], [[vt[i].contiguous()] for vt in per_vector], alphas)
                b.copy_(tmp)
    return bases
