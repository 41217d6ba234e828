"""The fingerprint-vector file: tau tensors keyed by the base model's tensor names, plus metadata
(format, stored dtype, skipped tensors and why, default alpha, fpcore version) and lineage (a digest
of the base's tensors and the architecture signature a target must share).

A vector is an ordinary safetensors file (or sharded folder), so any safetensors tool can read it;
fpcore's metadata lives in ``__metadata__`` as strings (JSON where structured).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fpcore.io import Checkpoint, CheckpointError
from fpcore.io.format import torch_dtype

if TYPE_CHECKING:
    import torch

FORMAT = "fpcore.fingerprint-vector"
VERSION = "1"
STORE_FORMATS = {"bf16": "BF16", "fp16": "F16", "fp32": "F32"}  # --dtype -> safetensors dtype


def __getattr__(name: str) -> Any:
    if name == "STORE_DTYPES":  # --dtype -> torch dtype (imports torch on first use)
        return {k: torch_dtype(v) for k, v in STORE_FORMATS.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


EMBED_HINTS = ("embed_tokens", "wte", "word_embeddings", "lm_head", "embed_out", "shared.weight")


def is_embedding(name: str) -> bool:
    """Token embeddings and output heads (left untouched by --skip-embed, as FP-VEC v3 does)."""
    return any(h in name for h in EMBED_HINTS)


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's raw bytes."""
    import torch

    t = t.detach().contiguous()
    return hashlib.sha256(t.view(torch.uint8).reshape(-1).numpy().tobytes() if t.numel() else b"").hexdigest()


def lineage_digest(ckpt: Checkpoint) -> str:
    """sha256 over the sorted (name, shape, dtype, sha256 of bytes) of every tensor: the base's identity."""
    h = hashlib.sha256()
    for name in sorted(ckpt.names()):
        info = ckpt.info(name)
        h.update(json.dumps([name, list(info.shape), info.dtype_name, tensor_digest(ckpt.get(name))]).encode())
    return h.hexdigest()


def architecture(ckpt: Checkpoint) -> dict[str, list[int]]:
    """The architecture signature: every tensor's name and shape."""
    return {name: list(info.shape) for name, info in ckpt.items()}


@dataclass
class VectorMeta:
    """What the vector file's __metadata__ holds (all of it serialised as strings)."""

    dtype: str
    base_digest: str
    architecture: dict[str, list[int]]
    skipped: dict[str, str] = field(default_factory=dict)
    alpha: float = 1.0
    fpcore_version: str = ""

    def to_strings(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "format_version": VERSION,
            "dtype": self.dtype,
            "base_digest": self.base_digest,
            "architecture": json.dumps(self.architecture, separators=(",", ":")),
            "skipped": json.dumps(self.skipped, separators=(",", ":")),
            "alpha": repr(float(self.alpha)),
            "fpcore_version": self.fpcore_version,
        }

    @classmethod
    def from_strings(cls, where: Path, meta: dict[str, str]) -> VectorMeta:
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{where}: not an fpcore fingerprint vector (metadata format {meta.get('format')!r})")
        if meta.get("format_version") != VERSION:
            raise CheckpointError(f"{where}: vector format version {meta.get('format_version')!r}, expected {VERSION}")
        try:
            return cls(
                dtype=meta["dtype"],
                base_digest=meta["base_digest"],
                architecture=json.loads(meta["architecture"]),
                skipped=json.loads(meta.get("skipped", "{}")),
                alpha=float(meta.get("alpha", "1.0")),
                fpcore_version=meta.get("fpcore_version", ""),
            )
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{where}: fingerprint-vector metadata is damaged ({exc})") from exc


class FingerprintVector:
    """An opened vector: its tensors (a Checkpoint) and its metadata."""

    def __init__(self, path: str | Path) -> None:
        self.ckpt = Checkpoint(path)
        self.path = self.ckpt.path
        first = self.ckpt.metadata[self.ckpt.files[0]]
        self.meta = VectorMeta.from_strings(self.ckpt.files[0], first)

    def names(self) -> list[str]:
        return self.ckpt.names()

    def get(self, name: str) -> torch.Tensor:
        return self.ckpt.get(name)

    def check_target(self, target: Checkpoint, *, allow_vocab_growth: bool = True) -> list[str]:
        """Raise CheckpointError naming the first tensor where `target` does not share the base's
        architecture; returns notes (e.g. vocabulary growth, tied embeddings)."""
        shapes = {n: info.shape for n, info in target.items()}
        return self.check_shapes(shapes, str(target.path), allow_vocab_growth=allow_vocab_growth)

    def check_shapes(
        self, shapes: Mapping[str, Sequence[int]], where: str, *, allow_vocab_growth: bool = True
    ) -> list[str]:
        """check_target for any tensors given by name -> shape (a live module's parameters); `where`
        names the target in errors."""
        notes: list[str] = []
        for name in self.names():
            want = self.meta.architecture.get(name) or list(self.ckpt.info(name).shape)
            if name not in shapes:
                if "lm_head" in name and any(is_embedding(n) and "lm_head" not in n for n in shapes):
                    notes.append(f"{name}: not in target (tied embeddings); skipped")
                    continue
                raise CheckpointError(f"{where}: tensor {name!r} of the vector's base is missing")
            got = list(shapes[name])
            if got == want:
                continue
            grew = allow_vocab_growth and len(got) == len(want) >= 1 and got[1:] == want[1:] and got[0] > want[0]
            if grew and is_embedding(name):
                notes.append(f"{name}: target has {got[0]} rows, base {want[0]}; tau applied to the shared rows")
                continue
            raise CheckpointError(
                f"{where}: tensor {name!r} has shape {tuple(got)}, the vector's base has {tuple(want)}"
            )
        return notes
