"""The ops a file-streaming pass needs (stamp, pair sums, a finiteness check), over raw host memory
and without torch.

``fpcore stamp`` streams checkpoints chunk by chunk from memory maps into aligned output buffers;
importing torch would cost it more than a second of start-up. These ops take regions given as an
address (of the first element), a safetensors dtype name (``"F32"``, ``"BF16"``, ``"F16"``) and an
element count, contiguous. Numerics are exactly fpcore.ops.stamp's: fp32 math, every multiply and
add rounded separately, one rounding (nearest even) to the output dtype.

Backends: ``cpu`` is the same native kernel as fpcore.ops (fpcore._C); ``reference`` wraps the
memory as torch tensors (torch.frombuffer) and runs the plain-torch twin (fpcore.backends.reference),
importing torch only then. Default: cpu when the native extension loaded, else reference;
FPCORE_BACKEND or fpcore.use_backend force one ('triton' refuses: this is host memory).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from fpcore import _native
from fpcore._forced import forced_backend
from fpcore.io.buffers import memory_at
from fpcore.io.format import FORMAT_DTYPES, torch_dtype

CODES = {"F32": 0, "BF16": 1, "F16": 2}  # the native kernels' dtype codes
MAX_VECTORS = 8

Region = tuple[int, str]  # (address, safetensors dtype name)


def backend_for(op: str) -> str:
    """'cpu' or 'reference' for a raw-memory op; raises RuntimeError when a forced backend cannot run."""
    forced = forced_backend()
    if forced == "triton":
        raise RuntimeError(f"{op}: backend 'triton' was forced but cannot run: raw host memory takes cpu or reference")
    if forced == "cpu" or (forced is None and _native.HAS_NATIVE):
        _native.require_native(op)
        return "cpu"
    return "reference"


def _check(op: str, what: str, region: Region, n: int) -> tuple[int, str]:
    addr, dtype = region
    if dtype not in CODES:
        raise TypeError(f"{op}: {what} has dtype {dtype!r}; expected F32, BF16 or F16 (float32, bfloat16, float16)")
    if not isinstance(addr, int) or (n > 0 and addr <= 0):
        raise ValueError(f"{op}: {what} has no valid address ({addr!r}) for {n} elements")
    return addr, dtype


def _span(region: tuple[int, str], n: int) -> tuple[int, int]:
    return region[0], region[0] + n * FORMAT_DTYPES[region[1]][0]


def _tensor(region: Region, n: int) -> Any:
    """The region as a 1-D torch tensor sharing its memory (reference backend)."""
    import torch

    addr, dtype = region
    return torch.frombuffer(memory_at(addr, n * FORMAT_DTYPES[dtype][0]), dtype=torch_dtype(dtype), count=n)


def code_tuple(code: Any) -> tuple:
    """A TensorCode as the native kernels take it."""
    return (*code.keys, bytes(code.symbols), code.seg_bits, 1 << code.fp32_shift, code.offset)


def stamp_raw(
    out: Region, base: Region, vectors: Sequence[Region], alphas: Sequence[float], n: int, code: Any = None
) -> None:
    """out = base + sum_k alphas[k] * vectors[k] over n contiguous elements (fp32 math, one rounding),
    then, with a licensee code (a TensorCode at this chunk's offset), the code's move on the result.

    Args:
        out, base: (address, dtype) of n elements each; dtypes F32, BF16 or F16, independently.
        vectors: 1 to 8 (address, dtype) regions of n elements (0 to 8 with a code).
        alphas: one float per vector.
        n: element count (>= 0).
        code: None, or the fpcore.backends.reference.code.TensorCode of this chunk.

    Raises:
        TypeError for another dtype; ValueError for a bad address, count, alpha list, or an output
        that overlaps an input (base may not alias out here: the streaming pass never needs it).
    """
    op = "stamp"
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"{op}: element count must be an int >= 0, got {n!r}")
    least = 0 if code is not None else 1
    if not least <= len(vectors) <= MAX_VECTORS:
        raise ValueError(f"{op}: takes {least} to {MAX_VECTORS} vectors, got {len(vectors)}")
    if len(alphas) != len(vectors):
        raise ValueError(f"{op}: {len(vectors)} vectors but {len(alphas)} alphas")
    o = _check(op, "out", out, n)
    ins = [("base", _check(op, "base", base, n))] + [
        (f"vector[{k}]", _check(op, f"vector[{k}]", v, n)) for k, v in enumerate(vectors)
    ]
    if n == 0:
        return
    o0, o1 = _span(o, n)
    for what, r in ins:
        a0, a1 = _span(r, n)
        if a0 < o1 and o0 < a1:
            raise ValueError(f"{op}: out overlaps {what} in memory")
    if backend_for(op) == "cpu":
        C = _native.require_native(op)
        C.stamp_many(
            [o[0]],
            [CODES[o[1]]],
            [ins[0][1][0]],
            [CODES[ins[0][1][1]]],
            [[r[0]] for _, r in ins[1:]],
            [[CODES[r[1]]] for _, r in ins[1:]],
            [float(a) for a in alphas],
            [n],
            [] if code is None else [code_tuple(code)],
        )
        return
    from fpcore.backends.reference.code import stamp_code_reference

    stamp_code_reference(_tensor(o, n), _tensor(ins[0][1], n), [_tensor(r, n) for _, r in ins[1:]], list(alphas), code)


class PairSums(NamedTuple):
    """Sums over a pair of regions x, y (fp64 accumulation; d = x - y formed in fp32)."""

    dot: float  # <x, y>
    xx: float  # |x|^2
    yy: float  # |y|^2
    l1: float  # sum |d|
    l2sq: float  # sum d^2
    linf: float  # max |d| (NaN if any d is NaN)
    n: int


def pair_stats_raw(a: Region, b: Region, n: int) -> PairSums:
    """<a,b>, |a|^2, |b|^2, l1, l2^2 and l-inf of a - b over n contiguous elements (the sums of
    fpcore.ops.pair_stats). Raises TypeError for another dtype, ValueError for a bad address."""
    op = "pair_stats"
    x, y = _check(op, "a", a, n), _check(op, "b", b, n)
    if n == 0:
        return PairSums(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    if backend_for(op) == "cpu":
        C = _native.require_native(op)
        return PairSums(*C.pair_stats([x[0]], [CODES[x[1]]], [y[0]], [CODES[y[1]]], [n]))
    from fpcore.backends.reference.pair_stats import pair_stats_reference

    return PairSums(*pair_stats_reference([_tensor(x, n)], [_tensor(y, n)]))


def triple_stats_raw(x: Region, y: Region, z: Region, n: int) -> tuple[float, float, float, float, int]:
    """d = x - y (fp32): (<d,z>, |d|^2, |z|^2, |z - y|^2, n) over n contiguous elements, fp64 sums
    (fpcore.ops.projection's primitive). Raises TypeError for another dtype, ValueError for a bad address."""
    op = "triple_stats"
    a, b, c = _check(op, "x", x, n), _check(op, "y", y, n), _check(op, "z", z, n)
    if n == 0:
        return 0.0, 0.0, 0.0, 0.0, 0
    if backend_for(op) == "cpu":
        C = _native.require_native(op)
        codes = [CODES[r[1]] for r in (a, b, c)]
        return tuple(C.triple_stats([a[0]], [codes[0]], [b[0]], [codes[1]], [c[0]], [codes[2]], [n]))
    from fpcore.backends.reference.pair_stats import triple_stats_reference

    return triple_stats_reference([_tensor(a, n)], [_tensor(b, n)], [_tensor(c, n)])


def all_finite_raw(region: Region, n: int) -> bool:
    """True when none of the n elements at `region` is NaN or Inf.

    One native pass (the fp64 sum of squares is finite unless an element is NaN, Inf, or so large
    that the sum overflows); an exact elementwise check (torch.isfinite) confirms a suspicion.
    """
    op = "all_finite"
    r = _check(op, "tensor", region, n)
    if n == 0:
        return True
    if backend_for(op) == "cpu":
        C = _native.require_native(op)
        sums = C.pair_stats([r[0]], [CODES[r[1]]], [r[0]], [CODES[r[1]]], [n])
        if math.isfinite(sums[1]):
            return True
    import torch

    return bool(torch.isfinite(_tensor(r, n)).all())


def trace_sums_raw(suspect: Region, ref: Region, n: int, code: Any) -> tuple[list[float], ...]:
    """The licensee code's trace sums (A [S*16], W [S], Q [S], U [S]) over n contiguous elements of a
    suspect and its reference, one tensor's chunk starting at code.offset (fpcore/backends/reference/code.py)."""
    op = "trace"
    s, r = _check(op, "suspect", suspect, n), _check(op, "reference", ref, n)
    if backend_for(op) == "cpu":
        C = _native.require_native(op)
        return tuple(C.trace_sums(s[0], CODES[s[1]], r[0], CODES[r[1]], n, code_tuple(code)))
    from fpcore.backends.reference.code import trace_sums_reference

    if n == 0:
        S = 1 << code.seg_bits
        return [0.0] * (S * 16), [0.0] * S, [0.0] * S, [0.0] * S
    A, W, Q, U = trace_sums_reference(_tensor(s, n), _tensor(r, n), code)
    return A.reshape(-1).tolist(), W.tolist(), Q.tolist(), U.tolist()
