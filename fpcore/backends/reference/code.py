"""The licensee code's spec: which elements move, which way, and by how much; and the trace sums.

Everything is a function of (tensor keys k1, k2, k3; the licensee's symbols; the element's index in
its tensor), never of shard layout, chunking or threads. uint32 arithmetic (wrapping) throughout:

    fmix32(x):  x ^= x >> 16; x *= 0x85EBCA6B; x ^= x >> 13; x *= 0xC2B2AE35; x ^= x >> 16
    element i (64-bit, i < 2^44); its group of four q = i >> 2, lo = q mod 2^32, hi = q >> 32:
        h    = fmix32(fmix32(lo ^ k1) ^ (k2 + hi * 0x9E3779B1))   (one hash serves 4 elements)
        b    = (h >> (8 * (i & 3))) & 31                        (the element's 5 random bits)
        blk  = i >> 12                                          (blocks of 4096 elements)
        seg  = fmix32(fmix32(blk ^ k3) ^ k2) >> (32 - seg_bits) (one of S = 2^seg_bits segments)
        m    = symbols[seg]                                     (the licensee's pattern there, 0..15)
        c    = +1 if parity(b & (2m + 1)) else -1
The 16 patterns are the parities of b under the masks 2p + 1: each is balanced (its mask is not 0)
and any two are uncorrelated (their masks differ, so their product is the parity of b under a
non-zero mask: a fair coin). Five random bits per element carry all 16 patterns.

The move, on the stamped output's stored bits x (after its one rounding), in the output's format:
    mag = x & magmask;  if step < mag < inf - step:  x = x + c * step
    (float32: magmask 0x7FFFFFFF, inf 0x7F800000, step 2^fp32_shift; bfloat16: 0x7FFF, 0x7F80, 1;
     float16: 0x7FFF, 0x7C00, 1). +1 moves away from zero, -1 towards it; zeros, tiny values, Inf and
    NaN never move, and a move never crosses zero or reaches Inf. bf16/fp16 move by one ulp; fp32 by
    2^fp32_shift ulps (relative 2^(fp32_shift-23) to 2^(fp32_shift-24) of the value).

The trace sums over a suspect s and the reference r it was made from (r's format gives the step):
    u = |value(mag_r + step) - value(mag_r)|   (the move's size at r)
    w = (f32(s) - f32(r)) * sign(r) * u        for elements whose r is eligible to move, else 0
    W[seg] += w,  Q[seg] += w^2,  U[seg] += u^2,  A[seg, p] += w * parity(b & (2p + 1))
    (p = 0..15: all patterns at once)
A pattern's score in a segment is (2 A - W) / sqrt(Q), the correlation of the suspect's moves with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fpcore._code import PATTERNS, TensorCode

from .stamp import stamp_reference

MASK32 = 0xFFFFFFFF
BLOCK_BITS = 12
GOLDEN = 0x9E3779B1
MAX_ELEMENTS = 1 << 44

# (magmask, inf, bits per element) of each output format; the step of fp32 comes from the code.
FORMATS = {
    torch.float32: (0x7FFFFFFF, 0x7F800000, 32),
    torch.bfloat16: (0x7FFF, 0x7F80, 16),
    torch.float16: (0x7FFF, 0x7C00, 16),
}


def fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser on int64 tensors holding uint32 values (products wrap mod 2^64,
    the mask keeps their low 32 bits, which is uint32 multiplication)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & MASK32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & MASK32
    return x ^ (x >> 16)


def group_hash(idx: torch.Tensor, keys: tuple[int, int, int]) -> torch.Tensor:
    """h of each element's group of four (module doc)."""
    k1, k2, _ = keys
    q = idx >> 2
    lo, hi = q & MASK32, q >> 32
    return fmix32(fmix32(lo ^ k1) ^ ((k2 + hi * GOLDEN) & MASK32))


def element_bits(idx: torch.Tensor, keys: tuple[int, int, int]) -> torch.Tensor:
    """b: each element's 5 random bits."""
    return (group_hash(idx, keys) >> (8 * (idx & 3))) & 31


def segment_of(idx: torch.Tensor, keys: tuple[int, int, int], seg_bits: int) -> torch.Tensor:
    _, k2, k3 = keys
    return fmix32(fmix32((idx >> BLOCK_BITS) ^ k3) ^ k2) >> (32 - seg_bits)


def parity(x: torch.Tensor) -> torch.Tensor:
    """Parity of the low 5 bits."""
    x = x ^ (x >> 4)
    x = x ^ (x >> 2)
    return (x ^ (x >> 1)) & 1


def _index(n: int, offset: int, device: torch.device) -> torch.Tensor:
    if offset < 0 or offset + n > MAX_ELEMENTS:
        raise ValueError(f"licensee code: elements {offset}..{offset + n} are outside 0..2^44")
    return torch.arange(offset, offset + n, dtype=torch.int64, device=device)


def code_signs(n: int, code: TensorCode, device: torch.device | str = "cpu") -> torch.Tensor:
    """c for elements offset .. offset+n-1: int64 tensor of -1 and +1."""
    idx = _index(n, code.offset, torch.device(device))
    b = element_bits(idx, code.keys)
    sym = torch.tensor(list(code.symbols), dtype=torch.int64, device=idx.device)
    m = sym[segment_of(idx, code.keys, code.seg_bits)]
    return parity(b & (2 * m + 1)) * 2 - 1


def _bits(t: torch.Tensor) -> torch.Tensor:
    """t's stored bits as int64 (uint16 / uint32 values), flattened."""
    flat = t.reshape(-1)
    if t.dtype == torch.float32:
        return flat.view(torch.int32).to(torch.int64) & MASK32
    return flat.view(torch.int16).to(torch.int64) & 0xFFFF


def _from_bits(bits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.float32:
        return (bits - ((bits >> 31) << 32)).to(torch.int32).view(dtype)
    return (bits - ((bits >> 15) << 16)).to(torch.int16).view(dtype)


def move_bits(bits: torch.Tensor, c: torch.Tensor, dtype: torch.dtype, step: int) -> torch.Tensor:
    magmask, inf, _ = FORMATS[dtype]
    mag = bits & magmask
    ok = (mag > step) & (mag < inf - step)
    return torch.where(ok, bits + c * step, bits)


def apply_code_reference(out: torch.Tensor, code: TensorCode) -> None:
    """Moves out's elements (a contiguous tensor, flattened order) by the code, in place."""
    if out.dtype not in FORMATS:
        raise TypeError(f"licensee code: {out.dtype} is not float32, bfloat16 or float16")
    c = code_signs(out.numel(), code, out.device)
    moved = move_bits(_bits(out), c, out.dtype, code.step(out.dtype))
    out.view(-1).copy_(_from_bits(moved, out.dtype))


def stamp_code_reference(
    out: torch.Tensor,
    base: torch.Tensor,
    vectors: Sequence[torch.Tensor],
    alphas: Sequence[float],
    code: TensorCode | None = None,
) -> None:
    """stamp_reference (fp32 math, one rounding), then the code's move on the rounded output.
    No vectors: out = base (converted) plus the code."""
    if vectors:
        stamp_reference(out, base, vectors, alphas)
    else:
        out.copy_(base.view(out.shape))
    if code is not None:
        apply_code_reference(out, code)


def stamp_code_multi_reference(
    outs: Sequence[torch.Tensor],
    bases: Sequence[torch.Tensor],
    vectors: Sequence[Sequence[torch.Tensor]],
    alphas: Sequence[float],
    codes: Sequence[TensorCode | None] | None = None,
) -> None:
    """stamp_code_reference over many tensors; vectors[k][i] is vector k's tensor i."""
    for i, (out, base) in enumerate(zip(outs, bases, strict=True)):
        stamp_code_reference(out, base, [vec[i] for vec in vectors], alphas, codes[i] if codes else None)


def move_size(ref: torch.Tensor, step: int) -> torch.Tensor:
    """u: |value(mag + step) - value(mag)| at every element of ref (float32), 0 where ref is not
    eligible to move (zero, tiny, near Inf, NaN)."""
    dtype = ref.dtype
    magmask, inf, _ = FORMATS[dtype]
    bits = _bits(ref)
    mag = bits & magmask
    ok = (mag > step) & (mag < inf - step)
    safe = torch.where(ok, mag, torch.full_like(mag, step + 1))
    up = _from_bits(safe + step, dtype).to(torch.float32)
    here = _from_bits(safe, dtype).to(torch.float32)
    return torch.where(ok, up - here, torch.zeros_like(up))


def trace_sums_reference(
    suspect: torch.Tensor, ref: torch.Tensor, code: TensorCode
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A [S, 16], W [S], Q [S], U [S]) float64 over the elements of one tensor chunk (module doc). The
    code's symbols are not used (every pattern is scored); its keys and fp32_shift are."""
    n = ref.numel()
    S = 1 << code.seg_bits
    idx = _index(n, code.offset, ref.device)
    b = element_bits(idx, code.keys)
    seg = segment_of(idx, code.keys, code.seg_bits)
    u = move_size(ref, code.step(ref.dtype))
    r32 = ref.reshape(-1).to(torch.float32)
    d = suspect.reshape(-1).to(torch.float32) - r32
    w = (d * torch.sign(r32) * u).double()
    W = torch.zeros(S, dtype=torch.float64, device=ref.device).index_add_(0, seg, w)
    Q = torch.zeros(S, dtype=torch.float64, device=ref.device).index_add_(0, seg, w * w)
    U = torch.zeros(S, dtype=torch.float64, device=ref.device).index_add_(0, seg, u.double() ** 2)
    A = torch.zeros(S * PATTERNS, dtype=torch.float64, device=ref.device)
    for p in range(PATTERNS):
        A.index_add_(0, seg * PATTERNS + p, w * parity(b & (2 * p + 1)).double())
    return A.view(S, PATTERNS), W, Q, U
