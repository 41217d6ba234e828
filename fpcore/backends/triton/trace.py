"""Triton trace_sums: the licensee code's per-segment sums (spec: fpcore/backends/reference/code.py).

One program per code block (4096 elements, one segment): per element the move size u at the
reference, w = (s - r) * sign(r) * u in fp32 (as the spec), then the block's W, Q, U and a 32-bin
histogram of w over the element's 5 random bits, in fp32, written per block; torch adds the blocks
into their segments in fp64 and turns each histogram into the 16 pattern sums (a 32 x 16 parity
matrix). Matches the spec to fp32 rounding of the in-block sums.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fpcore.backends.reference.code import PATTERNS, parity

from ._common import kernel_view, load_f32
from .stamp import _fmix32

BLOCK = 4096


@triton.jit
def _trace_kernel(
    s, r, n, offset, first_end, k1, k2, k3, step, out, R_T: tl.constexpr, SEG_BITS: tl.constexpr, BLOCK: tl.constexpr
):
    pid = tl.program_id(0).to(tl.int64)
    # block 0 is [0, first_end); block k > 0 is [first_end + (k-1) BLOCK, ...)
    start = tl.where(pid == 0, 0, first_end + (pid - 1) * BLOCK)
    stop = tl.minimum(tl.where(pid == 0, first_end, start + BLOCK), n)
    lane = tl.arange(0, BLOCK)
    i = start + lane
    mask = i < stop
    rv = load_f32(r + i, mask, True)
    if R_T == 1:
        rb = (tl.load(r + i, mask=mask, other=0).to(tl.int32) & 0xFFFF).to(tl.uint32)
        magmask = 0x7FFF
        inf = 0x7F80
    elif R_T == 2:
        rb = (tl.load(r + i, mask=mask, other=0.0).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF).to(tl.uint32)
        magmask = 0x7FFF
        inf = 0x7C00
    else:
        rb = tl.load(r + i, mask=mask, other=0.0).to(tl.uint32, bitcast=True)
        magmask = 0x7FFFFFFF
        inf = 0x7F800000
    stepu = step.to(tl.uint32)
    mag = rb & magmask
    ok = mask & (mag > stepu) & (mag < inf - stepu)
    safe = tl.where(ok, mag, stepu + 1)
    if R_T == 1:
        up_v = ((safe + stepu).to(tl.int32) << 16).to(tl.float32, bitcast=True)
        here = (safe.to(tl.int32) << 16).to(tl.float32, bitcast=True)
    elif R_T == 2:
        up_v = (safe + stepu).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        here = safe.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    else:
        up_v = (safe + stepu).to(tl.float32, bitcast=True)
        here = safe.to(tl.float32, bitcast=True)
    u = tl.where(ok, up_v - here, 0.0)
    d = load_f32(s + i, mask, True) - rv
    sg = tl.where(rv < 0, -u, u)
    w = tl.where(ok, d * sg, 0.0)
    idx = offset + i
    q = idx >> 2
    h = _fmix32(
        _fmix32((q & 0xFFFFFFFF).to(tl.uint32) ^ k1.to(tl.uint32))
        ^ (k2.to(tl.uint32) + (q >> 32).to(tl.uint32) * 0x9E3779B1)
    )
    b = ((h >> ((idx & 3) * 8).to(tl.uint32)) & 31).to(tl.int32)
    base = out + pid * 36
    blk = ((offset + start) >> 12).to(tl.uint32)
    seg = _fmix32(_fmix32(blk ^ k3.to(tl.uint32)) ^ k2.to(tl.uint32)) >> (32 - SEG_BITS)
    tl.store(base + 32, tl.sum(w, axis=0))
    tl.store(base + 33, tl.sum(w * w, axis=0))
    tl.store(base + 34, tl.sum(u * u, axis=0))
    tl.store(base + 35, seg.to(tl.float32))
    for k in tl.static_range(32):
        tl.store(base + k, tl.sum(tl.where(b == k, w, 0.0), axis=0))


def _parity_matrix(device: torch.device) -> torch.Tensor:
    b = torch.arange(32)
    return torch.stack([parity(b & (2 * p + 1)) for p in range(PATTERNS)], dim=1).double().to(device)  # [32, 16]


def trace_sums_triton(suspect: torch.Tensor, ref: torch.Tensor, code) -> tuple[torch.Tensor, ...]:
    n = ref.numel()
    S = 1 << code.seg_bits
    dev = ref.device
    if n == 0:
        z = torch.zeros(S, dtype=torch.float64, device=dev)
        return torch.zeros(S, PATTERNS, dtype=torch.float64, device=dev), z, z.clone(), z.clone()
    first_end = min(n, (code.offset // BLOCK + 1) * BLOCK - code.offset)
    nblocks = 1 + -(-(n - first_end) // BLOCK)
    out = torch.empty(nblocks, 36, dtype=torch.float32, device=dev)
    r_t = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}[ref.dtype]
    _trace_kernel[(nblocks,)](
        kernel_view(suspect),
        kernel_view(ref),
        n,
        code.offset,
        first_end,
        *code.keys,
        code.step(ref.dtype),
        out,
        R_T=r_t,
        SEG_BITS=code.seg_bits,
        BLOCK=BLOCK,
        num_warps=8,
        enable_fp_fusion=False,
    )
    o = out.double()
    seg = o[:, 35].long()
    hist = torch.zeros(S, 32, dtype=torch.float64, device=dev).index_add_(0, seg, o[:, :32])
    W = torch.zeros(S, dtype=torch.float64, device=dev).index_add_(0, seg, o[:, 32])
    Q = torch.zeros(S, dtype=torch.float64, device=dev).index_add_(0, seg, o[:, 33])
    U = torch.zeros(S, dtype=torch.float64, device=dev).index_add_(0, seg, o[:, 34])
    return hist @ _parity_matrix(dev), W, Q, U
