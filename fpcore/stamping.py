"""extract / stamp / unstamp over checkpoints on disk, streaming tensor by tensor.

All arithmetic goes through fpcore.ops (extract) or fpcore.rawops (stamp: the same kernels over raw
memory, so `fpcore stamp` never imports torch); all file work through fpcore.io. Outputs are atomic
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
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from fpcore import __version__, rawops
from fpcore import _stream as streaming
from fpcore._code import TensorCode, is_coded
from fpcore._stream import HashingWriteBehind, WriteBehind, streaming_threads
from fpcore.io import AtomicOutput, Checkpoint, CheckpointError, SafetensorsWriter, digest
from fpcore.io.atomic import TMP_PREFIX, fsync_dir
from fpcore.io.buffers import Buffer, memory_at
from fpcore.io.format import FORMAT_DTYPES
from fpcore.io.reader import INDEX
from fpcore.trace.key import TraceKey, check_licensee
from fpcore.vector import STORE_FORMATS, FingerprintVector, VectorMeta, architecture, is_embedding

Progress = Callable[[int], None]  # called with bytes processed


# extract refuses (unless forced) when |tuned - base| / |base| exceeds this. Fine-tunes move a model by
# a few percent to ~40% (issue #4's high-drift models; 65% for a briefly trained toy model in the
# tests); two independent models of the same architecture and scale differ by ~sqrt(2) = 141%.
UNRELATED_BASE_RATIO = 1.0


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
    model_digests: list[str] = field(default_factory=list)  # with digests=True (fpcore.io.digest), per model
    output_digests: list[str] = field(default_factory=list)


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
    force: bool = False,
    progress: Progress | None = None,
) -> ExtractResult:
    """Write the fingerprint vector tau = tuned - base (one .safetensors file at `out`).

    Both checkpoints must have the same tensor names and shapes. Non-float tensors, tensors left
    out by include/exclude globs or skip_embed, and all-zero deltas are not stored; the file lists
    them with the reason. The base's lineage digest and architecture go into the metadata.

    Two streaming passes, chunk by chunk from memory maps, without torch: the first hashes the base
    (lineage) and sums |tuned - base| per tensor (zero deltas, the unrelated-base check), so that
    nothing is written before every check has passed; the second computes tau (the stamp kernel
    with alpha = -1: fp32 math, one rounding to `dtype`) and writes it.

    Raises:
        CheckpointError naming the file and tensor (mismatched names or shapes, non-finite tau
        unless allow_nonfinite, unreadable files, a BASE that is not TUNED's base: |tuned - base|
        above UNRELATED_BASE_RATIO of |base| unless force); FileExistsError if `out` exists (overwrite=False);
        ValueError for an unknown dtype.
    """
    if dtype not in STORE_FORMATS:
        raise ValueError(f"extract: dtype must be one of {', '.join(STORE_FORMATS)}, got {dtype!r}")
    store = STORE_FORMATS[dtype]
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
    delta_sq = base_sq = 0.0  # |tuned - base|^2 and |base|^2 over the float tensors compared
    # pass 1: lineage digest of the base, shapes, and which deltas are all zero; the base is hashed
    # on a second thread while this one sums (hashlib releases the GIL)
    threads = streaming_threads()
    with threads, ThreadPoolExecutor(1, thread_name_prefix="fpcore-hash") as hasher:
        for name in bck.names():
            bi, ti = bck.info(name), tck.info(name)
            if bi.shape != ti.shape:
                raise CheckpointError(f"{tck.path}: tensor {name!r} has shape {ti.shape}, the base has {bi.shape}")
            if bi.format_dtype not in rawops.CODES:
                skipped[name] = f"not a float tensor ({bi.dtype_name})"
            elif ti.format_dtype not in rawops.CODES:
                raise CheckpointError(f"{tck.path}: tensor {name!r} is {ti.dtype_name}, the base's is {bi.dtype_name}")
            elif not _selected(name, include, exclude):
                skipped[name] = "excluded by --include/--exclude"
            elif skip_embed and is_embedding(name):
                skipped[name] = "embedding or output head (--skip-embed)"
            compare = name not in skipped
            digest, st = _digest_and_sums(bck, tck if compare else None, name, hasher)
            digests[name] = (list(bi.shape), bi.dtype_name, digest)
            if compare:
                # max |f32(t) - f32(b)| is 0 exactly when every fp32 delta is 0 (IEEE subtraction of
                # distinct values is never 0); a NaN/Inf delta makes the sums non-finite and is left
                # to the finiteness check of pass 2.
                finite = math.isfinite(st.l2sq) and math.isfinite(st.yy)
                if st.linf == 0 and finite:
                    skipped[name] = "all-zero delta"
                else:
                    keep.append(name)
                if finite:
                    delta_sq += st.l2sq
                    base_sq += st.yy
            if progress:
                progress(bi.nbytes)
    if not force and base_sq > 0 and math.sqrt(delta_sq / base_sq) > UNRELATED_BASE_RATIO:
        raise CheckpointError(
            f"{tck.path}: differs from {bck.path} by {100 * math.sqrt(delta_sq / base_sq):.0f}% of the base's norm; "
            f"a fine-tune moves a model by a few percent, so BASE does not look like TUNED's base "
            f"(pass --force to extract anyway)"
        )
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
        w = SafetensorsWriter(tmp, layout, meta.to_strings(), direct=True)
        writer = WriteBehind()
        try:
            with streaming_threads():
                for name in keep:
                    written += _extract_tensor(name, tck, bck, store, w, writer, allow_nonfinite)
                    if progress:
                        progress(bck.info(name).nbytes)
            writer.submit(w.close)
        except BaseException:
            writer.close(raise_error=False)
            w.abort()
            raise
        writer.close()
    return ExtractResult(Path(out), len(keep), skipped, dtype, meta.base_digest, written)


def _digest_and_sums(
    bck: Checkpoint, tck: Checkpoint | None, name: str, hasher: ThreadPoolExecutor
) -> tuple[str, rawops.PairSums]:
    """sha256 of the base tensor's bytes (on `hasher`) and, with `tck`, the pair sums of tuned
    against it, chunk by chunk."""
    bi = bck.info(name)
    h = hashlib.sha256()
    dot = xx = yy = l1 = l2sq = linf = 0.0
    step = streaming.STREAM_ELEMS * bi.itemsize
    b_addr = bck.address(name)
    ti = tck.info(name) if tck is not None else None
    t_addr = tck.address(name) if tck is not None else 0
    for off in range(0, bi.nbytes, step):
        nb = min(step, bi.nbytes - off)
        hashed = hasher.submit(h.update, memory_at(b_addr + off, nb))
        if tck is not None and ti is not None:
            e = nb // bi.itemsize
            toff = off // bi.itemsize * ti.itemsize
            s = rawops.pair_stats_raw((t_addr + toff, ti.format_dtype), (b_addr + off, bi.format_dtype), e)
            dot, xx, yy, l1, l2sq = dot + s.dot, xx + s.xx, yy + s.yy, l1 + s.l1, l2sq + s.l2sq
            linf = s.linf if (s.linf != s.linf or s.linf > linf) else linf  # NaN sticks
            tck.release_range(name, toff, e * ti.itemsize)
        hashed.result()
        bck.release_range(name, off, nb)
    return h.hexdigest(), rawops.PairSums(dot, xx, yy, l1, l2sq, linf, bi.numel)


def _extract_tensor(
    name: str,
    tck: Checkpoint,
    bck: Checkpoint,
    store: str,
    w: SafetensorsWriter,
    writer: WriteBehind,
    allow_nonfinite: bool,
) -> int:
    """tau = tuned - base for tensor `name`, chunk by chunk, into the writer; returns bytes written."""
    ti, bi = tck.info(name), bck.info(name)
    isz = FORMAT_DTYPES[store][0]
    t_addr, b_addr = tck.address(name), bck.address(name)
    for off in range(0, ti.numel, streaming.STREAM_ELEMS):
        e = min(streaming.STREAM_ELEMS, ti.numel - off)
        raw = writer.buffer(e * isz)
        tuned = (t_addr + off * ti.itemsize, ti.format_dtype)
        base = (b_addr + off * bi.itemsize, bi.format_dtype)
        rawops.stamp_raw((raw.addr, store), tuned, [base], [-1.0], e)
        tck.release_range(name, off * ti.itemsize, e * ti.itemsize)
        bck.release_range(name, off * bi.itemsize, e * bi.itemsize)
        if not allow_nonfinite and not rawops.all_finite_raw((raw.addr, store), e):
            raise CheckpointError(
                f"{tck.path}: tensor {name!r}: tau has non-finite values (pass --allow-nonfinite to keep them)"
            )
        writer.submit(partial(w.write_part, name, raw.view[: e * isz]), raw)
    return ti.numel * isz


# ---- stamping ----------------------------------------------------------------------------------


class _ModelOut:
    """One target model being written: a writer per shard that tau touches; other shards linked.

    In place (dest None): each touched shard is written to a hidden temporary beside it, and
    commit() renames the temporaries over the shards once every one is complete and on disk;
    discard() removes them. Nothing else in the folder is touched."""

    def __init__(
        self, ck: Checkpoint, dest: Path | None, names_in_order: list[str], metadata_extra: dict[str, str]
    ) -> None:
        self.ck = ck
        self.writers: dict[Path, SafetensorsWriter] = {}
        self.rest: dict[Path, list[str]] = {}
        self.pending: dict[Path, int] = {}  # touched tensors of each shard not yet fully written
        self.temps: list[tuple[Path, Path]] = []  # in place: (temporary, shard it replaces)
        try:
            self._open(dest, names_in_order, metadata_extra)
        except BaseException:
            self.discard()
            raise

    def _open(self, dest: Path | None, names_in_order: list[str], metadata_extra: dict[str, str]) -> None:
        ck = self.ck
        touched: dict[Path, list[str]] = {}
        for n in names_in_order:
            touched.setdefault(ck.info(n).file, []).append(n)
        single = ck.path.is_file()
        if dest is not None and not single:
            dest.mkdir(parents=True, exist_ok=True)
        for f in ck.files:
            if dest is None:
                target = f.with_name(TMP_PREFIX + f.name)
                if f in touched:
                    self.temps.append((target, f))
            else:
                target = dest if single else dest / f.name
            if f not in touched:
                if dest is not None:
                    _link_or_copy(f, target)
                continue
            first = touched[f]
            others = [n for n, info in ck.items() if info.file == f and n not in set(first)]
            layout = [(n, ck.info(n).format_dtype, ck.info(n).shape) for n in first + others]
            meta = dict(ck.metadata[f])
            meta.update(metadata_extra)
            self.writers[f] = SafetensorsWriter(target, layout, meta, direct=True)
            self.rest[f] = others
            self.pending[f] = len(first)
        if dest is not None and not single:
            if ck.index_file is not None:
                shutil.copy2(ck.index_file, dest / INDEX)
            for extra in ck.other_files():
                shutil.copy2(extra, dest / extra.name)

    def commit(self) -> None:
        """In place: fsync every temporary, then rename each over its shard (a shard is always whole)."""
        for tmp, _ in self.temps:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        for tmp, shard in self.temps:
            os.replace(tmp, shard)
        for folder in {shard.parent for _, shard in self.temps}:
            fsync_dir(folder)

    def discard(self) -> None:
        for w in self.writers.values():
            w.abort()
        for tmp, _ in self.temps:
            tmp.unlink(missing_ok=True)

    def writer(self, name: str) -> SafetensorsWriter:
        return self.writers[self.ck.info(name).file]

    def copy(self, name: str, offset: int = 0) -> None:
        """Tensor `name`'s bytes from `offset` on, unchanged, file to file."""
        info = self.ck.info(name)
        self.writer(name).copy_part(name, self.ck.fd(info.file), info.start + offset, info.nbytes - offset)

    def _close_shard(self, f: Path) -> None:
        for n in self.rest[f]:
            self.copy(n)
        self.writers[f].close()

    def done(self, name: str) -> None:
        """Tensor `name` is fully written: once a shard has all its stamped tensors, its untouched
        ones are copied and it is closed, which frees its write blocks before the next shard's."""
        f = self.ck.info(name).file
        self.pending[f] -= 1
        if self.pending[f] == 0:
            self._close_shard(f)

    def finish(self) -> None:
        for f in self.writers:
            if self.pending[f] > 0:
                self._close_shard(f)


def _link_or_copy(src: Path, dst: Path) -> None:
    """An unchanged shard: hard-linked when the file system allows (no bytes copied), else copied."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def stamp(
    vectors: Sequence[tuple[str | Path, float]],
    models: Sequence[str | Path],
    out: str | Path | None,
    *,
    overwrite: bool = False,
    in_place: bool = False,
    skip_mismatched: bool = False,
    allow_nonfinite: bool = False,
    progress: Progress | None = None,
    trace_key: TraceKey | None = None,
    licensees: Sequence[str] | None = None,
    outputs: Sequence[str | Path] | None = None,
    metadata: Sequence[dict[str, str]] | None = None,
    digests: bool = False,
) -> StampResult:
    """Stamp theta' = theta + sum_k alpha_k * tau_k into every model; each tau tensor is read once
    and applied to every model's matching tensor before the next is read.

    `outputs` (instead of `out`): one destination per model, each appearing atomically on its own
    (same form as its input). `metadata`: per model, extra safetensors metadata for its written shards.
    `digests`: also the content digest (fpcore.io.digest) of every model and every output, hashed on a
    thread of its own from the bytes the stamp streams anyway (not with in_place).

    With a trace key, model i also gets licensee i's code (one id per model, in order), moved into
    every rounded output element of its coded tensors (float tensors of >= 2 dimensions; see
    fpcore.trace) inside the same kernel call; tensors tau does not cover are coded on their own.
    `vectors` may then be empty (a code alone).

    One model: `out` is the stamped model (same form as the input: file or folder, same shard
    layout, index and non-weight files). Several: ``out/<model name>/`` each. With in_place (and
    out None) each model is changed where it is: every shard tau touches is rewritten to a
    temporary beside it and, once all are complete and fsynced, renamed over it (needs free disk
    for those shards; an error or a kill before the renames leaves the model as it was). Lineage: every model
    must share the vectors' base architecture (vocabulary growth of embeddings allowed: tau goes to
    the shared rows); other shape mismatches raise unless skip_mismatched.

    Raises:
        CheckpointError naming the file and tensor; FileExistsError when `out` exists and not overwrite.
    """
    if not vectors and trace_key is None:
        raise ValueError("stamp: give at least one vector (or a trace key and licensees)")
    if not models:
        raise ValueError("stamp: give at least one model")
    if (trace_key is None) != (licensees is None):
        raise ValueError("stamp: a trace key and licensees go together")
    if licensees is not None:
        licensees = list(licensees)
        if len(licensees) != len(models):
            raise ValueError(
                f"stamp: {len(licensees)} licensee ids for {len(models)} models; give one per model, in order"
            )
        for k, lic in enumerate(licensees):
            check_licensee(lic, f"stamp: licensee {k + 1}")
    if in_place + (out is not None) + (outputs is not None) != 1:
        raise ValueError("stamp: give one of an output path, outputs (one per model) or in_place=True")
    if outputs is not None and len(outputs) != len(models):
        raise ValueError(f"stamp: {len(outputs)} outputs for {len(models)} models; give one per model")
    if digests and in_place:
        raise ValueError("stamp: digests are for outputs written beside the models, not in place")
    if metadata is not None and len(metadata) != len(models):
        raise ValueError(f"stamp: {len(metadata)} metadata dicts for {len(models)} models; give one per model")
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
            if not ck.info(n).is_float:
                raise CheckpointError(f"{ck.path}: tensor {n!r} is {ck.info(n).dtype_name}, not a float tensor")
            if ck.info(n).format_dtype not in rawops.CODES:
                raise CheckpointError(
                    f"{ck.path}: tensor {n!r} is {ck.info(n).dtype_name}; stamp takes float32, bfloat16 or float16"
                )
            keep.append(n)
        plan[i] = keep
    # the licensee code: model i's coded tensors tau does not stamp are coded on their own
    code_only: dict[int, list[str]] = {i: [] for i in range(len(cks))}
    if trace_key is not None:
        for i, ck in enumerate(cks):
            code_only[i] = [n for n, info in ck.items() if is_coded(info) and n not in plan[i]]
            plan[i] = plan[i] + code_only[i]
        order += [n for i in range(len(cks)) for n in code_only[i] if n not in order]
        order = list(dict.fromkeys(order))
    stamped_meta = {
        "fpcore_stamped": json.dumps([{"base_digest": v.meta.base_digest, "alpha": a} for v, a in vecs]),
    }
    metas = [{**stamped_meta, **(metadata[i] if metadata is not None else {})} for i in range(len(cks))]
    codes = _Codes(trace_key, licensees, code_only)
    hashes = _Hashes(len(cks)) if digests else None
    run = partial(_stream, order, vecs, cks, plan, codes, allow_nonfinite, progress, hashes)
    if in_place:
        outs: list[_ModelOut] = []
        try:
            for i, ck in enumerate(cks):
                outs.append(_ModelOut(ck, None, plan[i], metas[i]))
            stamped, vec_bytes = run(outs)
            for o in outs:
                o.commit()
        except BaseException:
            for o in outs:
                o.discard()
            raise
        return StampResult([ck.path for ck in cks], stamped, notes, vec_bytes)
    if outputs is not None:
        dests_each = [Path(o) for o in outputs]
        with ExitStack() as stack:  # every output whole, or (on an error) none of them
            tmps = [
                stack.enter_context(AtomicOutput(d, overwrite=overwrite, is_file=ck.path.is_file()))
                for d, ck in zip(dests_each, cks, strict=True)
            ]
            outs = []
            try:
                for i, (ck, t) in enumerate(zip(cks, tmps, strict=True)):
                    outs.append(_ModelOut(ck, t, plan[i], metas[i]))
                stamped, vec_bytes = run(outs)
                res = StampResult(dests_each, stamped, notes, vec_bytes)
                if hashes is not None:
                    res.model_digests, res.output_digests = hashes.digests(cks, tmps)
            except BaseException:
                for o in outs:
                    o.discard()
                raise
        return res
    outdir = Path(out)  # type: ignore[arg-type]
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
        outs = [_ModelOut(ck, d, plan[i], metas[i]) for i, (ck, d) in enumerate(zip(cks, dests, strict=True))]
        try:
            stamped, vec_bytes = run(outs)
            mdig, odig = hashes.digests(cks, dests) if hashes is not None else ([], [])
        except BaseException:
            for o in outs:
                o.discard()  # closes the files; AtomicOutput removes the temporary folder
            raise
    outputs = [outdir] if len(cks) == 1 else [outdir / d.name for d in dests]
    return StampResult(outputs, stamped, notes, vec_bytes, mdig, odig)


def _stream(
    order: list[str],
    vecs: list[tuple[FingerprintVector, float]],
    cks: list[Checkpoint],
    plan: dict[int, list[str]],
    codes: _Codes,
    allow_nonfinite: bool,
    progress: Progress | None,
    hashes: _Hashes | None,
    outs: list[_ModelOut],
) -> tuple[int, int]:
    """The streaming pass over every tensor in `order`, then the untouched tensors of touched
    shards; returns (tensors stamped, vector bytes read). All output work runs on the writer thread
    (with hashes, after the hasher thread has hashed what it reads and writes)."""
    stamped = vec_bytes = 0
    writer = WriteBehind() if hashes is None else HashingWriteBehind()
    try:
        with streaming_threads():
            for name in order:
                vec_bytes += _stamp_tensor(
                    name, vecs, cks, plan, codes, outs, writer, allow_nonfinite, progress, hashes
                )
                stamped += sum(name in plan[i] for i in range(len(cks)))
        for o in outs:
            writer.submit(o.finish)
    except BaseException:
        writer.close(raise_error=False)  # stop writing; the caller removes the temporary output
        raise
    writer.close()  # waits for the writes; raises the first write error
    return stamped, vec_bytes


class _Hashes:
    """Per model, blake3 of each tensor's bytes as read (model) and as written (output), fed on the
    hasher thread in stream order; tensors the stream does not pass are read at the end."""

    def __init__(self, n: int) -> None:
        self.model: list[dict[str, Any]] = [{} for _ in range(n)]
        self.out: list[dict[str, Any]] = [{} for _ in range(n)]

    def _h(self, d: dict[str, Any], name: str) -> Any:
        h = d.get(name)
        if h is None:
            h = d[name] = digest.hasher()
        return h

    def chunk(
        self, i: int, name: str, read: memoryview, written: memoryview | None, release: Callable[[], None]
    ) -> Callable[[], None]:
        """The hasher's work for one chunk of model i's tensor `name`: the bytes read, the bytes written
        (None: written unchanged, the same bytes), then the read pages released."""
        hm, ho = self._h(self.model[i], name), self._h(self.out[i], name)

        def work() -> None:
            hm.update(read)
            ho.update(read if written is None else written)
            release()

        return work

    def digests(self, cks: list[Checkpoint], dests: Sequence[Path]) -> tuple[list[str], list[str]]:
        models, outputs = [], []
        for i, (ck, dest) in enumerate(zip(cks, dests, strict=True)):
            mdig, mh = digest.finish(ck, {n: h.hexdigest() for n, h in self.model[i].items()})
            models.append(mdig)
            out_ck = Checkpoint(dest)
            try:
                outputs.append(digest.finish(out_ck, {**mh, **{n: h.hexdigest() for n, h in self.out[i].items()}})[0])
            finally:
                out_ck.close()
        return models, outputs


@dataclass
class _Codes:
    """Which model gets which licensee code (none without a trace key)."""

    key: TraceKey | None
    licensees: list[str] | None
    code_only: dict[int, list[str]]

    def of(self, i: int, ck: Checkpoint, name: str) -> TensorCode | None:
        if self.key is None or self.licensees is None or not is_coded(ck.info(name)):
            return None
        return self.key.code(self.licensees[i], name)


def _code_rows(
    i: int,
    name: str,
    start: int,
    ck: Checkpoint,
    out: _ModelOut,
    code: TensorCode,
    writer: WriteBehind,
    progress: Progress | None,
    hashes: _Hashes | None,
) -> None:
    """Elements start.. of model i's tensor `name` with the code alone (no tau there), to the writer."""
    info = ck.info(name)
    addr = ck.address(name)
    for off in range(start, info.numel, streaming.STREAM_ELEMS):
        e = min(streaming.STREAM_ELEMS, info.numel - off)
        nbytes = e * info.itemsize
        raw = writer.buffer(nbytes)
        theta = addr + off * info.itemsize
        rawops.stamp_raw((raw.addr, info.format_dtype), (theta, info.format_dtype), [], [], e, code.at(off))
        _submit_chunk(writer, hashes, i, name, ck, off * info.itemsize, theta, raw, nbytes, out)
        if progress:
            progress(nbytes)


def _submit_chunk(
    writer: WriteBehind,
    hashes: _Hashes | None,
    i: int,
    name: str,
    ck: Checkpoint,
    offset: int,
    theta: int,
    raw: Buffer,
    nbytes: int,
    out: _ModelOut,
) -> None:
    """Bytes [offset, offset + nbytes) of model i's tensor `name` are computed in `raw`: write them (and,
    with hashes, hash the bytes read at address `theta` and those written, first); release the read pages."""
    write = partial(out.writer(name).write_part, name, raw.view[:nbytes])
    release = partial(ck.release_range, name, offset, nbytes)
    if hashes is None:
        release()
        writer.submit(write, raw)
    else:
        writer.submit(write, raw, pre=hashes.chunk(i, name, memory_at(theta, nbytes), raw.view[:nbytes], release))


def _stamp_tensor(
    name: str,
    vecs: list[tuple[FingerprintVector, float]],
    cks: list[Checkpoint],
    plan: dict[int, list[str]],
    codes: _Codes,
    outs: list[_ModelOut],
    writer: WriteBehind,
    allow_nonfinite: bool,
    progress: Progress | None,
    hashes: _Hashes | None = None,
) -> int:
    """Stream tensor `name` through every model that takes it, chunk by chunk: each tau chunk is read
    (and checked) once and applied to every model's matching chunk (with that model's licensee code,
    if any); outputs go to the writer thread. Models that take only the code here get it alone.
    Returns the vector bytes read."""
    targets = [i for i in range(len(cks)) if name in plan[i] and name not in codes.code_only[i]]
    taus = [(v, a) for v, a in vecs if name in v.names()] if targets else []
    alphas = [a for _, a in taus]
    # tau covers the leading n_tau elements: all of them, or the shared rows after vocabulary growth
    n_tau = min(v.ckpt.info(name).numel for v, _ in taus) if taus else 0
    # where each input's tensor starts in its memory map, and its info (once per tensor)
    tau_in = [(v.ckpt, v.ckpt.address(name), v.ckpt.info(name)) for v, _ in taus]
    theta_in = {i: (cks[i], cks[i].address(name), cks[i].info(name)) for i in targets}
    code_of = {i: codes.of(i, cks[i], name) for i in targets}
    read = 0
    for off in range(0, n_tau, streaming.STREAM_ELEMS):
        e = min(streaming.STREAM_ELEMS, n_tau - off)
        regions = []
        for ck, addr, info in tau_in:
            region = (addr + off * info.itemsize, info.format_dtype)
            read += e * info.itemsize
            if not allow_nonfinite and not rawops.all_finite_raw(region, e):
                raise CheckpointError(
                    f"{ck.path}: tensor {name!r} has non-finite values (pass --allow-nonfinite to use it)"
                )
            regions.append(region)
        for i, (ck, addr, info) in theta_in.items():
            nbytes = e * info.itemsize
            raw = writer.buffer(nbytes)
            theta = addr + off * info.itemsize
            code = code_of[i]
            rawops.stamp_raw(
                (raw.addr, info.format_dtype), (theta, info.format_dtype), regions, alphas, e, code and code.at(off)
            )
            _submit_chunk(writer, hashes, i, name, ck, off * info.itemsize, theta, raw, nbytes, outs[i])
            if progress:
                progress(nbytes)
        for ck, _, info in tau_in:
            ck.release_range(name, off * info.itemsize, e * info.itemsize)
    for i in targets:
        info = cks[i].info(name)
        code = code_of[i]
        if code is not None and info.numel > n_tau:  # rows beyond tau (vocabulary growth): the code alone
            _code_rows(i, name, n_tau, cks[i], outs[i], code, writer, progress, hashes)
        elif info.numel > n_tau or info.numel == 0:  # rows beyond tau (vocabulary growth), unchanged
            start, rest = n_tau * info.itemsize, (info.numel - n_tau) * info.itemsize
            copy = partial(outs[i].copy, name, start)
            if hashes is None:
                writer.submit(copy)
            else:
                src = memory_at(theta_in[i][1] + start, rest)
                release = partial(cks[i].release_range, name, start, rest)
                writer.submit(copy, pre=hashes.chunk(i, name, src, None, release))
            if progress:
                progress((info.numel - n_tau) * info.itemsize)
        writer.submit(partial(outs[i].done, name))
    for i in range(len(cks)):
        if name in codes.code_only[i]:
            code = codes.of(i, cks[i], name)
            if code is not None:  # always: code_only holds coded tensors only
                _code_rows(i, name, 0, cks[i], outs[i], code, writer, progress, hashes)
            writer.submit(partial(outs[i].done, name))
    return read


def _fits(target: tuple[int, ...], tau: tuple[int, ...]) -> bool:
    return target == tau or (len(target) == len(tau) >= 1 and target[1:] == tau[1:] and target[0] > tau[0])


def unstamp(
    vector: str | Path, model: str | Path, out: str | Path, *, alpha: float = 1.0, **kwargs: object
) -> StampResult:
    """theta = theta' - alpha * tau (stamp with -alpha)."""
    return stamp([(vector, -alpha)], [model], out, **kwargs)  # type: ignore[arg-type]  # type: ignore[arg-type]
