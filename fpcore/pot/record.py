"""The proof-of-training record: a folder with record.json, batches.npy and ckpt/step_<n>.safetensors.

record.json holds the header (format version, model builder and arguments, initialiser and seed,
optimiser and schedule, the dataset's identity, batch size, checkpoint interval k, the per-segment
augmentation seeds, batches.npy's sha256) and a list of checkpoints. Each checkpoint entry carries
its step, file, size, sha256 and `prev`: the sha256 of the previous entry (for the first entry, of the
header), so the entries form a hash chain; `head` is the hash of the last entry. Publishing `head`
commits to the whole record.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load

FORMAT = "fpcore.pot-record"
VERSION = 1
RAW_CACHE_MAX = 16 << 20  # checkpoint files up to this size are read once and kept for later checks
HEADER_KEYS = (
    "model",
    "init",
    "optimizer",
    "schedule",
    "dataset",
    "batch_size",
    "every",
    "steps",
    "steps_per_epoch",
    "augment",
    "segment_seeds",
    "batches",
)


class RecordError(ValueError):
    """A damaged or malformed record; the message names the record and the entry."""


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


UPDATE_METRICS = ("l1", "l2", "linf", "cosine")  # a segment's committed update sizes (record.update_sizes)
STEP_DIGEST = {"algorithm": "blake3-16/params", "bytes_per_step": 16}


def _blake3() -> Any:
    try:
        import blake3
    except ImportError as exc:
        raise ValueError(f"proof-of-training records need blake3 (pip install 'fpcore[pot]'): {exc}") from None
    return blake3.blake3()


def _bytes_of(t: torch.Tensor) -> Any:
    """A tensor's raw bytes as a uint8 array (a view of its memory when it is a contiguous CPU tensor;
    b"" when empty): what the step digests and checkpoint files are made of."""
    if not t.numel():
        return b""
    return t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()


def params_digest(model: torch.nn.Module) -> bytes:
    """16 bytes naming the model's parameters after a step: BLAKE3 (several GB/s) over each parameter's
    name and raw bytes, in sorted name order (what a per-step record keeps; replay compares it bit for
    bit). :class:`ParamsDigest` gives the same bytes for a model digested after every step."""
    h = _blake3()
    for n, p in sorted(model.named_parameters(), key=lambda x: x[0]):
        h.update(n.encode() + b"\0")
        h.update(_bytes_of(p))
    return h.digest(length=16)


class ParamsDigest:
    """params_digest(model) for a model digested after every step (the Recorder, replay): the sorted
    names and byte views of the parameters' own memory (optimizers update it in place) are made once,
    so a step costs the hash and little else (TinyLM: 0.30 ms a step before). Any change is seen
    before hashing: another set of parameters (a module's parameter replaced), a parameter whose
    memory moved or changed size (``p.data = ...``), or one off the CPU or not contiguous (those take
    params_digest's path)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self._params: list[torch.nn.Parameter] = []  # model.parameters() when the plan was made
        self._plan: list[tuple[torch.nn.Parameter, int, int, bytes, Any]] | None = None  # sorted by name

    def _build(self, params: list[torch.nn.Parameter]) -> list[tuple[torch.nn.Parameter, int, int, bytes, Any]] | None:
        plan = []
        for n, p in sorted(self.model.named_parameters(), key=lambda x: x[0]):
            t = p.detach()
            if t.device.type != "cpu" or not t.is_contiguous():
                return None
            plan.append((p, t.data_ptr(), t.numel(), n.encode() + b"\0", _bytes_of(t)))
        self._params = params
        return plan

    def _stale(self, params: list[torch.nn.Parameter]) -> bool:
        plan = self._plan
        return (
            plan is None
            or len(params) != len(self._params)
            or any(a is not b for a, b in zip(params, self._params, strict=True))
            or any(p.data_ptr() != ptr or p.numel() != numel for p, ptr, numel, _, _ in plan)
        )

    def plan(self) -> list[tuple[torch.nn.Parameter, int, int, bytes, Any]] | None:
        """(parameter, data_ptr, numel, name + NUL, byte view) in the digest's order, rebuilt on any change;
        None when some parameter takes params_digest's path."""
        params = list(self.model.parameters())
        if self._stale(params):
            self._plan = self._build(params)
        return self._plan

    def __call__(self) -> bytes:
        plan = self.plan()
        if plan is None:
            return params_digest(self.model)
        h = _blake3()
        for _, _, _, name, view in plan:
            h.update(name)
            h.update(view)
        return h.digest(length=16)


def _digests16(bufs: list[np.ndarray]) -> list[bytes]:
    out = []
    for buf in bufs:
        h = _blake3()
        h.update(buf)
        out.append(h.digest(length=16))
    return out


class StepDigests:
    """The Recorder's digest of the parameters after every step (ParamsDigest's bytes), hashed on a helper
    thread. At each call the training thread copies the parameters, each after its name as the digest
    hashes them, into one buffer (a memcpy: tiny-lm's 0.53 MB); every BATCH calls a helper hashes the
    buffers, one call each, which releases the GIL. Handing over a batch, not every step, keeps the
    helper's GIL handoffs with the training thread rare. A model ParamsDigest cannot plan for is
    digested on the training thread. Call after each step; results() gives the digests in step order."""

    BATCH = 8  # buffers handed to the helper at once
    IN_FLIGHT = 8  # batches being hashed at most; beyond, the training thread waits for the oldest

    def __init__(self, model: torch.nn.Module) -> None:
        self._sync = ParamsDigest(model)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fpcore-pot-digest")
        self._free: list[tuple[tuple, np.ndarray, list[tuple[int, int]]]] = []  # hashed: (key, buffer, spans)
        self._out: list[Any] = []  # per call: its digest, or (its batch's future, index in the batch)
        self._batch: list[tuple[tuple, np.ndarray, list[tuple[int, int]]]] = []
        self._batch_at: list[int] = []  # where the batch's calls are in _out
        self._inflight: deque[Future] = deque()

    def _slot(self, plan: list) -> tuple[tuple, np.ndarray, list[tuple[int, int]]]:
        key = tuple((name, len(view)) for _, _, _, name, view in plan)
        while self._free:
            slot = self._free.pop()
            if slot[0] == key:
                return slot
        buf = np.empty(sum(len(n) + size for n, size in key), dtype=np.uint8)
        spans, off = [], 0
        for n, size in key:
            buf[off : off + len(n)] = np.frombuffer(n, dtype=np.uint8)
            off += len(n)
            spans.append((off, size))
            off += size
        return key, buf, spans

    def __call__(self) -> None:
        plan = self._sync.plan()
        if plan is None:
            self._out.append(self._sync())
            return
        slot = self._slot(plan)
        buf = slot[1]
        for (off, size), (_, _, _, _, view) in zip(slot[2], plan, strict=True):
            if size:
                buf[off : off + size] = view
        self._batch.append(slot)
        self._batch_at.append(len(self._out))
        self._out.append(None)  # set when its batch is handed over
        if len(self._batch) >= self.BATCH:
            self._hand_over()

    def _hand_over(self) -> None:
        if not self._batch:
            return
        if len(self._inflight) >= self.IN_FLIGHT:
            self._inflight.popleft().result()
        slots, at, self._batch, self._batch_at = self._batch, self._batch_at, [], []
        fut = self._pool.submit(_digests16, [s[1] for s in slots])
        fut.add_done_callback(lambda _, ss=slots: self._free.extend(ss))  # hashed: the buffers are free
        self._inflight.append(fut)
        for k, i in enumerate(at):
            self._out[i] = (fut, k)

    def results(self) -> list[bytes]:
        """Every call's 16-byte digest, in order (waits for the helper); the helper thread ends."""
        try:
            self._hand_over()
            return [e if isinstance(e, bytes) else e[0].result()[e[1]] for e in self._out]
        finally:
            self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._free.clear()
        self._batch, self._batch_at = [], []


def header_of(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in ("checkpoints", "head")}


RUN_KEYS = ("steps", "segment_seeds", "batches", "step_digests", "update_sizes", "wall_seconds")


def recipe_of(doc: dict) -> dict:
    """The header fields known before training (what make_header gives, and the task): a record's recipe,
    without what its run produced."""
    return {k: v for k, v in header_of(doc).items() if k not in RUN_KEYS}


def seal(doc: dict, entries: list[dict]) -> dict:
    """Chain `entries` (each {step, file, bytes, sha256}) onto the header; returns the full record."""
    prev = sha256_bytes(canonical(header_of(doc)))
    chained = []
    for e in entries:
        e = {**{k: e[k] for k in ("step", "file", "bytes", "sha256")}, "prev": prev}
        chained.append(e)
        prev = sha256_bytes(canonical(e))
    return {**header_of(doc), "checkpoints": chained, "head": prev}


def make_header(
    *, model_spec: dict, init: dict, optimizer: dict, dataset, batch_size: int, every: int, aug_std: float
) -> dict:
    """The record's header fields known before training (the Recorder's and the forgers')."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": model_spec,
        "init": init,
        "optimizer": optimizer,
        "schedule": {"name": "constant"},
        "dataset": {"sha256": dataset.sha256, "size": len(dataset), "source": dataset.source},
        "batch_size": int(batch_size),
        "every": int(every),
        "steps_per_epoch": len(dataset) // int(batch_size),
        "augment": {"name": "gaussian_noise", "std": float(aug_std)},
    }


def npy_bytes(arr: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=False)
    return b.getvalue()


def finish_record(
    tmp: Path,
    header: dict,
    entries: list[dict],
    batches: np.ndarray,
    seeds: list[int],
    step_digests: bytes | None = None,
    **extra,
) -> dict:
    """Write batches.npy (and step_digests.bin: the parameters' digest after every step) and record.json
    (chain sealed) into the record's temporary folder `tmp`."""
    buf = npy_bytes(np.asarray(batches, dtype=np.int64))
    (tmp / "batches.npy").write_bytes(buf)
    if step_digests is not None:
        if len(step_digests) != STEP_DIGEST["bytes_per_step"] * int(batches.shape[0]):
            raise ValueError(f"finish_record: {len(step_digests)} bytes of step digests for {batches.shape[0]} steps")
        (tmp / "step_digests.bin").write_bytes(step_digests)
        extra["step_digests"] = {**STEP_DIGEST, "file": "step_digests.bin", "sha256": sha256_bytes(step_digests)}
    doc = {
        **header,
        "steps": int(batches.shape[0]),
        "segment_seeds": [int(s) for s in seeds],
        "batches": {"file": "batches.npy", "sha256": sha256_bytes(buf), "shape": list(batches.shape)},
        **extra,
    }
    doc = seal(doc, entries)
    (tmp / "record.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def _packed_data(tensors: dict[str, torch.Tensor], names: list[str]) -> Any:
    """The data section of `tensors` as one array when they are still a PackedState's views of its
    buffer, in `names` order and back to back (a dict edited since, e.g. by an attack, is not); else None."""
    buf = getattr(tensors, "buffer", None)
    if buf is None:
        return None
    pos = buf.data_ptr()
    for n in names:
        t = tensors[n]
        nbytes = t.numel() * t.element_size()
        if nbytes and (t.device.type != "cpu" or not t.is_contiguous() or t.data_ptr() != pos):
            return None
        pos += nbytes
    if pos != buf.data_ptr() + buf.numel():
        return None
    return buf.numpy()


def write_checkpoint(tmp: Path, step: int, tensors: dict[str, torch.Tensor], *, fsync: bool = False) -> dict:
    """ckpt/step_<n>.safetensors in the record's temporary folder; its chain entry (before sealing).
    With `fsync` the file is flushed to disk now (the Recorder does this on its writer threads, so the
    final rename finds every checkpoint already durable).

    The tensors (sorted by name, back to back) go from their own memory to the file and to SHA-256,
    with the GIL released for every large piece: on the Recorder's writer threads the training
    thread keeps the GIL (serialising to bytes first held it for each whole checkpoint, ~14 % of a
    tiny-lm step's time)."""
    from fpcore.io.writer import safetensors_prefix

    rel = f"ckpt/step_{step}.safetensors"
    names = sorted(tensors)
    _, prefix = safetensors_prefix(
        tmp / rel,
        [(n, tensors[n].dtype, tuple(tensors[n].shape)) for n in names],
        {"fpcore.pot-checkpoint.step": str(step)},
    )
    packed = _packed_data(tensors, names)
    pieces: list[Any] = [prefix]
    if packed is not None:
        pieces.append(packed)
    else:
        pieces += [_bytes_of(tensors[n]) for n in names if tensors[n].numel()]
    h = hashlib.sha256()
    total = 0
    with open(tmp / rel, "wb", buffering=0) as f:
        for piece in pieces:
            h.update(piece)
            view = memoryview(piece).cast("B")
            total += len(view)
            while view:
                view = view[f.write(view) :]
        if fsync:
            os.fsync(f.fileno())
    return {"step": int(step), "file": rel, "bytes": total, "sha256": h.hexdigest()}


def write_record(
    folder: str | Path,
    header: dict,
    checkpoints: list[tuple[int, dict[str, torch.Tensor]]],
    batches: np.ndarray,
    seeds: list[int],
    *,
    overwrite: bool = False,
) -> Path:
    """A whole record from checkpoints in memory, written atomically (the attack suite forges with this)."""
    from fpcore.io import AtomicOutput

    with AtomicOutput(folder, overwrite=overwrite) as tmp:
        (tmp / "ckpt").mkdir()
        entries = [write_checkpoint(tmp, step, t) for step, t in checkpoints]
        finish_record(tmp, header, entries, batches, seeds)
    return Path(folder)


# ---------------------------------------------------------------------------------------------- checkpoints


class PackedState(dict):
    """A checkpoint's tensors (name -> tensor) that are views, in sorted-name order and back to back, of
    one uint8 `buffer`: the data section of its file, which write_checkpoint then writes and hashes
    in one piece (each piece taken or given back is a GIL handoff with the training thread). `layout`:
    (name, dtype, shape) of each tensor in that order (checkpoint_tensors refills a state of the same
    layout in place)."""

    buffer: torch.Tensor
    layout: tuple


def _state_sources(model: torch.nn.Module, opt: torch.optim.Optimizer | None) -> dict[str, torch.Tensor]:
    src = {f"param.{n}": p for n, p in model.named_parameters()}
    src |= {f"buffer.{n}": b for n, b in model.named_buffers()}
    if opt is not None:
        names = {id(p): n for n, p in model.named_parameters()}
        for p, st in opt.state.items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):  # moments, momentum buffers, and AdamW's step counter
                    src[f"optim.{names[id(p)]}.{k}"] = v
    return src


def checkpoint_tensors(
    model: torch.nn.Module, opt: torch.optim.Optimizer | None, *, reuse: PackedState | None = None
) -> PackedState:
    """What replay needs at a checkpoint: param.<n>, buffer.<n>, optim.<n>.<state> (detached CPU copies,
    packed into one buffer: PackedState). `reuse`: a PackedState nothing reads any more (the Recorder's,
    once written); when its layout is this state's it is refilled and returned (fresh memory costs a page
    fault per 4 KB: a 1.6 MB tiny-lm state took 1.7 ms to copy into new memory, 0.2 ms into reused)."""
    src = _state_sources(model, opt)
    order = sorted(src)
    layout = tuple((n, src[n].dtype, tuple(src[n].shape)) for n in order)
    if reuse is not None and reuse.layout == layout:
        for n in order:
            reuse[n].copy_(src[n].detach())
        return reuse
    total = sum(src[n].numel() * src[n].element_size() for n in order)
    buf = torch.empty(total, dtype=torch.uint8)
    out = PackedState()
    off = 0
    for n in order:
        t = src[n].detach()
        nbytes = t.numel() * t.element_size()
        view = buf[off : off + nbytes].view(t.dtype).view(t.shape) if nbytes else torch.empty(t.shape, dtype=t.dtype)
        view.copy_(t)
        out[n] = view
        off += nbytes
    out.buffer = buf
    out.layout = layout
    return out


def load_state(model: torch.nn.Module, opt: torch.optim.Optimizer | None, tensors: dict[str, torch.Tensor]) -> None:
    """Put a checkpoint's tensors into `model` (and `opt`'s state), casting to the model's dtype."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(tensors[f"param.{n}"])
        for n, b in model.named_buffers():
            b.copy_(tensors[f"buffer.{n}"])
    if opt is not None:
        params = dict(model.named_parameters())
        for key, t in tensors.items():
            if key.startswith("optim."):
                name, state = key[len("optim.") :].rsplit(".", 1)
                p = params[name]
                # per-element state takes the model's dtype; counters (AdamW's step) keep their own
                opt.state[p][state] = t.to(p.dtype).clone() if t.numel() == p.numel() else t.clone()


def params_of(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tensors.items() if k.startswith("param.")}


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class Record:
    """A record folder opened for verification: the parsed record.json, read-only."""

    path: Path
    doc: dict
    store: Path | None = None  # where checkpoints not in the record folder are (the prover's store)
    _cache: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _raw: dict[int, bytes] = field(default_factory=dict, repr=False)

    @property
    def entries(self) -> list[dict]:
        return self.doc["checkpoints"]

    @property
    def steps(self) -> list[int]:
        return [int(e["step"]) for e in self.entries]

    def entry_name(self, i: int) -> str:
        return f"{self.path}: checkpoint entry {i} ({self.entries[i].get('file')})"

    def raw(self, i: int) -> bytes:
        """Checkpoint i's file content, read once (kept for the checks that follow when it is small)."""
        if i in self._raw:
            return self._raw[i]
        f = self.checkpoint_file(i)
        try:
            raw = f.read_bytes()
        except OSError as exc:
            raise RecordError(f"{self.entry_name(i)}: cannot read: {exc.strerror or exc}") from None
        e = self.entries[i]
        if f != self.path / e["file"]:  # from the prover's store: only the sealed record vouches for it
            if len(raw) != int(e["bytes"]) or hashlib.sha256(raw).hexdigest() != e["sha256"]:
                raise RecordError(
                    f"{self.entry_name(i)}: the store's file {f} is not the checkpoint the record sealed "
                    "(size or sha256 differs)"
                )
        if len(raw) <= RAW_CACHE_MAX:
            self._raw[i] = raw
        return raw

    def checkpoint_file(self, i: int) -> Path:
        """Checkpoint i's file: in the record folder, else (a light record) in the store."""
        f = self.path / self.entries[i]["file"]
        if not f.exists() and self.store is not None:
            return self.store / self.entries[i]["file"]
        return f

    def checkpoint(self, i: int) -> dict[str, torch.Tensor]:
        """Checkpoint i's tensors; RecordError naming the entry when the file is missing or unreadable."""
        if i not in self._cache:
            raw = self.raw(i)
            try:
                self._cache[i] = st_load(raw)
            except Exception as exc:  # safetensors raises its own error types for truncated/corrupt files
                raise RecordError(f"{self.entry_name(i)}: not a readable safetensors file ({exc})") from None
        return self._cache[i]

    def flat_params(self, i: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Checkpoint i's parameters as one flat float32 vector, sorted by name. When the checkpoint is not
        parsed yet and its file stores the parameters as adjacent F32 tensors (as the Recorder writes them),
        the vector is cut straight out of the file's bytes; otherwise it is built from checkpoint(i).
        `out`: a float32 vector the file's bytes may be read into (when its size is theirs), instead of
        new memory; the result is not always `out`."""
        if i not in self._cache:
            if i not in self._raw and self.checkpoint_file(i) == self.path / self.entries[i]["file"]:
                flat = _read_adjacent_f32(self.checkpoint_file(i), "param.", out)  # the parameters' bytes alone
            else:  # read (or already read) whole: a store's file is hashed against the sealed record first
                flat = _adjacent_f32(memoryview(self.raw(i)), "param.")
            if flat is not None:
                return flat
        ck = self.checkpoint(i)
        return torch.cat([ck[k].float().flatten() for k in sorted(ck) if k.startswith("param.")])

    def step_digests(self) -> bytes | None:
        """The parameters' digest after every step (steps x 16 bytes), or None for a record without."""
        sd = self.doc.get("step_digests")
        if sd is None:
            return None
        if "step_digests" not in self._arrays:
            try:
                self._arrays["step_digests"] = (self.path / sd["file"]).read_bytes()
            except (OSError, KeyError, TypeError) as exc:
                raise RecordError(f"{self.path}: step digests: cannot read ({exc})") from None
        return self._arrays["step_digests"]

    def batches(self) -> np.ndarray:
        """batches.npy (cached, read-only)."""
        if "batches" not in self._arrays:
            self._arrays["batches"] = self._read_batches()
        return self._arrays["batches"]

    def _read_batches(self) -> np.ndarray:
        f = self.path / self.doc["batches"]["file"]
        try:
            arr = np.load(io.BytesIO(f.read_bytes()), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise RecordError(f"{self.path}: batches file {f.name}: cannot read ({exc})") from None
        if arr.dtype.kind not in "iu" or arr.ndim != 2:
            raise RecordError(
                f"{self.path}: batches file {f.name}: expected a 2-d integer array, got {arr.dtype} {arr.shape}"
            )
        arr = arr.astype(np.int64)
        arr.setflags(write=False)
        return arr

    def segment_epochs(self) -> np.ndarray:
        """Epoch of each segment (by its starting step)."""
        spe = int(self.doc["steps_per_epoch"])
        return np.asarray(self.steps[:-1]) // spe


def _f32_span(header_len: int, header: bytes, prefix: str) -> tuple[int, int] | None:
    """Where (file offsets) the tensors named prefix* of a safetensors file lie, when they are F32 and
    back to back in name order; None otherwise (or when the header does not parse)."""
    try:
        meta = json.loads(header)
        names = sorted(k for k in meta if k.startswith(prefix))
        spans = [meta[k]["data_offsets"] for k in names]
        if not names or any(meta[k]["dtype"] != "F32" for k in names):
            return None
        if any(a[1] != b[0] for a, b in zip(spans[:-1], spans[1:], strict=True)):
            return None
        start, end = 8 + header_len + int(spans[0][0]), 8 + header_len + int(spans[-1][1])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    return (start, end) if end >= start and (end - start) % 4 == 0 else None


def _adjacent_f32(raw: memoryview, prefix: str) -> torch.Tensor | None:
    """The tensors named prefix* of a safetensors file's bytes as one float32 vector (a copy), when they
    are F32 and lie back to back in name order; None otherwise."""
    n = int.from_bytes(raw[:8], "little")
    span = _f32_span(n, bytes(raw[8 : 8 + n]), prefix) if 8 + n <= len(raw) else None
    if span is None or span[1] > len(raw):
        return None
    if span[0] == span[1]:
        return torch.empty(0)
    return torch.frombuffer(bytearray(raw[span[0] : span[1]]), dtype=torch.float32)


def _read_adjacent_f32(path: Path, prefix: str, out: torch.Tensor | None = None) -> torch.Tensor | None:
    """_adjacent_f32 of a file, reading its header and those tensors' bytes only (the Recorder's
    checkpoints: a third of the file, read once into the vector's own memory: `out` when it is a
    contiguous float32 CPU vector of their size, else new memory)."""
    try:
        with open(path, "rb", buffering=0) as f:
            n = int.from_bytes(f.read(8), "little")
            size = os.fstat(f.fileno()).st_size
            if n > size - 8:
                return None
            span = _f32_span(n, f.read(n), prefix)
            if span is None or span[1] > size:
                return None
            count = (span[1] - span[0]) // 4
            ok = (
                out is not None
                and out.dtype == torch.float32
                and out.device.type == "cpu"
                and out.dim() == 1
                and out.numel() == count
                and out.is_contiguous()
            )
            vec = out if ok else torch.empty(count, dtype=torch.float32)
            f.seek(span[0])
            if count and f.readinto(vec.numpy().view(np.uint8)) != count * 4:
                return None
    except OSError:
        return None  # checkpoint(i) names the entry
    return vec


def _require(doc: dict, path: Path) -> None:
    if doc.get("format") != FORMAT:
        raise RecordError(f"{path}: record.json: format is {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("version") != VERSION:
        raise RecordError(f"{path}: record.json: version {doc.get('version')!r} unsupported (this reads {VERSION})")
    for k in (*HEADER_KEYS, "checkpoints", "head"):
        if k not in doc:
            raise RecordError(f"{path}: record.json: missing field {k!r}")
    if not isinstance(doc["checkpoints"], list) or len(doc["checkpoints"]) < 2:
        raise RecordError(f"{path}: record.json: 'checkpoints' must list at least 2 entries")
    for i, e in enumerate(doc["checkpoints"]):
        miss = [k for k in ("step", "file", "bytes", "sha256", "prev") if not isinstance(e, dict) or k not in e]
        if miss:
            raise RecordError(f"{path}: record.json: checkpoint entry {i} lacks {', '.join(miss)}")
        f = e["file"]
        if not isinstance(f, str) or f.startswith(("/", "\\")) or ".." in f.replace("\\", "/").split("/"):
            raise RecordError(f"{path}: record.json: checkpoint entry {i}: file must be a path inside the record")
    if len(doc["segment_seeds"]) != len(doc["checkpoints"]) - 1:
        raise RecordError(
            f"{path}: record.json: {len(doc['segment_seeds'])} segment seeds for {len(doc['checkpoints']) - 1} segments"
        )


def open_record(path: str | Path, store: str | Path | None = None) -> Record:
    """Parse and shape-check record.json; RecordError (a ValueError) naming the problem otherwise.
    `store`: the folder holding the checkpoints of a light record (see split_record)."""
    path = Path(path)
    if not path.is_dir():
        raise RecordError(f"{path}: not a record folder")
    f = path / "record.json"
    try:
        doc = json.loads(f.read_text())
    except FileNotFoundError:
        raise RecordError(f"{path}: record.json is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: record.json is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RecordError(f"{path}: record.json must hold an object")
    _require(doc, path)
    if store is not None and not Path(store).is_dir():
        raise RecordError(f"{store}: the checkpoint store is not a folder")
    return Record(path, doc, Path(store) if store is not None else None)


def split_record(path: str | Path, store: str | Path) -> int:
    """Move a record's checkpoint files into `store` (same relative paths), leaving a light record: the
    sealed record.json, batches, step digests and committed update sizes, which is what a claimant hands
    over; the store stays with the prover, who serves the checkpoints a verifier asks for (their sha256s
    are sealed in the record). Returns the bytes moved. Each file is copied, fsynced, then removed."""
    import shutil

    rec = open_record(path)
    store = Path(store)
    moved = 0
    for e in rec.entries:
        src = rec.path / e["file"]
        dst = store / e["file"]
        if not src.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():  # a split cut short after the copy: the store's file must be the sealed one
            if dst.stat().st_size != int(e["bytes"]) or sha256_file(dst) != e["sha256"]:
                raise FileExistsError(f"{dst}: already in the store, and not the checkpoint the record sealed")
            src.unlink()
            continue
        tmp = dst.with_name(dst.name + ".part")
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        moved += src.stat().st_size
        src.unlink()
    return moved
