"""Triton kernels of the elementwise family: out = base + sum_k alpha_k * v_k.

Numerics (the spec is fpcore/backends/reference/stamp.py): acc = f32(base); for each k,
acc = acc + f32(alpha_k) * f32(v_k), multiply and add each rounded to fp32 (launched with
``enable_fp_fusion=False``, so no FMA), then one rounding of acc to out's dtype, nearest even.
Bit-exact with the reference for every non-NaN output.

Two launch shapes:

- ``stamp_triton``: one tensor, pointers as kernel arguments (up to 8 vectors; the unused pointer
  slots get the base tensor and are never read: the kernel is specialised on ``NVEC``).
- ``stamp_multi_triton``: many tensors, one launch per dtype signature through a chunk table
  (see ``_common.plan``), each program casting the table's int64 addresses to typed pointers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from ._common import kernel_view, load_f32, pack_codes, plan, store_f32, tile_ptrs, to_device

MAX_VECTORS = 8
BLOCK = 4096  # elements per program, stamp_triton
NUM_WARPS = 8
MULTI_BLOCK = 8192  # elements per program, stamp_multi_triton (each also loads its table entries)
MULTI_NUM_WARPS = 8


@triton.jit
def _axpy(acc, ptrs, alpha, mask, MASKED: tl.constexpr):
    """acc + alpha * f32(*ptrs), the multiply and the add rounded separately (no fusion at launch)."""
    return acc + alpha * load_f32(ptrs, mask, MASKED)


# fmt: off
@triton.jit
def _combine(base, v0, v1, v2, v3, v4, v5, v6, v7, a0, a1, a2, a3, a4, a5, a6, a7, lane, mask,
             NVEC: tl.constexpr, MASKED: tl.constexpr):
    """f32(base[lane]) + a0 * f32(v0[lane]) + ... (each multiply and add rounded), pointers at the tile."""
    acc = load_f32(base + lane, mask, MASKED)
    if NVEC > 0:
        acc = _axpy(acc, v0 + lane, a0, mask, MASKED)
    if NVEC > 1:
        acc = _axpy(acc, v1 + lane, a1, mask, MASKED)
    if NVEC > 2:
        acc = _axpy(acc, v2 + lane, a2, mask, MASKED)
    if NVEC > 3:
        acc = _axpy(acc, v3 + lane, a3, mask, MASKED)
    if NVEC > 4:
        acc = _axpy(acc, v4 + lane, a4, mask, MASKED)
    if NVEC > 5:
        acc = _axpy(acc, v5 + lane, a5, mask, MASKED)
    if NVEC > 6:
        acc = _axpy(acc, v6 + lane, a6, mask, MASKED)
    if NVEC > 7:
        acc = _axpy(acc, v7 + lane, a7, mask, MASKED)
    return acc


@triton.jit
def _stamp_tile(out, base, v0, v1, v2, v3, v4, v5, v6, v7, a0, a1, a2, a3, a4, a5, a6, a7, lane, mask,
                NVEC: tl.constexpr, MASKED: tl.constexpr):
    """out[lane] = round(f32(base[lane]) + a0 * f32(v0[lane]) + ...), pointers already at the tile."""
    acc = _combine(base, v0, v1, v2, v3, v4, v5, v6, v7, a0, a1, a2, a3, a4, a5, a6, a7, lane, mask, NVEC, MASKED)
    store_f32(out + lane, acc, mask, MASKED)
# fmt: on


# fmt: off
@triton.jit
def _stamp_kernel(out, base, v0, v1, v2, v3, v4, v5, v6, v7, a0, a1, a2, a3, a4, a5, a6, a7, n,
                  NVEC: tl.constexpr, BLOCK: tl.constexpr):
    """out = round(f32(base) + a0 * f32(v0) + ... + a{NVEC-1} * f32(v{NVEC-1})) over n elements.

    Program p owns elements [p * BLOCK, (p + 1) * BLOCK); only the last one is masked.
    """
    start = tl.program_id(0).to(tl.int64) * BLOCK
    lane = tl.arange(0, BLOCK)
    out = out + start
    base = base + start
    v0, v1, v2, v3 = v0 + start, v1 + start, v2 + start, v3 + start
    v4, v5, v6, v7 = v4 + start, v5 + start, v6 + start, v7 + start
    if start + BLOCK <= n:
        _stamp_tile(out, base, v0, v1, v2, v3, v4, v5, v6, v7, a0, a1, a2, a3, a4, a5, a6, a7, lane, lane, NVEC, False)
    else:
        mask = lane < n - start
        _stamp_tile(out, base, v0, v1, v2, v3, v4, v5, v6, v7, a0, a1, a2, a3, a4, a5, a6, a7, lane, mask, NVEC, True)
# fmt: on


@triton.jit
def _stamp_multi_tile(
    rec,
    alphas,
    start,
    lane,
    mask,
    OUT_T: tl.constexpr,
    BASE_T: tl.constexpr,
    VEC_T: tl.constexpr,
    NVEC: tl.constexpr,
    ALIGNED: tl.constexpr,
    MASKED: tl.constexpr,
):
    """One tile of _stamp_multi_kernel: elements start + lane of the tensor whose addrs row is ``rec``."""
    acc = load_f32(tile_ptrs(rec + 1, BASE_T, start, lane, ALIGNED), mask, MASKED)
    for k in tl.static_range(NVEC):
        vec = tile_ptrs(rec + 2 + k, (VEC_T >> (2 * k)) & 3, start, lane, ALIGNED)
        acc = _axpy(acc, vec, tl.load(alphas + k), mask, MASKED)
    store_f32(tile_ptrs(rec, OUT_T, start, lane, ALIGNED), acc, mask, MASKED)


@triton.jit
def _stamp_multi_kernel(
    chunks,
    addrs,
    alphas,
    OUT_T: tl.constexpr,
    BASE_T: tl.constexpr,
    VEC_T: tl.constexpr,
    NVEC: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """out_i = round(f32(base_i) + sum_k alphas[k] * f32(v_k,i)) for the tensors i of a chunk table.

    chunks[p] = (row, start): program p covers elements [start, start + BLOCK) of tensor ``row``,
    whose addrs row holds the addresses (out, base, v0, ..., v{NVEC-1}) and the element count.
    OUT_T, BASE_T: dtype codes; VEC_T: vector k's code in bits 2k..2k+1 (see _common.pack_codes).
    """
    pid = tl.program_id(0)
    row = tl.load(chunks + 2 * pid)
    start = tl.multiple_of(tl.load(chunks + 2 * pid + 1), BLOCK)
    rec = addrs + row * (NVEC + 3)
    n = tl.load(rec + NVEC + 2)
    lane = tl.arange(0, BLOCK)
    if start + BLOCK <= n:
        _stamp_multi_tile(rec, alphas, start, lane, lane, OUT_T, BASE_T, VEC_T, NVEC, ALIGNED, False)
    else:
        mask = lane < n - start
        _stamp_multi_tile(rec, alphas, start, lane, mask, OUT_T, BASE_T, VEC_T, NVEC, ALIGNED, True)


@triton.jit
def _fmix32(x):
    x = x ^ (x >> 16)
    x = x * 0x85EBCA6B
    x = x ^ (x >> 13)
    x = x * 0xC2B2AE35
    return x ^ (x >> 16)


# fmt: off
@triton.jit
def _stamp_code_kernel(out, base, v0, v1, v2, v3, v4, v5, v6, v7, a0, a1, a2, a3, a4, a5, a6, a7, n,
                       symbols, k1, k2, k3, step, offset,
                       SEG_BITS: tl.constexpr, OUT_T: tl.constexpr, NVEC: tl.constexpr, BLOCK: tl.constexpr):
    """_stamp_kernel, then the licensee code's move on each rounded element (fpcore/backends/reference/
    code.py): the element's hash from its index in the tensor (offset + position), uint32 arithmetic.
    OUT_T: 0 float32, 1 bfloat16 (bits as int16), 2 float16."""
    start = tl.program_id(0).to(tl.int64) * BLOCK
    lane = tl.arange(0, BLOCK)
    mask = lane < n - start
    acc = _combine(base + start, v0 + start, v1 + start, v2 + start, v3 + start, v4 + start, v5 + start, v6 + start,
                   v7 + start, a0, a1, a2, a3, a4, a5, a6, a7, lane, mask, NVEC, True)
    # the stored bits, as uint32
    if OUT_T == 1:
        b32 = acc.to(tl.uint32, bitcast=True)
        bits = (b32 + 0x7FFF + ((b32 >> 16) & 1)) >> 16
        bits = tl.where(acc != acc, 0x7FC0, bits).to(tl.uint32)
        magmask = 0x7FFF
        inf = 0x7F80
    elif OUT_T == 2:
        bits = acc.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32).to(tl.uint32) & 0xFFFF
        magmask = 0x7FFF
        inf = 0x7C00
    else:
        bits = acc.to(tl.uint32, bitcast=True)
        magmask = 0x7FFFFFFF
        inf = 0x7F800000
    idx = offset + start + lane
    q = idx >> 2
    lo = (q & 0xFFFFFFFF).to(tl.uint32)
    hi = (q >> 32).to(tl.uint32)
    k2u = k2.to(tl.uint32)
    h = _fmix32(_fmix32(lo ^ k1.to(tl.uint32)) ^ (k2u + hi * 0x9E3779B1))
    b = (h >> ((idx & 3) * 8).to(tl.uint32)) & 31
    blk = (idx >> 12).to(tl.uint32)
    seg = _fmix32(_fmix32(blk ^ k3.to(tl.uint32)) ^ k2u) >> (32 - SEG_BITS)
    m = tl.load(symbols + seg.to(tl.int32), mask=mask, other=0).to(tl.uint32)
    x = b & (2 * m + 1)
    x = x ^ (x >> 4)
    x = x ^ (x >> 2)
    x = x ^ (x >> 1)
    up = (x & 1) == 1
    stepu = step.to(tl.uint32)
    mag = bits & magmask
    ok = (mag > stepu) & (mag < inf - stepu)
    bits = tl.where(ok & up, bits + stepu, tl.where(ok & (~up), bits - stepu, bits))
    if OUT_T == 1:
        tl.store(out + start + lane, bits.to(tl.int16), mask=mask)
    elif OUT_T == 2:
        tl.store(out + start + lane, bits.to(tl.int16).to(tl.float16, bitcast=True), mask=mask)
    else:
        tl.store(out + start + lane, bits.to(tl.float32, bitcast=True), mask=mask)
# fmt: on


OUT_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def stamp_triton(
    out: torch.Tensor, base: torch.Tensor, vectors: Sequence[torch.Tensor], alphas: Sequence[float], code=None
) -> None:
    """out = base + sum_k alphas[k] * vectors[k] (fp32 math, one rounding to out.dtype); writes out.
    With a licensee code (a TensorCode), each rounded element then moves by it."""
    nvec = len(vectors)
    if nvec > MAX_VECTORS:
        raise RuntimeError(f"stamp_triton: at most {MAX_VECTORS} vectors, got {nvec}")
    n = out.numel()
    if n == 0:
        return
    base_k = kernel_view(base)
    vecs = [kernel_view(v) for v in vectors] + [base_k] * (MAX_VECTORS - nvec)
    alpha_args = [float(a) for a in alphas] + [0.0] * (MAX_VECTORS - nvec)
    grid = (triton.cdiv(n, BLOCK),)
    if code is not None:
        sym = torch.tensor(list(code.symbols), dtype=torch.int32, device=out.device)
        _stamp_code_kernel[grid](
            kernel_view(out),
            base_k,
            *vecs,
            *alpha_args,
            n,
            sym,
            *code.keys,
            code.step(out.dtype),
            code.offset,
            SEG_BITS=code.seg_bits,
            OUT_T=OUT_CODES[out.dtype],
            NVEC=nvec,
            BLOCK=BLOCK,
            num_warps=NUM_WARPS,
            enable_fp_fusion=False,
        )
        return
    _stamp_kernel[grid](
        kernel_view(out),
        base_k,
        *vecs,
        *alpha_args,
        n,
        NVEC=nvec,
        BLOCK=BLOCK,
        num_warps=NUM_WARPS,
        enable_fp_fusion=False,
    )


def stamp_multi_triton(
    outs: Sequence[torch.Tensor],
    bases: Sequence[torch.Tensor],
    vectors: Sequence[Sequence[torch.Tensor]],
    alphas: Sequence[float],
    codes: Sequence | None = None,
) -> None:
    """stamp_triton over many tensors (vectors[k][i] is vector k's tensor i): one launch per dtype
    signature; with licensee codes, one coded launch per tensor."""
    if codes and any(c is not None for c in codes):
        for i, (o, b) in enumerate(zip(outs, bases, strict=True)):
            stamp_triton(o, b, [v[i] for v in vectors], alphas, codes[i])
        return
    nvec = len(vectors)
    if nvec > MAX_VECTORS:
        raise RuntimeError(f"stamp_multi_triton: at most {MAX_VECTORS} vectors, got {nvec}")
    if not outs:
        return
    device = outs[0].device
    alpha_t = to_device([float(a) for a in alphas] or [0.0], torch.float32, device)
    for group in plan([outs, bases, *vectors], MULTI_BLOCK, device):
        _stamp_multi_kernel[(group.nchunks,)](
            group.chunks,
            group.addrs,
            alpha_t,
            OUT_T=group.codes[0],
            BASE_T=group.codes[1],
            VEC_T=pack_codes(group.codes[2:]),
            NVEC=nvec,
            ALIGNED=group.aligned,
            BLOCK=MULTI_BLOCK,
            num_warps=MULTI_NUM_WARPS,
            enable_fp_fusion=False,
        )
