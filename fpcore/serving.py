"""Stamping for serving stacks: stamp while the weights load, or stamp a model already in memory.

No stamped checkpoint is written. Numerics are those of ``fpcore stamp``: theta' = theta + alpha*tau
in fp32, rounded once to theta's dtype, so stamp-on-load gives the very bytes a load of a stamped
checkpoint gives. Lineage is checked as ``fpcore stamp`` checks it: every tensor of the vector must
exist in the target with the base's shape (embeddings may have grown rows: tau goes to the shared
rows); errors name the first tensor that does not fit.

- :func:`stamped_tensors` — ``(name, tensor)`` pairs of a checkpoint, stamped, for any loader that
  consumes such pairs (``module.load_state_dict(dict(...))``, vLLM-style ``load_weights``).
- :func:`stamp_module_` / :func:`unstamp_module_` — a live ``nn.Module`` (CPU or CUDA, any mix of
  bf16/fp16/fp32 parameters), in place, one multi-tensor call per batch of tensors.
- :func:`load_stamped` — a transformers model loaded and stamped in one step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from fpcore import ops
from fpcore.io import Checkpoint, CheckpointError
from fpcore.vector import FingerprintVector

VectorLike = str | Path | FingerprintVector

# Tau bytes moved to the module's device per multi-tensor call in stamp_module_: a 7B model in bf16
# is stamped in ~4 calls instead of holding a second copy of its weights on the GPU.
MODULE_BATCH_BYTES = 4 << 30


def _vector(vector: VectorLike) -> FingerprintVector:
    return vector if isinstance(vector, FingerprintVector) else FingerprintVector(vector)


def _rows(target_shape: tuple[int, ...], tau_shape: tuple[int, ...]) -> int | None:
    """None when tau covers the whole target; else the leading rows it covers (vocabulary growth)."""
    return None if tuple(target_shape) == tuple(tau_shape) else tau_shape[0]


def _finite_tau(vec: FingerprintVector, name: str, tau: torch.Tensor) -> torch.Tensor:
    if not ops.all_finite(tau):
        raise CheckpointError(f"{vec.path}: tensor {name!r} has non-finite values")
    return tau


def _stamped(ck: Checkpoint, vec: FingerprintVector, name: str, alpha: float) -> torch.Tensor:
    """theta + alpha * tau for tensor `name`, in theta's dtype, as a new tensor: the kernel reads
    theta and tau from the page cache (memory maps, released afterwards) and writes the result once."""
    theta = ck.get(name)
    tau = _finite_tau(vec, name, vec.get(name))
    rows = _rows(tuple(theta.shape), tuple(tau.shape))
    if rows is None:
        t = ops.stamp(theta, tau, alpha)
    else:  # vocabulary growth: tau covers the leading rows
        t = theta.clone()
        ops.stamp(theta[:rows], tau, alpha, out=t[:rows])
    vec.ckpt.release(name)
    ck.release(name)
    return t


def stamped_tensors(
    model_path: str | Path,
    vector: VectorLike,
    alpha: float = 1.0,
    *,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, theta + alpha * tau)`` for every tensor of the checkpoint at `model_path`, in
    file order; tensors tau does not cover come unchanged.

    Each weight is read once: the stamp kernel reads theta and tau from the page cache (memory
    maps, released after each tensor) and writes the result into memory the caller owns; other
    tensors are copied with pread. Stamped on the CPU (one rounding to theta's dtype), then moved
    to `device`.
    The lineage check runs before the first tensor is yielded.

    Raises:
        CheckpointError naming the file and tensor (unreadable file, a tensor of the vector missing
        in the model or of another shape, a non-finite tau).
    """
    ck = Checkpoint(model_path)
    vec = _vector(vector)
    vec.check_target(ck)
    dev = torch.device(device)
    for name, info in ck.items():
        stamp = name in vec.ckpt and info.numel and info.dtype.is_floating_point
        t = _stamped(ck, vec, name, alpha) if stamp else ck.read(name)
        yield name, (t if dev.type == "cpu" else t.to(dev))


def _module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name, each storage once (tied weights appear under their first name)."""
    out: dict[str, torch.Tensor] = dict(module.named_parameters(remove_duplicate=True))
    out.update((n, b) for n, b in module.named_buffers(remove_duplicate=True) if b is not None)
    return out


def _stamp_named_(
    tensors: Mapping[str, torch.Tensor],
    vec: FingerprintVector,
    alpha: float,
    names: list[str],
    where: str,
    batch_bytes: int,
) -> None:
    """tensors[n] <- tensors[n] + alpha * tau_n for n in names, in place, batched multi-tensor calls."""
    batch: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    held = 0
    with torch.no_grad():
        for i, name in enumerate(names):
            t = tensors[name]
            if not t.is_floating_point():
                raise CheckpointError(f"{where}: tensor {name!r} is {t.dtype}, not a float tensor")
            tau = _finite_tau(vec, name, vec.ckpt.read(name))
            rows = _rows(tuple(t.shape), tuple(tau.shape))
            batch.append((name, t if rows is None else t[:rows], tau.to(t.device, non_blocking=True)))
            held += tau.numel() * tau.element_size()
            if held >= batch_bytes or i == len(names) - 1:
                ops.stamp_tensors_({n: x for n, x, _ in batch}, {n: y for n, _, y in batch}, alpha)
                batch, held = [], 0


def stamp_module_(
    module: torch.nn.Module,
    vector: VectorLike,
    alpha: float = 1.0,
    *,
    batch_bytes: int = MODULE_BATCH_BYTES,
) -> list[str]:
    """theta <- theta + alpha * tau for every parameter/buffer of `module` that the vector covers,
    matched by name, in place, under ``torch.no_grad()``.

    Works on any device and any mix of bf16/fp16/fp32 tensors (tau is read from its file and moved
    to each tensor's device). The tensors go to :func:`fpcore.stamp_tensors_` in batches holding at
    most `batch_bytes` of tau (one multi-tensor launch per dtype signature and batch on CUDA; one
    call for a model whose tau is smaller). Returns notes (vocabulary growth, tied embeddings).

    Raises:
        CheckpointError naming the first tensor that does not fit (a vector from another
        architecture), or one whose tau is not finite; TypeError for a non-module.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"stamp_module_: expected a torch.nn.Module, got {type(module).__name__}")
    vec = _vector(vector)
    tensors = _module_tensors(module)
    where = f"module {type(module).__name__}"
    notes = vec.check_shapes({n: tuple(t.shape) for n, t in tensors.items()}, where)
    _stamp_named_(tensors, vec, alpha, [n for n in vec.names() if n in tensors], where, batch_bytes)
    return notes


def unstamp_module_(
    module: torch.nn.Module, vector: VectorLike, alpha: float = 1.0, *, batch_bytes: int = MODULE_BATCH_BYTES
) -> list[str]:
    """theta <- theta - alpha * tau in place: :func:`stamp_module_` with -alpha."""
    return stamp_module_(module, vector, -alpha, batch_bytes=batch_bytes)


def load_stamped(path: str | Path, vector: VectorLike, alpha: float = 1.0, **from_pretrained_kwargs: Any) -> Any:
    """``AutoModelForCausalLM.from_pretrained(path, **kwargs)``, stamped: the weights equal those of
    ``fpcore stamp VECTOR path -o OUT`` followed by ``from_pretrained(OUT, **kwargs)``, bit for bit.

    Parameters loaded in their checkpoint dtype are stamped in place (multi-tensor calls). Those
    loaded in another dtype (e.g. ``dtype=torch.float32`` over a bf16 checkpoint) are stamped in
    the checkpoint's dtype first and then converted, as a load of the stamped checkpoint would be.

    Needs transformers (``pip install 'fpcore[llm]'``).
    """
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("load_stamped needs transformers: pip install 'fpcore[llm]'") from exc
    vec = _vector(vector)
    ck = Checkpoint(path)
    vec.check_target(ck)
    model = AutoModelForCausalLM.from_pretrained(path, **from_pretrained_kwargs)
    tensors = _module_tensors(model)
    names = [n for n in vec.names() if n in tensors]
    where = f"{path} as {type(model).__name__}"
    missing = [n for n in names if n not in ck]
    if missing:
        raise CheckpointError(f"{where}: tensor {missing[0]!r} is a parameter but not in the checkpoint")
    same = [n for n in names if tensors[n].dtype == ck.info(n).dtype]
    _stamp_named_(tensors, vec, alpha, same, where, MODULE_BATCH_BYTES)
    with torch.no_grad():
        for name in names:
            if name in same:
                continue
            tensors[name].copy_(_stamped(ck, vec, name, alpha))  # in the checkpoint's dtype, converted as a load would
    return model
