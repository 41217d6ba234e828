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
- :func:`stamp_iter` — wraps any loader's iterator of ``(name, tensor)`` pairs (vLLM's
  ``load_weights``, SGLang's custom weight loader, a transformers state dict), CPU or CUDA tensors,
  with an optional licensee code; what it yields never aliases the loader's buffers.
- :func:`load_stamped` — a transformers model loaded and stamped in one step.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fpcore import ops
from fpcore._code import TensorCode
from fpcore._dispatch import select
from fpcore.io import Checkpoint, CheckpointError
from fpcore.vector import FingerprintVector, is_embedding

if TYPE_CHECKING:
    from fpcore.trace.key import TraceKey

VectorLike = str | Path | FingerprintVector
# a licensee code for stamp_iter: (the trace key, or its file; the licensee id)
CodeLike = tuple["TraceKey | str | Path", str]
_CODED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# Tau bytes moved to the module's device per multi-tensor call in stamp_module_: a 7B model in bf16
# is stamped in ~4 calls instead of holding a second copy of its weights on the GPU.
MODULE_BATCH_BYTES = 4 << 30


def _vector(vector: VectorLike) -> FingerprintVector:
    return vector if isinstance(vector, FingerprintVector) else FingerprintVector(vector)


def _rows(target_shape: tuple[int, ...], tau_shape: tuple[int, ...]) -> int | None:
    """None when tau covers the whole target; else the leading rows it covers (vocabulary growth)."""
    return None if tuple(target_shape) == tuple(tau_shape) else tau_shape[0]


def _finite_tau(vec: FingerprintVector, name: str, tau: torch.Tensor) -> torch.Tensor:
    """tau, checked finite once per vector object and tensor (a serving host stamps many loads with one
    vector: the check is a full read of tau)."""
    checked = vec.__dict__.setdefault("_fpcore_finite", set())
    if name not in checked:
        if not ops.all_finite(tau):
            raise CheckpointError(f"{vec.path}: tensor {name!r} has non-finite values")
        checked.add(name)
    return tau


def _stamp_new(
    theta: torch.Tensor,
    tau: torch.Tensor | None,
    alpha: float,
    code: TensorCode | None = None,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """theta + alpha * tau (+ the licensee code) written once into `out` (default: a new tensor of
    theta's shape, dtype and device); tau may cover only theta's leading rows (vocabulary growth: the
    rest is theta, coded)."""
    if out is None:
        out = torch.empty(theta.shape, dtype=theta.dtype, device=theta.device)
    if tau is None:
        return ops.stamp(theta, [], code=code, out=out) if code is not None else out.copy_(theta)
    rows = _rows(tuple(theta.shape), tuple(tau.shape))
    if rows is None:
        return ops.stamp(theta, tau, alpha, code=code, out=out)
    ops.stamp(theta[:rows], tau, alpha, out=out[:rows], code=code)
    if code is None:
        out[rows:].copy_(theta[rows:])
    else:  # the code goes on over the rows tau does not cover, from where it stopped
        ops.stamp(theta[rows:], [], out=out[rows:], code=code.at(rows * math.prod(theta.shape[1:])))
    return out


def _stamped(ck: Checkpoint, vec: FingerprintVector, name: str, alpha: float) -> torch.Tensor:
    """theta + alpha * tau for tensor `name`, in theta's dtype, as a new tensor: the kernel reads
    theta and tau from the page cache (memory maps, released afterwards) and writes the result once."""
    t = _stamp_new(ck.get(name), _finite_tau(vec, name, vec.get(name)), alpha)
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


def _trace_code(code: CodeLike | None, op: str) -> tuple[TraceKey, str] | None:
    if code is None:
        return None
    from fpcore.trace.key import TraceKey, check_licensee

    if not (isinstance(code, tuple) and len(code) == 2):
        raise TypeError(f"{op}: code must be (trace key or its file, licensee id), got {type(code).__name__}")
    key, licensee = code
    check_licensee(licensee, f"{op}: code")
    if not isinstance(key, TraceKey):
        key = TraceKey.load(key)
    return key, licensee


def stamp_iter(
    pairs: Iterable[tuple[str, torch.Tensor]] | Mapping[str, torch.Tensor],
    vector: VectorLike,
    alpha: float = 1.0,
    *,
    code: CodeLike | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    prefetch: bool = False,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, theta + alpha * tau)`` for every ``(name, theta)`` a loader yields, in its order:
    the hook for serving stacks that load weights as an iterator (see docs/serving.md).

    - Numerics are those of ``fpcore stamp``: fp32 math, one rounding to theta's dtype; with
      ``code=(trace_key, licensee)`` the licensee's code is moved into the same rounding, and float
      tensors of >= 2 dimensions tau does not cover are coded on their own. The tensors equal those
      of the stamped checkpoint bit for bit.
    - Every yielded tensor is memory no one else holds (tensors tau does not cover are copied): fast
      loaders reuse one buffer between tensors, and the pairs yielded stay valid after the loader
      moves on. CPU outputs of >= 1 MB come from a small pool: a buffer is used again only once the
      caller holds nothing of it (no tensor, view, parameter or array of it, nor its storage), which
      spares the page faults of fresh memory (a 128 MB tensor: 90 ms fresh, 11 ms reused).
    - theta may live on any device (CPU or CUDA); tau goes to that device, the result stays there.
      One pass, one tensor at a time, on the calling thread. ``prefetch=True`` (CPU tensors) has a
      helper thread pull the loader's next tensor and stamp it while the caller consumes the one
      before (at most three tensors held); on a 2-core machine it cost more than it overlapped (cold
      files 1.34x plain against 1.17x without, docs/serving.md), so it is off by default. CUDA tensors
      are never prefetched (the loader's device and stream context stays the caller's).
    - Lineage: the vector and the code are checked when ``stamp_iter`` is called, before the first
      tensor is read; with `shapes` (every tensor's name -> shape, e.g. from the model's state dict
      or the checkpoint's header) the whole architecture is checked then too. Without it each tensor
      tau covers is checked against the vector's base (shape; float dtype) before it is yielded, and
      when the loader is done, a vector tensor that never came is an error naming it.

    Raises:
        CheckpointError: a tensor of another shape than the vector's base, a non-float tensor tau
            covers, a name that came twice, a non-finite tau, or (at the end) vector tensors that
            never came.
        TypeError: a pair that is not ``(str, torch.Tensor)``; a malformed `code`.
        ValueError: a non-finite alpha; a bad licensee id.
    """
    op = "stamp_iter"
    vec = _vector(vector)
    if not math.isfinite(float(alpha)):
        raise ValueError(f"{op}: alpha must be finite, got {alpha}")
    traced = _trace_code(code, op)
    if shapes is not None:
        vec.check_shapes(shapes, op)
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return _stamp_pairs(iter(items), _Stamper(op, vec, float(alpha), traced), prefetch)


class _Buffers:
    """stamp_iter's output memory on the CPU: a buffer goes back into use once nothing outside this pool
    holds its storage, so a load does not fault in fresh pages for every tensor (at 256 MB that cost
    as much as the stamp itself, docs/serving.md).

    What the caller sees is unchanged: every yielded tensor is memory no one else holds. A buffer is
    busy while any tensor uses its storage (the yielded tensor, its views, a parameter made from it,
    a numpy array or DLPack capsule of it: each holds a tensor) or its Python storage object is held;
    both counts are compared with the ones the buffer had when it was made. Buffers not asked for in
    the last HORIZON tensors are dropped (an embedding's is not held for the rest of the load), and
    all of them when the iteration ends."""

    MIN_BYTES = 1 << 20  # smaller tensors come from the heap, already faulted in
    HORIZON = 16

    def __init__(self) -> None:
        self.bufs: list[list[Any]] = []  # [uint8 buffer, its idle counts, tick of its last use]
        self.tick = 0

    @staticmethod
    def _counts(buf: torch.Tensor) -> tuple[int, int]:
        st = buf.untyped_storage()
        return torch._C._storage_Use_Count(st._cdata), sys.getrefcount(st)

    @staticmethod
    def _as(buf: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(0, dtype=dtype).set_(buf.untyped_storage(), 0, shape)  # a tensor of its own, not a view

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        nbytes = math.prod(shape) * dtype.itemsize
        if device.type != "cpu" or nbytes < self.MIN_BYTES:
            return torch.empty(shape, dtype=dtype, device=device)
        self.tick += 1
        self.bufs = [b for b in self.bufs if self.tick - b[2] <= self.HORIZON]
        for b in self.bufs:
            if b[0].numel() == nbytes and self._counts(b[0]) == b[1]:
                b[2] = self.tick
                return self._as(b[0], shape, dtype)
        buf = torch.empty(nbytes, dtype=torch.uint8)
        self.bufs.append([buf, self._counts(buf), self.tick])
        return self._as(buf, shape, dtype)


class _Stamper:
    """stamp_iter's work on one pair, and the check that every vector tensor came."""

    def __init__(self, op: str, vec: FingerprintVector, alpha: float, traced: tuple[TraceKey, str] | None) -> None:
        self.op, self.vec, self.alpha, self.traced = op, vec, alpha, traced
        self.covered = set(vec.names())
        self.seen: set[str] = set()
        self.buffers = _Buffers()
        self.kernels: dict[tuple[torch.dtype, torch.dtype], Any] = {}

    def _cpu_kernel(self, theta: torch.Tensor, tau: torch.Tensor) -> Any:
        """The cpu backend's stamp for this dtype pair when fpcore._dispatch.select picks it (the forced
        backend honoured), else None: the call then goes through ops.stamp."""
        key = (theta.dtype, tau.dtype)
        if key not in self.kernels:
            try:
                backend, fn = select(self.op, "stamp", [theta, tau])
            except RuntimeError:  # ops.stamp raises it again, with its context
                backend, fn = "", None
            self.kernels[key] = fn if backend == "cpu" else None
        return self.kernels[key]

    def one(self, k: int, pair: Any) -> tuple[str, torch.Tensor]:
        op, vec = self.op, self.vec
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise TypeError(f"{op}: item {k} is not a (name, tensor) pair: {type(pair).__name__}")
        name, theta = pair
        if not isinstance(theta, torch.Tensor):
            raise TypeError(f"{op}: tensor {name!r} is a {type(theta).__name__}, not a torch.Tensor")
        if name in self.seen:
            raise CheckpointError(f"{op}: tensor {name!r} came twice")
        self.seen.add(name)
        tau = None
        if name in self.covered:
            got = list(theta.shape)
            want = vec.meta.architecture.get(name) or list(vec.ckpt.info(name).shape)
            grew = len(got) == len(want) >= 1 and got[1:] == want[1:] and got[0] > want[0] and is_embedding(name)
            if got != want and not grew:
                raise CheckpointError(
                    f"{op}: tensor {name!r} has shape {tuple(got)}, the vector's base has {tuple(want)}"
                )
            if theta.dtype not in _CODED_DTYPES:
                raise CheckpointError(
                    f"{op}: tensor {name!r} is {theta.dtype}; tau covers float32/bfloat16/float16 only"
                )
            tau = _finite_tau(vec, name, vec.get(name)).to(theta.device)
        tc = None
        if self.traced is not None and theta.dtype in _CODED_DTYPES and theta.dim() >= 2:
            tc = self.traced[0].code(self.traced[1], name)
        out = self.buffers.empty(tuple(theta.shape), theta.dtype, theta.device)
        if tau is not None and tc is None and theta.device.type == "cpu" and theta.shape == tau.shape:
            fn = self._cpu_kernel(theta, tau)
            if fn is not None and theta.is_contiguous():
                # what ops.stamp would run, without checking again what was checked above: the per-tensor
                # checks cost as much as stamping a 512 KB tensor (docs/serving.md)
                fn(out, theta, [tau], [self.alpha])
                return name, out
        with torch.no_grad():
            out = _stamp_new(theta.detach(), tau, self.alpha, tc, out=out)
        # tau's memory map is kept (clean page-cache pages the OS can drop): releasing it after each
        # tensor made every load fault every page of tau in again, 2x the stamping's own time (256 MB)
        return name, out

    def finish(self) -> None:
        missing = [n for n in self.vec.names() if n not in self.seen]
        if any(is_embedding(n) and "lm_head" not in n for n in self.seen):  # tied embeddings: no lm_head
            missing = [n for n in missing if "lm_head" not in n]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise CheckpointError(
                f"{self.op}: the loader ended without vector tensor {missing[0]!r}{more}: {missing[:8]}"
            )


def _stamp_pairs(it: Iterator[Any], stamper: _Stamper, prefetch: bool) -> Iterator[tuple[str, torch.Tensor]]:
    first = next(it, _END)
    if first is _END:
        stamper.finish()
        return
    item = stamper.one(0, first)
    if not (prefetch and item[1].device.type == "cpu"):
        yield item
        for k, pair in enumerate(it, start=1):
            yield stamper.one(k, pair)
        stamper.finish()
        return
    yield from _pipelined(it, stamper, item)


_END = object()


def _pipelined(
    it: Iterator[Any], stamper: _Stamper, first: tuple[str, torch.Tensor]
) -> Iterator[tuple[str, torch.Tensor]]:
    """The loader advanced one tensor ahead in a helper thread: its next read (disk, page cache) runs
    while the caller consumes the tensor before. Safe because what is yielded never aliases the
    loader's buffers. Errors (the loader's own included) come out of the caller's next()."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(msg: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(msg, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for k, pair in enumerate(it, start=1):
                if not put(("pair", stamper.one(k, pair))):
                    return
            stamper.finish()
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            put(("error", exc))

    worker = threading.Thread(target=work, name="fpcore-stamp_iter", daemon=True)
    worker.start()
    try:
        yield first
        while True:
            kind, val = q.get()
            if kind == "pair":
                yield val
            elif kind == "error":
                raise val
            else:
                return
    finally:
        stop.set()
        worker.join()


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
