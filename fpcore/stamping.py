"""extract / stamp / unstamp over checkpoints on disk, streaming tensor by tensor.

All arithmetic goes through fpcore.ops; all file work through fpcore.io. Outputs are atomic
(AtomicOutput); inputs are never modified. Peak memory is a few tensors, not a model.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fpcore import __version__, ops
from fpcore.io import AtomicOutput, Checkpoint, CheckpointError, SafetensorsWriter
from fpcore.io.reader import INDEX
from fpcore.vector import STORE_DTYPES, FingerprintVector, VectorMeta, architecture, is_embedding, tensor_digest

Progress = Callable[[int], None]  # called with bytes processed


@dataclass
class ExtractResult:
    out: Path
    tensors: int
    skipped: dict[str, str]
    dtype: str
    base_digest: str
    bytes_written: int


@dataclass
class StampResult:
    outputs: list[Path]
    tensors_stamped: int
    notes: list[str] = field(default_factory=list)
    vector_bytes_read: int = 0


def _all_finite(t: torch.Tensor) -> bool:
    """True when every element is finite: one native pass (|t|^2 is finite unless an element is NaN,
    Inf or beyond ~1.8e19), with torch's exact elementwise check only to confirm a suspicion."""
    if t.numel() == 0:
        return True
    s = ops.pair_stats(t.reshape(-1), t.reshape(-1))
    if math.isfinite(s.norm_a):
        return True
    return bool(torch.isfinite(t).all())


def _selected(name: str, include: Sequence[str] | None, exclude: Sequence[str] | None) -> bool:
    if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
        return False
    return not (exclude and any(fnmatch.fnmatchcase(name, p) for p in exclude))


def _digest_of(digests: dict[str, tuple[list[int], str, str]]) -> str:
    h = hashlib.sha256()
    for name in sorted(digests):
        shape, dtype, d = digests[name]
        h.update(json.dumps([name, shape, dtype, d]).encode())
    return h.hexdigest()


def extract(
    tuned: str | Path,
    base: str | Path,
    out: str | Path,
    *,
    dtype: str = "bf16",
    skip_embed: bool = False,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    overwrite: bool = False,
    allow_nonfinite: bool = False,
    progress: Progress | None = None,
) -> ExtractResult:
    """Write the fingerprint vector tau = tuned - base (one .safetensors file at `out`).

    Both checkpoints must have the same tensor names and shapes. Non-float tensors, tensors left
    out by include/exclude globs or skip_embed, and all-zero deltas are not stored; the file lists
    them with the reason. The base's lineage digest and architecture go into the metadata.

    Raises:
        CheckpointError naming the file and tensor (mismatched names or shapes, non-finite tau
        unless allow_nonfinite, unreadable files); FileExistsError if `out` exists (overwrite=False);
        ValueError for an unknown dtype.
    """
    if dtype not in STORE_DTYPES:
        raise ValueError(f"extract: dtype must be one of {', '.join(STORE_DTYPES)}, got {dtype!r}")
    store = STORE_DTYPES[dtype]
    tck, bck = Checkpoint(tuned), Checkpoint(base)
    missing = [n for n in bck.names() if n not in tck]
    extra = [n for n in tck.names() if n not in bck]
    if missing or extra:
        first = (missing or extra)[0]
        where = tck.path if missing else bck.path
        raise CheckpointError(f"{where}: tensor {first!r} is not in both checkpoints (is BASE the tuned model's base?)")
    skipped: dict[str, str] = {}
    digests: dict[str, tuple[list[int], str, str]] = {}
    keep: list[str] = []
    # pass 1: lineage digest of the base, shapes, and which deltas are all zero
    for name in bck.names():
        bi, ti = bck.info(name), tck.info(name)
        if bi.shape != ti.shape:
            raise CheckpointError(f"{tck.path}: tensor {name!r} has shape {ti.shape}, the base has {bi.shape}")
        b = bck.get(name)
        digests[name] = (list(bi.shape), str(bi.dtype), tensor_digest(b))
        if not (b.is_floating_point() and b.dtype in STORE_DTYPES.values()):
            skipped[name] = f"not a float tensor ({bi.dtype})"
        elif not _selected(name, include, exclude):
            skipped[name] = "excluded by --include/--exclude"
        elif skip_embed and is_embedding(name):
            skipped[name] = "embedding or output head (--skip-embed)"
        else:
            t = tck.get(name)
            if t.dtype == b.dtype:  # same dtype: the delta is zero exactly where the bytes agree
                zero = torch.equal(t.view(torch.uint8), b.view(torch.uint8))
            else:  # different dtypes: only the fp32 delta can tell
                zero = not bool(torch.any(ops.extract(t, b, dtype=torch.float32) != 0))
            if zero:
                skipped[name] = "all-zero delta"
            else:
                keep.append(name)
        bck.release(name)
        tck.release(name)
        if progress:
            progress(bi.nbytes)
    meta = VectorMeta(
        dtype=dtype,
        base_digest=_digest_of(digests),
        architecture=architecture(bck),
        skipped=skipped,
        fpcore_version=__version__,
    )
    layout = [(n, store, bck.info(n).shape) for n in keep]
    written = 0
    with AtomicOutput(out, overwrite=overwrite, is_file=True) as tmp:
        with SafetensorsWriter(tmp, layout, meta.to_strings()) as w:
            for name in keep:
                tau = ops.extract(tck.get(name), bck.get(name), dtype=store)
                if not allow_nonfinite and not _all_finite(tau):
                    raise CheckpointError(
                        f"{tck.path}: tensor {name!r}: tau has non-finite values (pass --allow-nonfinite to keep them)"
                    )
                w.write(name, tau)
                bck.release(name)
                tck.release(name)
                written += tau.numel() * tau.element_size()
                if progress:
                    progress(bck.info(name).nbytes)
    return ExtractResult(Path(out), len(keep), skipped, dtype, meta.base_digest, written)


# ---- stamping ----------------------------------------------------------------------------------


class _ModelOut:
    """One target model being written: a writer per shard that tau touches; other shards linked."""

    def __init__(self, ck: Checkpoint, dest: Path, names_in_order: list[str], metadata_extra: dict[str, str]) -> None:
        self.ck = ck
        self.dest = dest
        touched: dict[Path, list[str]] = {}
        for n in names_in_order:
            touched.setdefault(ck.info(n).file, []).append(n)
        self.writers: dict[Path, SafetensorsWriter] = {}
        self.rest: dict[Path, list[str]] = {}
        single = ck.path.is_file()
        if not single:
            dest.mkdir(parents=True, exist_ok=True)
        for f in ck.files:
            target = dest if single else dest / f.name
            if f not in touched:
                _link_or_copy(f, target)
                continue
            first = touched[f]
            others = [n for n, info in ck.items() if info.file == f and n not in set(first)]
            layout = [(n, ck.info(n).dtype, ck.info(n).shape) for n in first + others]
            meta = dict(ck.metadata[f])
            meta.update(metadata_extra)
            self.writers[f] = SafetensorsWriter(target, layout, meta)
            self.rest[f] = others
        if not single:
            if ck.index_file is not None:
                shutil.copy2(ck.index_file, dest / INDEX)
            for extra in ck.other_files():
                shutil.copy2(extra, dest / extra.name)

    def write(self, name: str, t: torch.Tensor) -> None:
        self.writers[self.ck.info(name).file].write(name, t)

    def finish(self) -> None:
        for f, w in self.writers.items():
            for n in self.rest[f]:
                w.write(n, self.ck.get(n))
                self.ck.release(n)
            w.close()


def _link_or_copy(src: Path, dst: Path) -> None:
    """An unchanged shard: hard-linked when the file system allows (no bytes copied), else copied."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def stamp(
    vectors: Sequence[tuple[str | Path, float]],
    models: Sequence[str | Path],
    out: str | Path,
    *,
    overwrite: bool = False,
    skip_mismatched: bool = False,
    allow_nonfinite: bool = False,
    progress: Progress | None = None,
) -> StampResult:
    """Stamp theta' = theta + sum_k alpha_k * tau_k into every model; each tau tensor is read once
    and applied to every model's matching tensor before the next is read.

    One model: `out` is the stamped model (same form as the input: file or folder, same shard
    layout, index and non-weight files). Several: ``out/<model name>/`` each. Lineage: every model
    must share the vectors' base architecture (vocabulary growth of embeddings allowed: tau goes to
    the shared rows); other shape mismatches raise unless skip_mismatched.

    Raises:
        CheckpointError naming the file and tensor; FileExistsError when `out` exists and not overwrite.
    """
    if not vectors:
        raise ValueError("stamp: give at least one vector")
    if not models:
        raise ValueError("stamp: give at least one model")
    vecs = [(FingerprintVector(p), float(a)) for p, a in vectors]
    cks = [Checkpoint(m) for m in models]
    names_dest = [ck.path.name if ck.path.is_dir() else ck.path.stem for ck in cks]
    if len(cks) > 1 and len(set(names_dest)) != len(names_dest):
        raise ValueError(f"stamp: models share a folder name ({names_dest}); outputs would collide")
    notes: list[str] = []
    for ck in cks:
        for v, _ in vecs:
            notes += [f"{ck.path}: {n}" for n in v.check_target(ck)]
    order: list[str] = []
    for v, _ in vecs:
        order += [n for n in v.names() if n not in order]
    plan: dict[int, list[str]] = {}
    for i, ck in enumerate(cks):
        keep = []
        for n in order:
            if n not in ck:
                continue
            bad = [v for v, _ in vecs if n in v.names() and not _fits(ck.info(n).shape, v.ckpt.info(n).shape)]
            if bad:
                if not skip_mismatched:
                    raise CheckpointError(
                        f"{ck.path}: tensor {n!r} has shape {ck.info(n).shape}, the vector has "
                        f"{bad[0].ckpt.info(n).shape} (pass --skip-mismatched to leave it)"
                    )
                notes.append(f"{ck.path}: {n}: shape mismatch, left unstamped")
                continue
            if not ck.info(n).dtype.is_floating_point:
                raise CheckpointError(f"{ck.path}: tensor {n!r} is {ck.info(n).dtype}, not a float tensor")
            keep.append(n)
        plan[i] = keep
    extra_meta = {
        "fpcore_stamped": json.dumps([{"base_digest": v.meta.base_digest, "alpha": a} for v, a in vecs]),
    }
    stamped = 0
    vec_bytes = 0
    outdir = Path(out)
    with AtomicOutput(outdir, overwrite=overwrite, is_file=len(cks) == 1 and cks[0].path.is_file()) as tmp:
        dests = (
            [tmp]
            if len(cks) == 1
            else [
                tmp / (n + (".safetensors" if ck.path.is_file() else "")) for n, ck in zip(names_dest, cks, strict=True)
            ]
        )
        if len(cks) > 1:
            tmp.mkdir(exist_ok=True)
        outs = [_ModelOut(ck, d, plan[i], extra_meta) for i, (ck, d) in enumerate(zip(cks, dests, strict=True))]
        for name in order:
            taus = []
            for v, a in vecs:
                if name in v.names():
                    t = v.get(name)
                    vec_bytes += t.numel() * t.element_size()
                    if not allow_nonfinite and not _all_finite(t):
                        raise CheckpointError(
                            f"{v.path}: tensor {name!r} has non-finite values (pass --allow-nonfinite to use it)"
                        )
                    taus.append((t, a))
            for i, ck in enumerate(cks):
                if name not in plan[i]:
                    continue
                theta = ck.get(name)
                outs[i].write(name, _stamp_one(theta, taus))
                ck.release(name)  # keep resident memory to the tensors in flight
                stamped += 1
                if progress:
                    progress(ck.info(name).nbytes)
            for v, _ in vecs:
                if name in v.names():
                    v.ckpt.release(name)
        for o in outs:
            o.finish()
    outputs = [outdir] if len(cks) == 1 else [outdir / d.name for d in dests]
    return StampResult(outputs, stamped, notes, vec_bytes)


def _fits(target: tuple[int, ...], tau: tuple[int, ...]) -> bool:
    return target == tau or (len(target) == len(tau) >= 1 and target[1:] == tau[1:] and target[0] > tau[0])


def _stamp_one(theta: torch.Tensor, taus: list[tuple[torch.Tensor, float]]) -> torch.Tensor:
    """theta + sum alpha*tau, with tau applied to the leading rows when the target grew (vocabulary)."""
    rows = min(t.shape[0] for t, _ in taus) if theta.dim() else None
    if rows is None or all(t.shape == theta.shape for t, _ in taus):
        return ops.stamp(theta, [t for t, _ in taus], [a for _, a in taus])
    out = theta.clone()
    ops.stamp(theta[:rows], [t[:rows] for t, _ in taus], [a for _, a in taus], out=out[:rows])
    return out


def unstamp(
    vector: str | Path, model: str | Path, out: str | Path, *, alpha: float = 1.0, **kwargs: object
) -> StampResult:
    """theta = theta' - alpha * tau (stamp with -alpha)."""
    return stamp([(vector, -alpha)], [model], out, **kwargs)  # type: ignore[arg-type]
