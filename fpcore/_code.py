"""TensorCode: one licensee's code over one tensor, as the kernels take it (no torch here, so the
file-streaming stamp and trace never import it). The spec: fpcore/backends/reference/code.py."""

from __future__ import annotations

from dataclasses import dataclass

PATTERNS = 16
CODED_FORMATS = ("F32", "BF16", "F16")


def is_coded(info: object) -> bool:
    """Whether a checkpoint tensor carries a licensee code: float32/bfloat16/float16 with >= 2
    dimensions (weight matrices and embeddings; norms and biases are never moved)."""
    return bool(
        getattr(info, "is_float", False)
        and getattr(info, "format_dtype", None) in CODED_FORMATS
        and len(getattr(info, "shape", ())) >= 2
    )


@dataclass(frozen=True)
class TensorCode:
    """One licensee's code over one tensor (or the chunk of it that starts at element `offset`).

    keys: (k1, k2, k3), uint32, derived from the trace key and the tensor's name.
    symbols: the licensee's pattern (0..15) in each of the 2^seg_bits segments.
    fp32_shift: float32 outputs move by 2^fp32_shift ulps.
    """

    keys: tuple[int, int, int]
    symbols: bytes
    fp32_shift: int = 14
    offset: int = 0

    @property
    def seg_bits(self) -> int:
        return len(self.symbols).bit_length() - 1

    def at(self, offset: int) -> TensorCode:
        return TensorCode(self.keys, self.symbols, self.fp32_shift, offset)

    def step(self, dtype: object) -> int:
        """The move in stored-bit units for an output of `dtype` (a torch dtype or \"F32\"/\"BF16\"/\"F16\")."""
        return 1 << self.fp32_shift if str(dtype) in ("torch.float32", "F32") else 1
