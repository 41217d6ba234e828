"""Triton kernels of the reduction family: pair_stats, trajectories, triple_stats.

Accumulation (the spec is fpcore/backends/reference/pair_stats.py, which does it all in fp64): every
program reduces one chunk of BLOCK * ITERS elements of one tensor in fp32 (lanes accumulate over ITERS
tiles of BLOCK elements, then one tree reduction) and writes its partial sums to a ``[nchunks, k]``
fp32 buffer; the host side widens the partials to fp64 and sums them on the device in a fixed
order, so results are deterministic run to run. Differences are formed in fp32, as the reference
does. Lists of tensors are one vector: one launch per dtype signature (``_common.plan``).

``tl.max`` may drop NaN (max.f32 returns the other operand), so a block's linf is forced to NaN when
its l2sq partial is NaN: a sum of squares is NaN exactly when some difference is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from ._common import load_f32, plan, tile_ptrs

Vector = Sequence[torch.Tensor]

BLOCK = 1024  # elements per tile: the loads of one step of a program
ITERS = 16  # tiles per program: one fp32 partial per chunk of BLOCK * ITERS elements
NUM_WARPS = 4  # (1024, 16, 4) was the fastest of 9 shapes on an H100, bf16 x bf16, 512 MiB each
_PAIR_K = 6  # dot, xx, yy, l1, l2sq, linf
_TRIPLE_K = 4  # dz, dd, zz, ee


@triton.jit
def _pair_chunk(xp, yp, part, lim, BLOCK: tl.constexpr, ITERS: tl.constexpr, MASKED: tl.constexpr):
    """part[0:6] = (<x,y>, |x|^2, |y|^2, sum|x-y|, sum (x-y)^2, max|x-y|) over ITERS tiles, in fp32.

    xp, yp: pointer blocks at the chunk's first tile; lim: elements left in the tensor (MASKED only).
    Lanes accumulate across the tiles, then each sum is reduced across lanes once.
    """
    lane = tl.arange(0, BLOCK)
    dot = tl.zeros([BLOCK], dtype=tl.float32)
    xx = tl.zeros([BLOCK], dtype=tl.float32)
    yy = tl.zeros([BLOCK], dtype=tl.float32)
    l1 = tl.zeros([BLOCK], dtype=tl.float32)
    l2 = tl.zeros([BLOCK], dtype=tl.float32)
    mx = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(ITERS):
        mask = lane < lim - i * BLOCK
        x = load_f32(xp + i * BLOCK, mask, MASKED)
        y = load_f32(yp + i * BLOCK, mask, MASKED)
        d = x - y
        ad = tl.abs(d)
        dot += x * y
        xx += x * x
        yy += y * y
        l1 += ad
        l2 += d * d
        mx = tl.maximum(mx, ad)
    l2sq = tl.sum(l2, axis=0)
    linf = tl.where(l2sq != l2sq, l2sq, tl.max(mx, axis=0))  # NaN if any difference is NaN
    tl.store(part + 0, tl.sum(dot, axis=0))
    tl.store(part + 1, tl.sum(xx, axis=0))
    tl.store(part + 2, tl.sum(yy, axis=0))
    tl.store(part + 3, tl.sum(l1, axis=0))
    tl.store(part + 4, l2sq)
    tl.store(part + 5, linf)


@triton.jit
def _pair_kernel(
    chunks, addrs, part, X_T: tl.constexpr, Y_T: tl.constexpr, ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr, ITERS: tl.constexpr,
):  # fmt: skip
    """part[p] = (<x,y>, |x|^2, |y|^2, sum|x-y|, sum (x-y)^2, max|x-y|) over chunk p of a chunk table.

    chunks[p] = (row, start): elements [start, start + BLOCK * ITERS) of the tensor pair whose
    addrs row is (x address, y address, n); X_T, Y_T: dtype codes.
    """
    pid = tl.program_id(0)
    row = tl.load(chunks + 2 * pid)
    start = tl.multiple_of(tl.load(chunks + 2 * pid + 1), BLOCK * ITERS)
    rec = addrs + row * 3
    lim = tl.load(rec + 2) - start
    lane = tl.arange(0, BLOCK)
    xp = tile_ptrs(rec, X_T, start, lane, ALIGNED)
    yp = tile_ptrs(rec + 1, Y_T, start, lane, ALIGNED)
    if lim >= BLOCK * ITERS:
        _pair_chunk(xp, yp, part + pid * 6, lim, BLOCK, ITERS, False)
    else:
        _pair_chunk(xp, yp, part + pid * 6, lim, BLOCK, ITERS, True)


@triton.jit
def _triple_chunk(xp, yp, zp, part, lim, BLOCK: tl.constexpr, ITERS: tl.constexpr, MASKED: tl.constexpr):
    """d = x - y, e = z - y: part[0:4] = (<d,z>, |d|^2, |z|^2, |e|^2) over ITERS tiles, in fp32."""
    lane = tl.arange(0, BLOCK)
    dz = tl.zeros([BLOCK], dtype=tl.float32)
    dd = tl.zeros([BLOCK], dtype=tl.float32)
    zz = tl.zeros([BLOCK], dtype=tl.float32)
    ee = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(ITERS):
        mask = lane < lim - i * BLOCK
        x = load_f32(xp + i * BLOCK, mask, MASKED)
        y = load_f32(yp + i * BLOCK, mask, MASKED)
        z = load_f32(zp + i * BLOCK, mask, MASKED)
        d = x - y
        e = z - y
        dz += d * z
        dd += d * d
        zz += z * z
        ee += e * e
    tl.store(part + 0, tl.sum(dz, axis=0))
    tl.store(part + 1, tl.sum(dd, axis=0))
    tl.store(part + 2, tl.sum(zz, axis=0))
    tl.store(part + 3, tl.sum(ee, axis=0))


@triton.jit
def _triple_kernel(
    chunks, addrs, part, X_T: tl.constexpr, Y_T: tl.constexpr, Z_T: tl.constexpr, ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr, ITERS: tl.constexpr,
):  # fmt: skip
    """part[p] = (<x-y,z>, |x-y|^2, |z|^2, |z-y|^2) over chunk p; addrs[row] = (x, y, z addresses, n)."""
    pid = tl.program_id(0)
    row = tl.load(chunks + 2 * pid)
    start = tl.multiple_of(tl.load(chunks + 2 * pid + 1), BLOCK * ITERS)
    rec = addrs + row * 4
    lim = tl.load(rec + 3) - start
    lane = tl.arange(0, BLOCK)
    xp = tile_ptrs(rec, X_T, start, lane, ALIGNED)
    yp = tile_ptrs(rec + 1, Y_T, start, lane, ALIGNED)
    zp = tile_ptrs(rec + 2, Z_T, start, lane, ALIGNED)
    if lim >= BLOCK * ITERS:
        _triple_chunk(xp, yp, zp, part + pid * 4, lim, BLOCK, ITERS, False)
    else:
        _triple_chunk(xp, yp, zp, part + pid * 4, lim, BLOCK, ITERS, True)


def _device_of(vec: Vector) -> torch.device:
    return vec[0].device if len(vec) else torch.device("cpu")


def _partials(kernel: triton.JITFunction, roles: Sequence[Vector], k: int) -> torch.Tensor:
    """[nblocks, k] fp32 block partials of ``kernel`` over the tensor lists ``roles`` (one launch per group)."""
    device = _device_of(roles[0])
    groups = plan(roles, BLOCK * ITERS, device) if len(roles[0]) else []
    part = torch.empty((sum(g.nchunks for g in groups), k), dtype=torch.float32, device=device)
    row = 0
    for g in groups:
        dtypes = {f"{name}_T": code for name, code in zip("XYZ", g.codes, strict=False)}
        kernel[(g.nchunks,)](
            g.chunks,
            g.addrs,
            part[row : row + g.nchunks],
            **dtypes,
            ALIGNED=g.aligned,
            BLOCK=BLOCK,
            ITERS=ITERS,
            num_warps=NUM_WARPS,
        )
        row += g.nchunks
    return part


def _pair_sums(xs: Vector, ys: Vector) -> torch.Tensor:
    """[6] fp64 on the device: (dot, xx, yy, l1, l2sq, linf), block partials summed in block order."""
    part = _partials(_pair_kernel, [xs, ys], _PAIR_K)
    sums = part[:, :5].sum(dim=0, dtype=torch.float64)
    linf = part[:, 5].max().reshape(1) if part.shape[0] else part.new_zeros(1)  # max propagates NaN
    return torch.cat((sums, linf.to(torch.float64)))


def _numel(vec: Vector) -> int:
    return sum(t.numel() for t in vec)


def pair_stats_triton(xs: Vector, ys: Vector) -> tuple[float, float, float, float, float, float, int]:
    """(<x,y>, |x|^2, |y|^2, sum|x-y|, sum (x-y)^2, max|x-y|, n) over the flattened lists."""
    dot, xx, yy, l1, l2sq, linf = _pair_sums(xs, ys).tolist()
    return dot, xx, yy, l1, l2sq, linf, _numel(xs)


def trajectory_consecutive_triton(ckpts: Sequence[Vector]) -> dict[str, list[float]]:
    """norm2[t] = |theta_t|^2 for every t; dot, l1, l2sq, linf for each pair (theta_t, theta_t+1).

    One pair_stats pass per consecutive pair (each checkpoint read twice); norm2 comes from the
    pairs' xx (and the last pair's yy), so a lone checkpoint is paired with itself.
    """
    res: dict[str, list[float]] = {"norm2": [], "dot": [], "l1": [], "l2sq": [], "linf": []}
    T = len(ckpts)
    if T == 0:
        return res
    if T == 1:
        res["norm2"].append(_pair_sums(ckpts[0], ckpts[0])[1].item())
        return res
    rows = torch.stack([_pair_sums(ckpts[t], ckpts[t + 1]) for t in range(T - 1)]).tolist()
    res["norm2"] = [r[1] for r in rows] + [rows[-1][2]]
    res["dot"] = [r[0] for r in rows]
    res["l1"] = [r[3] for r in rows]
    res["l2sq"] = [r[4] for r in rows]
    res["linf"] = [r[5] for r in rows]
    return res


def trajectory_all_triton(ckpts: Sequence[Vector]) -> tuple[list[float], list[float]]:
    """Row-major T*T <theta_i, theta_j> and |theta_i - theta_j|^2 (from the differences, diagonal 0).

    One pair_stats pass per pair i < j; the diagonal <theta_i, theta_i> is that pass's xx or yy.
    """
    T = len(ckpts)
    dot = [0.0] * (T * T)
    l2sq = [0.0] * (T * T)
    if T == 1:
        dot[0] = _pair_sums(ckpts[0], ckpts[0])[1].item()
    if T < 2:
        return dot, l2sq
    pairs = [(i, j) for i in range(T) for j in range(i + 1, T)]
    rows = torch.stack([_pair_sums(ckpts[i], ckpts[j]) for i, j in pairs]).tolist()
    for (i, j), r in zip(pairs, rows, strict=True):
        dot[i * T + j] = dot[j * T + i] = r[0]
        l2sq[i * T + j] = l2sq[j * T + i] = r[4]
        dot[i * T + i] = r[1]
        dot[j * T + j] = r[2]
    return dot, l2sq


def triple_stats_triton(xs: Vector, ys: Vector, zs: Vector) -> tuple[float, float, float, float, int]:
    """d = x - y: (<d,z>, |d|^2, |z|^2, |z-y|^2, n)."""
    part = _partials(_triple_kernel, [xs, ys, zs], _TRIPLE_K)
    dz, dd, zz, ee = part.sum(dim=0, dtype=torch.float64).tolist()
    return dz, dd, zz, ee, _numel(xs)
