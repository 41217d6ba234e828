"""Whole models in memory, read from and written as Hugging Face folders: what the evaluation tools
(`fpcore fingerprint attack`, `fpcore align`) that rewrite every tensor of a model share."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace

import torch


def load_state(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder or .safetensors file; FileNotFoundError naming `what` and the path."""
    from fpcore.io import Checkpoint

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist")
    ck = Checkpoint(p)
    return {n: ck.get(n) for n, _ in ck.items()}


def load_config(path: str | Path) -> SimpleNamespace | None:
    """The model's config.json (beside a .safetensors file, or in the folder), or None."""
    p = Path(path)
    cfg = (p if p.is_dir() else p.parent) / "config.json"
    if not cfg.is_file():
        return None
    return SimpleNamespace(**json.loads(cfg.read_text(encoding="utf-8")))


def write_like(
    src: str | Path,
    out: str | Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str],
    *,
    overwrite: bool = False,
) -> Path:
    """A Hugging Face folder at `out`: src's other files (config, tokenizer) copied when src is a folder,
    the weights in one model.safetensors with `metadata`. Appears whole or not at all."""
    from fpcore.io import write_safetensors
    from fpcore.io.atomic import AtomicOutput

    src, out = Path(src), Path(out)
    with AtomicOutput(out, overwrite=overwrite) as tmp:
        if src.is_dir():
            for f in sorted(src.iterdir()):
                if f.is_file() and not f.name.endswith(".safetensors") and f.name != "model.safetensors.index.json":
                    shutil.copy2(f, tmp / f.name)
        write_safetensors(tmp / "model.safetensors", {n: t.contiguous() for n, t in tensors.items()}, dict(metadata))
    return out
