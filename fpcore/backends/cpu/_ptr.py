"""Raw pointers and dtype codes for the native kernels (which never see torch)."""

from collections.abc import Sequence

import torch

DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def ptrs(tensors: Sequence[torch.Tensor]) -> tuple[list[int], list[int]]:
    """Addresses and dtype codes of contiguous CPU tensors."""
    return [t.data_ptr() for t in tensors], [DTYPE_CODES[t.dtype] for t in tensors]


def sizes(tensors: Sequence[torch.Tensor]) -> list[int]:
    return [t.numel() for t in tensors]
