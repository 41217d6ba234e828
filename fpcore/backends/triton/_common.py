"""Shared pieces of the Triton kernels: dtype codes, fp32 loads and rounding stores, chunk tables.

Importing this module imports triton (the package ``__init__`` only does so lazily).

Numerics shared by every kernel:

- bf16 operands travel as raw 16-bit integers (the host passes ``t.view(torch.int16)``, or an address
  cast to an int16 pointer) and are widened exactly as ``bits << 16``; fp32 -> bf16 rounds to nearest
  even with integer arithmetic, ``(bits + 0x7FFF + ((bits >> 16) & 1)) >> 16``, NaN mapped to 0x7FC0.
  This is exact on every target and in the interpreter, whose own fp32 <-> bf16 casts truncate
  instead of rounding and flush bf16 subnormals (triton 3.9, ``_convert_float``).
- fp16 goes through Triton's ``.to()``: exact widening; fp32 -> fp16 rounds to nearest even (cvt.rn on
  the GPU, numpy's astype in the interpreter, subnormals kept by both).

Multi-tensor launches (``plan``) describe their tensors with two int64 tables in device memory:

- ``addrs[g, nroles + 1]``: per tensor, the raw address of each role's tensor, then its element count;
- ``chunks[nchunks, 2]``: per program, (row in ``addrs``, first element), one row per ``block`` elements
  (built on the device by a searchsorted over each tensor's first chunk: nothing waits for the device).

Tensors go into one group per dtype signature (the dtypes of all roles) and alignment, so a state
dict of mixed sizes but one signature is a single launch. The last few plans are cached by
(addresses, sizes, dtypes), of which they are a pure function.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# Operand dtype codes (constexpr kernel parameters).
CODE_F32 = 0
CODE_BF16 = 1
CODE_F16 = 2
DTYPE_CODE = {torch.float32: CODE_F32, torch.bfloat16: CODE_BF16, torch.float16: CODE_F16}

# Addresses that are multiples of this get a divisibility hint (16-byte vector loads and stores).
ALIGN_BYTES = 16


def kernel_view(t: torch.Tensor) -> torch.Tensor:
    """The tensor a kernel gets for ``t``: bf16 reinterpreted as int16 (its raw bits), others as is."""
    return t.view(torch.int16) if t.dtype == torch.bfloat16 else t


def interpreted(kernel: object) -> bool:
    """True when ``kernel`` was built by triton's interpreter (TRITON_INTERPRET=1 at import)."""
    return type(kernel).__name__ == "InterpretedFunction"


@triton.jit
def as_ptr(addr, CODE: tl.constexpr):
    """Typed pointer at int64 address ``addr``: fp32 (code 0), bf16 bits as int16 (1) or fp16 (2)."""
    if CODE == 1:
        ptr = addr.to(tl.pointer_type(tl.int16))
    elif CODE == 2:
        ptr = addr.to(tl.pointer_type(tl.float16))
    else:
        ptr = addr.to(tl.pointer_type(tl.float32))
    return ptr


@triton.jit
def tile_ptrs(addr_ptr, CODE: tl.constexpr, start, lane, ALIGNED: tl.constexpr):
    """Pointers to elements start + lane of the tensor whose int64 address is stored at ``addr_ptr``.

    ALIGNED (checked by the host: address a multiple of 16 bytes, start a multiple of the block)
    hints the pointer block itself: a hint on the loaded address does not survive to the loads.
    """
    ptrs = as_ptr(tl.load(addr_ptr), CODE) + start + lane
    if ALIGNED:
        ptrs = tl.multiple_of(ptrs, 16)
    return ptrs


@triton.jit
def load_f32(ptrs, mask, MASKED: tl.constexpr):
    """f32(*ptrs): exact widening of fp32, fp16 or bf16 (int16 bits); 0 where masked off."""
    if ptrs.dtype.element_ty == tl.int16:
        if MASKED:
            bits = tl.load(ptrs, mask=mask, other=0)
        else:
            bits = tl.load(ptrs)
        x = (bits.to(tl.int32) << 16).to(tl.float32, bitcast=True)
    else:
        if MASKED:
            x = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        else:
            x = tl.load(ptrs).to(tl.float32)
    return x


@triton.jit
def store_f32(ptrs, x, mask, MASKED: tl.constexpr):
    """*ptrs = round(x) to the pointee dtype, nearest even (bf16 by integer arithmetic, NaN kept)."""
    if ptrs.dtype.element_ty == tl.int16:
        bits = x.to(tl.uint32, bitcast=True)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        rounded = tl.where(x != x, 0x7FC0, rounded)
        val = rounded.to(tl.int16)
    else:
        val = x.to(ptrs.dtype.element_ty)
    if MASKED:
        tl.store(ptrs, val, mask=mask)
    else:
        tl.store(ptrs, val)


@dataclass
class Group:
    """One multi-tensor launch: tensors sharing a dtype signature and alignment."""

    codes: tuple[int, ...]  # dtype code of each role
    aligned: bool  # every address a multiple of ALIGN_BYTES
    addrs: torch.Tensor  # [g, nroles + 1] int64: role addresses, then element count
    chunks: torch.Tensor  # [nchunks, 2] int64: (row in addrs, first element)
    nchunks: int


_PLAN_CACHE: OrderedDict[tuple, list[Group]] = OrderedDict()
_PLAN_CACHE_SIZE = 4  # plans hold device tables: 16 bytes per chunk (13 MB for a 7B model in 8192-chunks)
_PLAN_LOCK = threading.Lock()


def plan(roles: Sequence[Sequence[torch.Tensor]], block: int, device: torch.device) -> list[Group]:
    """Group tensor tuples (roles[r][i] is role r's tensor i, equal numel across r) into launches.

    Empty tensors are dropped. Groups come in order of first appearance, rows within a group in
    input order, chunks in row order, so reductions over chunk partials have a fixed order.
    A plan is a function of the addresses, sizes and dtypes alone, so the last few are kept and
    reused when the same tensors come again (a repeated call then starts its kernel at once).
    """
    key = (device, block, tuple((t.data_ptr(), t.numel(), t.dtype) for role in roles for t in role))
    with _PLAN_LOCK:
        if key in _PLAN_CACHE:
            _PLAN_CACHE.move_to_end(key)
            return _PLAN_CACHE[key]
    groups = _make_plan(roles, block, device)
    with _PLAN_LOCK:
        _PLAN_CACHE[key] = groups
        while len(_PLAN_CACHE) > _PLAN_CACHE_SIZE:
            _PLAN_CACHE.popitem(last=False)
    return groups


def _make_plan(roles: Sequence[Sequence[torch.Tensor]], block: int, device: torch.device) -> list[Group]:
    # One group per dtype signature, so a state dict whose vectors each have one dtype takes at most
    # one launch per dtype of its weights (3). A group is hinted aligned only if all its tensors are
    # (parameters allocated by torch always are; a stray unaligned view costs its group the hint,
    # not an extra launch).
    buckets: dict[tuple[int, ...], list[int]] = {}
    for i in range(len(roles[0])):
        if roles[0][i].numel() == 0:
            continue
        buckets.setdefault(tuple(DTYPE_CODE[role[i].dtype] for role in roles), []).append(i)

    groups = []
    for codes, idx in buckets.items():
        aligned = all(role[i].data_ptr() % ALIGN_BYTES == 0 for i in idx for role in roles)
        sizes = [roles[0][i].numel() for i in idx]
        rows = [[role[i].data_ptr() for role in roles] + [n] for i, n in zip(idx, sizes, strict=True)]
        first, total = [], 0  # first chunk of each tensor
        for n in sizes:
            first.append(total)
            total += (n + block - 1) // block
        chunks = _chunk_table(to_device(first, torch.int64, device), total, block)
        groups.append(Group(codes, aligned, to_device(rows, torch.int64, device), chunks, total))
    return groups


def to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small host table on ``device`` without a synchronisation: staged in pinned memory, copied async.

    (A pageable copy waits for the device to drain: on an H100 that idled it before every launch.)
    """
    if device.type != "cuda":
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.tensor(values, dtype=dtype, pin_memory=True).to(device, non_blocking=True)


def _chunk_table(first: torch.Tensor, total: int, block: int) -> torch.Tensor:
    """[total, 2] int64 on first's device: (tensor row, first element) per chunk of ``block`` elements.

    ``first[i]``: index of tensor i's first chunk (increasing). Built with operations that never wait
    for the device (torch.repeat_interleave does, even with output_size: measured on an H100).
    """
    chunk = torch.arange(total, device=first.device)
    row = torch.searchsorted(first, chunk, right=True) - 1
    return torch.stack((row, (chunk - first[row]) * block), dim=1)


def pack_codes(codes: Sequence[int]) -> int:
    """Codes packed 2 bits each (code k at bits 2k..2k+1) into one constexpr int."""
    packed = 0
    for k, code in enumerate(codes):
        packed |= code << (2 * k)
    return packed
