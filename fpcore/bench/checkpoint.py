"""Checkpoint benchmark: file->file stamp against the I/O floor and mergekit, on models built here.

    fpcore bench checkpoint [--params 1.3e9] [--models 8] [--workdir DIR] [--reps 3]
                            [--cold] [--no-double] [--no-mergekit] [--keep] [--json]

(also ``python -m fpcore.bench.checkpoint``).

It builds sharded bf16 Llama-shaped checkpoints in a work folder (random weights from seeded
generators, written with fpcore.io, shards of at most --shard-gb, an index and a config.json): a base,
a fine-tuned copy, a downstream copy, and tau = tuned - base (fpcore.stamping.extract). Then, each in a
fresh process timed by wall clock (peak RSS from the child's rusage, RssAnon/RssFile and /proc/PID/io
sampled while it runs):

- stamp: ``python -m fpcore.cli stamp TAU DOWNSTREAM -o OUT --quiet --json``;
- floor: a plain copy of the same model files (shutil.copyfile) plus a full read of tau, every output
  fsynced as fpcore's atomic output does: the same bytes read and written, no arithmetic (the issue's
  floor); and the same copy written with O_DIRECT (what the disk takes without the page cache, which
  is how fpcore writes), reported beside it;
- mergekit 0.1.5 when installed (``pip install mergekit==0.1.5``): ``merge_method: linear`` over
  [downstream, tau as a model folder] with weights [1, alpha], ``normalize: false``,
  ``dtype: float32``, ``out_dtype: bfloat16``.

Floor and stamp alternate, several repetitions, medians. Page cache: by default warm (every input read
once before the first timed run, so both read from memory and write to disk); with --cold each input
file is evicted with posix_fadvise(DONTNEED) before each run (no root needed; best effort). It also
stamps a model of twice the size (peak RSS must stay flat) and --models copies at once, checking that
tau's bytes are read once (the result's vector_bytes_read, and the kernel's read_bytes with tau
evicted and the models warm). The work folder is removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fpcore._markers import update_section
from fpcore.io import Checkpoint, SafetensorsWriter
from fpcore.io.reader import INDEX

if TYPE_CHECKING:
    import torch

GB = 1e9
VOCAB = 32000
ALPHA = 1.0
MERGEKIT_VERSION = "0.1.5"
REPO_ROOT = Path(__file__).resolve().parents[2]


# ---- building checkpoints ----------------------------------------------------------------------


@dataclass(frozen=True)
class LlamaShape:
    """A Llama-architecture model (untied lm_head, full multi-head attention)."""

    hidden: int
    intermediate: int
    layers: int
    vocab: int = VOCAB

    @property
    def heads(self) -> int:
        return max(1, self.hidden // 64)

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """Names and shapes in Hugging Face's order and naming."""
        h, m = self.hidden, self.intermediate
        out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (self.vocab, h))]
        for i in range(self.layers):
            p = f"model.layers.{i}."
            out += [
                (p + "input_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (h, h)),
                (p + "self_attn.k_proj.weight", (h, h)),
                (p + "self_attn.v_proj.weight", (h, h)),
                (p + "self_attn.o_proj.weight", (h, h)),
                (p + "post_attention_layernorm.weight", (h,)),
                (p + "mlp.gate_proj.weight", (m, h)),
                (p + "mlp.up_proj.weight", (m, h)),
                (p + "mlp.down_proj.weight", (h, m)),
            ]
        out += [("model.norm.weight", (h,)), ("lm_head.weight", (self.vocab, h))]
        return out

    @property
    def params(self) -> int:
        total = 0
        for _, s in self.tensors():
            n = 1
            for d in s:
                n *= d
            total += n
        return total

    def config(self) -> dict[str, object]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
            "bos_token_id": 1,
            "eos_token_id": 2,
        }


def llama_shape(params: float) -> LlamaShape:
    """The Llama shape closest to `params` parameters (width by size, depth to fit; vocab 32000)."""
    hidden = 2048 if params >= 6e8 else 1024 if params >= 1.5e8 else 512
    inter = 64 * round(2.6875 * hidden / 64)
    per_layer = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden
    layers = max(1, round((params - 2 * VOCAB * hidden - hidden) / per_layer))
    return LlamaShape(hidden, inter, layers)


def _values(shape: tuple[int, ...], name: str, seed: int, index: int, base_seed: int | None) -> torch.Tensor:
    """A tensor's bf16 values: the base's (seeded by base_seed or seed), plus a seeded perturbation
    when base_seed is given (a fine-tune of that base). Norm weights are ones (perturbed by 2e-2 so
    that no delta rounds to zero in bf16), matrices N(0, 0.02) (perturbed by 1e-3)."""
    import torch  # here, not at the top: `fpcore bench --help` and the CLI's registration stay light

    norm = len(shape) == 1
    if norm:
        t = torch.ones(shape)
    else:
        g = torch.Generator().manual_seed(1_000_003 * (base_seed if base_seed is not None else seed) + index)
        t = torch.randn(shape, generator=g).mul_(0.02)
    if base_seed is not None:
        g = torch.Generator().manual_seed(1_000_003 * seed + index + 7)
        t.add_(torch.randn(shape, generator=g), alpha=2e-2 if norm else 1e-3)
    return t.to(torch.bfloat16)


def write_model(
    dest: Path, shape: LlamaShape, *, seed: int, base_seed: int | None = None, shard_bytes: int = 2 * 10**9
) -> Path:
    """Write a sharded bf16 model folder (model-0000k-of-0000n.safetensors, index, config.json).
    A whole model is never in memory: tensors are generated and written one at a time."""
    import torch

    dest.mkdir(parents=True, exist_ok=False)
    specs = shape.tensors()
    shards: list[list[tuple[int, str, tuple[int, ...]]]] = [[]]
    size = 0
    for i, (name, s) in enumerate(specs):
        nbytes = 2
        for d in s:
            nbytes *= d
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((i, name, s))
        size += nbytes
    n = len(shards)
    weight_map: dict[str, str] = {}
    total = 0
    for k, shard in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{n:05d}.safetensors"
        layout = [(name, torch.bfloat16, s) for _, name, s in shard]
        with SafetensorsWriter(dest / fname, layout, {"format": "pt"}) as w:
            for i, name, s in shard:
                t = _values(s, name, seed, i, base_seed)
                w.write(name, t)
                total += t.numel() * 2
                weight_map[name] = fname
    (dest / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (dest / "config.json").write_text(json.dumps(shape.config(), indent=2))
    (dest / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    return dest


def link_model(src: Path, dest: Path) -> Path:
    """Another model folder with the same weights: shards hard-linked (no bytes copied)."""
    dest.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix == ".safetensors":
            os.link(f, dest / f.name)
        else:
            shutil.copy2(f, dest / f.name)
    return dest


@dataclass
class Built:
    shape: LlamaShape
    base: Path
    tuned: Path
    downstream: Path
    tau: Path
    build_seconds: float
    skipped: dict[str, str]

    @property
    def model_bytes(self) -> int:
        return Checkpoint(self.downstream).nbytes

    @property
    def tau_bytes(self) -> int:
        return self.tau.stat().st_size


def build_checkpoints(
    workdir: Path, params: float, *, seed: int = 0, shard_bytes: int = 2 * 10**9, downstream: bool = True
) -> Built:
    """Base, tuned (base + perturbation), downstream (base + another perturbation) and tau."""
    from fpcore import stamping

    t0 = time.perf_counter()
    shape = llama_shape(params)
    workdir.mkdir(parents=True, exist_ok=True)
    base = write_model(workdir / "base", shape, seed=seed, shard_bytes=shard_bytes)
    tuned = write_model(workdir / "tuned", shape, seed=seed + 1, base_seed=seed, shard_bytes=shard_bytes)
    down = (
        write_model(workdir / "downstream", shape, seed=seed + 2, base_seed=seed, shard_bytes=shard_bytes)
        if downstream
        else base
    )
    res = stamping.extract(tuned, base, workdir / "tau.safetensors")
    return Built(shape, base, tuned, down, workdir / "tau.safetensors", time.perf_counter() - t0, res.skipped)


def tau_model_folder(built: Built, dest: Path) -> Path:
    """tau as a model folder (model.safetensors + config.json), the form mergekit needs."""
    dest.mkdir(parents=True)
    os.link(built.tau, dest / "model.safetensors")
    shutil.copy2(built.base / "config.json", dest / "config.json")
    return dest


def model_files(path: Path) -> list[Path]:
    return sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path]


def direct_copy(src: Path, dest: Path, chunk: int = 16 << 20) -> None:
    """Copy `src` to `dest` writing with O_DIRECT: page-aligned chunks, the last one padded to 4096
    bytes, then the file truncated to its size; fsynced."""
    import mmap

    size = src.stat().st_size
    buf = mmap.mmap(-1, chunk)
    view = memoryview(buf)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    try:
        with open(src, "rb", buffering=0) as f:
            pos = 0
            while pos < size:
                n = 0
                while n < chunk and pos + n < size:
                    got = f.readinto(view[n:])
                    if not got:
                        raise OSError(f"{src}: ended early")
                    n += got
                m = -(-n // 4096) * 4096
                view[n:m] = bytes(m - n)
                done = 0
                while done < m:
                    done += os.write(fd, view[done:m])
                pos += n
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
        view.release()
        buf.close()


def copy_floor(models: list[Path], tau: Path, out: Path, *, chunk: int = 16 << 20, direct: bool = False) -> int:
    """The I/O floor: copy every file of each model into `out` (shutil.copyfile; with `direct`, a copy
    written with O_DIRECT), read tau once, fsync the outputs as fpcore's AtomicOutput does. Returns
    the bytes read + written."""
    out.mkdir(parents=True)
    moved = 0
    buf = bytearray(chunk)
    with open(tau, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            moved += n
    for m in models:
        dest = out / m.name if len(models) > 1 else out
        dest.mkdir(exist_ok=True)
        for src in model_files(m):
            if direct:
                direct_copy(src, dest / src.name, chunk)
                moved += 2 * src.stat().st_size
                continue
            shutil.copyfile(src, dest / src.name)
            fd = os.open(dest / src.name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            moved += 2 * src.stat().st_size
        fd = os.open(dest, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return moved


def evict(paths: list[Path]) -> None:
    """Drop these files' clean pages from the page cache (best effort; no root needed)."""
    for p in paths:
        for f in model_files(p):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def warm(paths: list[Path]) -> None:
    buf = bytearray(16 << 20)
    for p in paths:
        for f in model_files(p):
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass


# ---- running and measuring a child process -----------------------------------------------------


@dataclass
class ChildRun:
    cmd: list[str]
    seconds: float
    returncode: int
    peak_rss: int  # bytes, the child's VmHWM (kernel high-water mark of RSS after exec), last sample
    peak_rss_anon: int  # bytes, max RssAnon sampled from /proc/PID/status (heap: what the process allocated)
    peak_rss_file: int  # bytes, max RssFile sampled (file pages mapped in: mmap'd inputs)
    ru_maxrss: int = 0  # bytes, wait4 rusage; on Linux it can carry the parent's RSS at fork: not used
    io: dict[str, int] = field(default_factory=dict)  # last /proc/PID/io sample (rchar, read_bytes, ...)
    stdout: str = ""
    stderr: str = ""


def _status_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def _proc_io(pid: int) -> dict[str, int]:
    try:
        with open(f"/proc/{pid}/io") as f:
            return {k: int(v) for k, _, v in (line.partition(":") for line in f)}
    except (OSError, ValueError):
        return {}


def run_child(cmd: list[str], *, env: dict[str, str] | None = None, poll: float = 0.02) -> ChildRun:
    """Run `cmd` in a fresh process; wall-clock seconds, peak RSS, and /proc samples while it runs."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        anon = filep = hwm = 0
        io: dict[str, int] = {}
        while True:
            st = _status_kb(p.pid)
            hwm = max(hwm, st.get("VmHWM", 0))
            anon = max(anon, st.get("RssAnon", 0))
            filep = max(filep, st.get("RssFile", 0) + st.get("RssShmem", 0))
            io = _proc_io(p.pid) or io
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(poll)
        sec = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildRun(
            cmd,
            sec,
            p.returncode,
            max(hwm, anon + filep),
            anon,
            filep,
            ru.ru_maxrss * 1024,
            io,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def run_cli(*args: str) -> ChildRun:
    """`python -m fpcore.cli ARGS` in a fresh process; RuntimeError with its stderr when it fails."""
    r = run_child([sys.executable, "-m", "fpcore.cli", *args], env=_child_env())
    if r.returncode != 0:
        raise RuntimeError(f"fpcore {args[0]} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r


def run_stamp(tau: Path, models: list[Path], out: Path) -> tuple[ChildRun, dict[str, object]]:
    r = run_cli("stamp", str(tau), *map(str, models), "-o", str(out), "--alpha", repr(ALPHA), "--quiet", "--json")
    return r, json.loads(r.stdout)


def _timed(label: str, runs: list[ChildRun], nbytes: int, log) -> dict[str, object]:
    secs = [r.seconds for r in runs]
    rss = max(r.peak_rss for r in runs)
    log(f"  {label}: {_med(secs):.2f} s (median), peak RSS {rss / 2**20:.0f} MiB")
    return {"seconds": secs, "median_s": _med(secs), "peak_rss": rss, "bytes_read": nbytes}


def _floor_script() -> str:
    """The floor's child: stdlib only (no torch import), the same code as copy_floor."""
    src = inspect.getsource(model_files) + inspect.getsource(direct_copy) + inspect.getsource(copy_floor)
    return (
        "import json, os, shutil, sys\nfrom pathlib import Path\n"
        + src
        + "a = json.loads(sys.argv[1])\n"
        + "print(copy_floor([Path(m) for m in a['models']], Path(a['tau']), Path(a['out']), direct=a['direct']))\n"
    )


def run_floor(tau: Path, models: list[Path], out: Path, *, direct: bool = False) -> ChildRun:
    arg = json.dumps({"models": [str(m) for m in models], "tau": str(tau), "out": str(out), "direct": direct})
    r = run_child([sys.executable, "-c", _floor_script(), arg], env=_child_env())
    if r.returncode != 0:
        raise RuntimeError(f"floor copy failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r


def find_mergekit() -> tuple[str | None, str]:
    """(path of mergekit-yaml, message): installed next to this Python or on PATH, version checked."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        ver = version("mergekit")
    except PackageNotFoundError:
        return None, f"mergekit is not installed (pip install -c constraints.txt mergekit=={MERGEKIT_VERSION})"
    exe = shutil.which("mergekit-yaml", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if exe is None:
        return None, f"mergekit {ver} is installed but mergekit-yaml is not on PATH"
    note = "" if ver == MERGEKIT_VERSION else f" (wanted {MERGEKIT_VERSION})"
    return exe, f"mergekit {ver}{note}"


def run_mergekit(exe: str, model: Path, tau_folder: Path, out: Path, workdir: Path) -> ChildRun:
    cfg = workdir / "mergekit.yml"
    cfg.write_text(
        "merge_method: linear\n"
        "models:\n"
        f"  - model: {model}\n"
        "    parameters:\n"
        "      weight: 1.0\n"
        f"  - model: {tau_folder}\n"
        "    parameters:\n"
        f"      weight: {ALPHA}\n"
        "parameters:\n"
        "  normalize: false\n"
        "dtype: float32\n"
        "out_dtype: bfloat16\n"
    )
    cmd = [exe, str(cfg), str(out), "--no-copy-tokenizer", "--quiet", "--no-write-model-card"]
    r = run_child(cmd, env=_child_env())
    if r.returncode != 0:
        raise RuntimeError(f"mergekit failed ({r.returncode}): {r.stderr.strip()[-3000:]}")
    return r


def _rm(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()


def _max_ulp_diff(a: Path, b: Path, name: str) -> tuple[int, float]:
    """(max difference in bf16 units in the last place, fraction of identical elements) of one tensor."""
    import torch

    x = Checkpoint(a).get(name).view(torch.int16).to(torch.int32)
    y = Checkpoint(b).get(name).view(torch.int16).to(torch.int32)
    # order-preserving integer image of bf16 (sign-magnitude -> two's complement)
    x = torch.where(x < 0, -(x & 0x7FFF), x)
    y = torch.where(y < 0, -(y & 0x7FFF), y)
    return int((x - y).abs().max()), float((x == y).float().mean())


# ---- the benchmark -----------------------------------------------------------------------------


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def bench(args: argparse.Namespace, log) -> dict[str, object]:
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="fpcore-bench-ckpt-"))
    work.mkdir(parents=True, exist_ok=True)
    res: dict[str, object] = {"workdir": str(work), "cache": "cold (posix_fadvise DONTNEED)" if args.cold else "warm"}
    shard_bytes = int(args.shard_gb * GB)
    try:
        log(f"building a {args.params:.3g}-parameter model in {work} ...")
        b = build_checkpoints(work / "main", args.params, shard_bytes=shard_bytes)
        mb, tb = b.model_bytes, b.tau_bytes
        res["model"] = {
            "params": b.shape.params,
            "shape": asdict(b.shape),
            "bytes": mb,
            "shards": len(Checkpoint(b.downstream).files),
            "tau_bytes": tb,
            "tau_skipped": b.skipped,
            "build_seconds": round(b.build_seconds, 1),
        }
        log(
            f"  {b.shape.params / 1e9:.3f}B params, {mb / GB:.2f} GB in {res['model']['shards']} shard(s), "
            f"tau {tb / GB:.2f} GB; built in {b.build_seconds:.0f} s"
        )
        moved = tb + 2 * sum(f.stat().st_size for f in model_files(b.downstream))
        inputs = [b.downstream, b.tau]
        out = work / "out"

        def prepare() -> None:
            _rm(out)
            if args.cold:
                evict(inputs)

        if not args.cold:
            warm(inputs)
        # untimed warm-up of each (imports, page cache), then alternate floor / stamp
        prepare()
        run_floor(b.tau, [b.downstream], out)
        prepare()
        run_stamp(b.tau, [b.downstream], out)
        floor_s, stamp_s, stamp_inproc, rss, rss_anon, rss_file = [], [], [], [], [], []
        dfloor_s: list[float] = []
        direct_ok = hasattr(os, "O_DIRECT")
        for rep in range(args.reps):
            prepare()
            f = run_floor(b.tau, [b.downstream], out)
            floor_s.append(f.seconds)
            if direct_ok:
                prepare()
                try:
                    dfloor_s.append(run_floor(b.tau, [b.downstream], out, direct=True).seconds)
                except RuntimeError as exc:  # a file system without O_DIRECT
                    log(f"  direct floor skipped: {exc}")
                    direct_ok = False
            prepare()
            s, js = run_stamp(b.tau, [b.downstream], out)
            stamp_s.append(s.seconds)
            stamp_inproc.append(float(js["seconds"]))
            rss.append(s.peak_rss)
            rss_anon.append(s.peak_rss_anon)
            rss_file.append(s.peak_rss_file)
            log(
                f"  rep {rep + 1}: floor {f.seconds:.2f} s, "
                + (f"direct floor {dfloor_s[-1]:.2f} s, " if direct_ok else "")
                + f"stamp {s.seconds:.2f} s "
                f"(in-process {js['seconds']:.2f} s), "
                f"peak RSS {s.peak_rss / 2**20:.0f} MiB (anon {s.peak_rss_anon / 2**20:.0f}, "
                f"file {s.peak_rss_file / 2**20:.0f})"
            )
        # extract (two streaming passes over tuned and base, tau written) and detect (one pass over
        # tau, suspect and base; the tuned model is base + tau, so it must be found), fresh processes
        x = work / "x.safetensors"
        xruns = []
        for _ in range(args.reps):
            x.unlink(missing_ok=True)
            xruns.append(run_cli("extract", str(b.tuned), str(b.base), "-o", str(x), "--quiet"))
        x.unlink()
        res["extract"] = _timed("extract", xruns, 2 * mb, log)
        druns = [
            run_cli("detect", str(b.tau), str(b.tuned), "--base", str(b.base), "--quiet") for _ in range(args.reps)
        ]
        res["detect"] = _timed("detect", druns, 2 * mb + tb, log)
        base_rss = run_child([sys.executable, "-m", "fpcore.cli", "--version"], env=_child_env())
        res["baseline"] = {
            "what": "python -m fpcore.cli --version (interpreter + fpcore import, no torch)",
            "seconds": base_rss.seconds,
            "peak_rss": base_rss.peak_rss,
            "peak_rss_anon": base_rss.peak_rss_anon,
        }
        fl, st = _med(floor_s), _med(stamp_s)
        res["floor"] = {"seconds": floor_s, "median_s": fl, "bytes_moved": moved, "gbps": moved / fl / GB}
        if dfloor_s:
            dfl = _med(dfloor_s)
            res["floor_direct"] = {"seconds": dfloor_s, "median_s": dfl, "gbps": moved / dfl / GB}
        res["stamp"] = {
            "seconds": stamp_s,
            "median_s": st,
            "in_process_median_s": _med(stamp_inproc),
            "bytes_moved": moved,
            "gbps": moved / st / GB,
            "peak_rss": max(rss),
            "peak_rss_anon": max(rss_anon),
            "peak_rss_file": max(rss_file),
            "ratio_to_floor": st / fl,
            "in_process_ratio_to_floor": _med(stamp_inproc) / fl,
        }
        if dfloor_s:
            res["stamp"]["ratio_to_direct_floor"] = st / res["floor_direct"]["median_s"]
        prepare()
        _rm(out)

        # peer: mergekit on the same inputs
        exe, msg = (None, "skipped (--no-mergekit)") if args.no_mergekit else find_mergekit()
        res["mergekit"] = {"status": msg}
        if exe is not None:
            log(f"mergekit: {msg}")
            tf = tau_model_folder(b, work / "tau_model")
            mk_s, mk_rss = [], []
            try:
                for rep in range(args.mergekit_reps):
                    prepare()
                    m = run_mergekit(exe, b.downstream, tf, out, work)
                    mk_s.append(m.seconds)
                    mk_rss.append(m.peak_rss)
                    log(f"  rep {rep + 1}: mergekit {m.seconds:.2f} s, peak RSS {m.peak_rss / 2**20:.0f} MiB")
                mk = _med(mk_s)
                res["mergekit"].update(
                    {
                        "seconds": mk_s,
                        "median_s": mk,
                        "gbps": moved / mk / GB,
                        "peak_rss": max(mk_rss),
                        "speedup_of_stamp": mk / st,
                    }
                )
                # agreement on one tensor (mergekit computes in fp32 too: at most 1 ulp apart)
                ref = work / "ref"
                _rm(ref)
                run_stamp(b.tau, [b.downstream], ref)
                name = "model.layers.0.mlp.down_proj.weight"
                ulp, same = _max_ulp_diff(ref, out, name)
                res["mergekit"]["agreement"] = {"tensor": name, "max_ulp": ulp, "identical_fraction": same}
                _rm(ref)
            except RuntimeError as exc:
                res["mergekit"]["status"] = f"{msg}: failed: {exc}"
                log(f"  {res['mergekit']['status']}")
            _rm(out)
        else:
            log(f"mergekit: {msg}; peer skipped")

        # several models with one tau: tau's bytes read once
        if args.models > 1:
            log(f"stamping {args.models} models with one tau ...")
            many = [link_model(b.downstream, work / "many" / f"m{i}") for i in range(args.models)]
            warm([b.downstream])
            evict([b.tau])
            r, js = run_stamp(b.tau, many, out)
            vb = int(js["vector_bytes_read"])
            res["many"] = {
                "models": args.models,
                "seconds": r.seconds,
                "bytes_written": args.models * mb,
                "gbps_written": args.models * mb / r.seconds / GB,
                "tau_bytes": tb,
                "vector_bytes_read": vb,
                "tau_reads": vb / tb,
                "kernel_read_bytes": r.io.get("read_bytes", 0),
                "kernel_read_bytes_over_tau": r.io.get("read_bytes", 0) / tb,
                "peak_rss": r.peak_rss,
                "peak_rss_anon": r.peak_rss_anon,
            }
            log(
                f"  {r.seconds:.1f} s; vector_bytes_read {vb / GB:.3f} GB = {vb / tb:.3f} x tau; kernel read_bytes "
                f"{r.io.get('read_bytes', 0) / GB:.3f} GB (tau evicted, models warm); peak RSS "
                f"{r.peak_rss / 2**20:.0f} MiB"
            )
            _rm(out)
            _rm(work / "many")

        # flatness: the same stamp on a model of twice the parameters
        if not args.no_double:
            _rm(work / "main" / "tuned")  # room on disk
            log(f"building a {2 * args.params:.3g}-parameter model ...")
            b2 = build_checkpoints(work / "double", 2 * args.params, seed=10, shard_bytes=shard_bytes, downstream=False)
            _rm(b2.tuned)
            if not args.cold:
                warm([b2.base, b2.tau])
            prepare()
            r2, js2 = run_stamp(b2.tau, [b2.base], out)
            res["double"] = {
                "params": b2.shape.params,
                "bytes": b2.model_bytes,
                "seconds": r2.seconds,
                "peak_rss": r2.peak_rss,
                "peak_rss_anon": r2.peak_rss_anon,
                "peak_rss_file": r2.peak_rss_file,
                "rss_ratio_to_single": r2.peak_rss / max(rss),
                "anon_ratio_to_single": r2.peak_rss_anon / max(1, max(rss_anon)),
            }
            log(
                f"  {b2.shape.params / 1e9:.3f}B: stamp {r2.seconds:.2f} s, peak RSS {r2.peak_rss / 2**20:.0f} MiB "
                f"(anon {r2.peak_rss_anon / 2**20:.0f}, file {r2.peak_rss_file / 2**20:.0f})"
            )
            _rm(out)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return res


def report(res: dict[str, object]) -> str:
    m, fl, st = res["model"], res["floor"], res["stamp"]
    mib = 2**20
    lines = [
        f"model: {m['params'] / 1e9:.3f}B params, {m['bytes'] / GB:.2f} GB bf16 in {m['shards']} shard(s); "
        f"tau {m['tau_bytes'] / GB:.2f} GB; page cache: {res['cache']}",
        f"{'run':<26}{'median s':>10}{'GB/s':>8}{'peak RSS MiB':>14}",
        f"{'I/O floor (copy + read)':<26}{fl['median_s']:>10.2f}{fl['gbps']:>8.2f}{'':>14}",
        *(
            [f"{'O_DIRECT copy + read':<26}{fd['median_s']:>10.2f}{fd['gbps']:>8.2f}{'':>14}"]
            if (fd := res.get("floor_direct"))
            else []
        ),
        f"{'fpcore stamp (process)':<26}{st['median_s']:>10.2f}{st['gbps']:>8.2f}{st['peak_rss'] / mib:>14.0f}",
        f"{'fpcore stamp (in-process)':<26}{st['in_process_median_s']:>10.2f}"
        f"{st['bytes_moved'] / st['in_process_median_s'] / GB:>8.2f}{'':>14}",
    ]
    if "extract" in res:
        x = res["extract"]
        xgbps = (x["bytes_read"] + m["tau_bytes"]) / x["median_s"] / GB
        lines.append(f"{'fpcore extract (process)':<26}{x['median_s']:>10.2f}{xgbps:>8.2f}{x['peak_rss'] / mib:>14.0f}")
    if "detect" in res:
        x = res["detect"]
        xgbps = x["bytes_read"] / x["median_s"] / GB
        lines.append(f"{'fpcore detect (process)':<26}{x['median_s']:>10.2f}{xgbps:>8.2f}{x['peak_rss'] / mib:>14.0f}")
    mk = res.get("mergekit", {})
    if "median_s" in mk:
        lines.append(f"{'mergekit linear':<26}{mk['median_s']:>10.2f}{mk['gbps']:>8.2f}{mk['peak_rss'] / mib:>14.0f}")
    lines.append(
        f"GB/s count bytes read + written ({st['bytes_moved'] / GB:.2f} GB for stamp and the floors; tuned + base "
        f"read, tau written for extract, which reads its inputs twice; tau, suspect and base read for detect); "
        f"each run a fresh process"
    )
    lines.append("")
    ok = "ok" if st["ratio_to_floor"] <= 1.3 else "MISSED"
    lines.append(
        f"stamp / floor: {st['ratio_to_floor']:.2f}x (target <= 1.3x: {ok}); in-process "
        f"{st['in_process_ratio_to_floor']:.2f}x"
        + (
            f"; against the O_DIRECT copy (the disk's write speed without the page cache) "
            f"{st['ratio_to_direct_floor']:.2f}x"
            if "ratio_to_direct_floor" in st
            else ""
        )
    )
    if "median_s" in mk:
        ok = "ok" if mk["speedup_of_stamp"] >= 4 else "MISSED"
        lines.append(f"mergekit / stamp: {mk['speedup_of_stamp']:.2f}x faster (target >= 4x: {ok})")
        if "agreement" in mk:
            a = mk["agreement"]
            lines.append(
                f"  agreement on {a['tensor']}: max {a['max_ulp']} bf16 ulp, {a['identical_fraction']:.4f} identical"
            )
    else:
        lines.append(f"mergekit: {mk.get('status')}")
    if "baseline" in res:
        bl = res["baseline"]
        lines.append(
            f"  baseline `fpcore --version` (python start-up, no torch): {bl['seconds']:.2f} s, "
            f"peak RSS {bl['peak_rss'] / mib:.0f} MiB (anon {bl['peak_rss_anon'] / mib:.0f})"
        )
    big = m["params"] >= 1.2e9
    ok = "ok" if st["peak_rss"] <= 512 * mib else "MISSED"
    lines.append(
        f"peak RSS: {st['peak_rss'] / mib:.0f} MiB (anon {st['peak_rss_anon'] / mib:.0f}, mapped file pages "
        f"{st['peak_rss_file'] / mib:.0f})" + (f" (target <= 512 MiB at 1.3B: {ok})" if big else "")
    )
    if "double" in res:
        d = res["double"]
        ok = "ok" if d["rss_ratio_to_single"] <= 1.1 else "MISSED"
        lines.append(
            f"  at {d['params'] / 1e9:.3f}B: {d['peak_rss'] / mib:.0f} MiB (anon {d['peak_rss_anon'] / mib:.0f}, file "
            f"{d['peak_rss_file'] / mib:.0f}): {d['rss_ratio_to_single']:.2f}x the single size (flat: {ok})"
        )
    if "many" in res:
        n = res["many"]
        ok = "ok" if n["tau_reads"] <= 1.0 + 1e-9 else "MISSED"
        lines.append(
            f"{n['models']} models, one tau: {n['seconds']:.1f} s ({n['gbps_written']:.2f} GB/s written), "
            f"tau read {n['tau_reads']:.3f}x by vector_bytes_read ({ok}); kernel read_bytes "
            f"{n['kernel_read_bytes_over_tau']:.2f}x tau (tau evicted, models warm), "
            f"peak RSS {n['peak_rss'] / mib:.0f} MiB"
        )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by `fpcore bench checkpoint` and `python -m fpcore.bench.checkpoint`)."""
    p.add_argument("--params", type=float, default=1.3e9, help="model size in parameters (default 1.3e9)")
    p.add_argument("--models", type=int, default=8, help="models stamped at once for the read-once check (default 8)")
    p.add_argument("--workdir", help="where to build (default: a new temporary folder)")
    p.add_argument("--reps", type=int, default=3, help="timed floor/stamp pairs (default 3)")
    p.add_argument("--mergekit-reps", type=int, default=1, help="timed mergekit runs (default 1)")
    p.add_argument("--shard-gb", type=float, default=2.0, help="largest shard in GB (default 2; HF caps at 5)")
    p.add_argument("--cold", action="store_true", help="evict inputs from the page cache before each run")
    p.add_argument("--no-double", action="store_true", help="skip the double-size RSS run")
    p.add_argument("--no-mergekit", action="store_true", help="skip the mergekit peer")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--from-json", metavar="FILE", help="report a saved result (this tool's --json output) instead")
    p.add_argument(
        "--update", metavar="FILE", help="put the report between FILE's perf-checkpoint markers (docs/performance.md)"
    )
    p.add_argument("--update-readme", dest="update", help=argparse.SUPPRESS)  # the old name


def run(args: argparse.Namespace) -> int:
    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
        text = report(res)
        print(text)
        if args.update:
            cmd = "fpcore bench checkpoint --json > docs/perf/checkpoint_bench.json"
            update_section(
                args.update,
                f"Measured by `{cmd}` ({res['cache']} page cache):\n\n```text\n{text}\n```\n",
                "checkpoint",
            )
        return 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    res = bench(args, log)
    print(json.dumps(res, indent=2) if args.json else report(res))
    if args.update:
        update_section(args.update, f"```text\n{report(res)}\n```\n", "checkpoint")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpcore.bench.checkpoint", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
