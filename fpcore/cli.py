"""The `fpcore` command: parses, calls the domain layer (fpcore.stamping), prints.

Exit codes: 0 success; 1 when `detect` finds no fingerprint; 2 usage or input errors (bad file,
mismatched model, existing output) and a missing optional package (one line naming the extra to
install, fpcore._extras).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from fpcore import __version__
from fpcore.io import Checkpoint, CheckpointError

# Command groups that live beside their domain layer (fpcore/<domain>/cli.py), by command word. Each
# module defines register(sub, common); it is imported only when one of its commands runs or for the
# full help, so `fpcore stamp` never loads the training stacks (fpcore.pot imports torch).
_SUBCOMMAND_MODULES: dict[str, str] = {
    "fingerprint": "fpcore.fingerprint.cli",
    "demo": "fpcore.fingerprint.cli",
    "align": "fpcore.fingerprint.cli",
    "pot": "fpcore.pot.cli",
    "trace": "fpcore.trace.cli",
    "trace-key": "fpcore.trace.cli",
    "fleet": "fpcore.fleet.cli",
    "bench": "fpcore.bench.cli",
}
_CORE_COMMANDS = ("extract", "stamp", "unstamp", "inspect", "detect")


@contextmanager
def _progress(total: int, desc: str, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A bytes/s progress bar on a terminal (tqdm); nothing when quiet, not a terminal, or without tqdm
    (a cosmetic: the core commands do not need the extra that brings it)."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if quiet or not sys.stderr.isatty() or tqdm is None:
        yield None
        return

    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr) as bar:
        yield bar.update


def _jsonable(x: Any) -> Any:
    if is_dataclass(x):
        return _jsonable(asdict(x))
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None  # strict JSON has no NaN/Inf
    return x


def _emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    if args.json:
        json.dump(_jsonable(result), sys.stdout, indent=2)
        print()
    elif not args.quiet:
        print(text)


def cmd_extract(args: argparse.Namespace) -> int:
    from fpcore import stamping

    total = 2 * Checkpoint(args.base).nbytes
    t0 = time.perf_counter()
    with _progress(total, "extract", args.quiet) as prog:
        res = stamping.extract(
            args.tuned,
            args.base,
            args.output,
            dtype=args.dtype,
            skip_embed=args.skip_embed,
            include=args.include,
            exclude=args.exclude,
            overwrite=args.overwrite,
            allow_nonfinite=args.allow_nonfinite,
            force=args.force,
            progress=prog,
        )
    sec = time.perf_counter() - t0
    text = (
        f"wrote {res.out}: {res.tensors} tensors ({res.bytes_written / 1e6:.1f} MB, {res.dtype}), "
        f"{len(res.skipped)} skipped, base {res.base_digest[:16]}…, {sec:.2f} s"
    )
    _emit(args, {"command": "extract", "seconds": sec, **asdict(res)}, text)
    return 0


def _is_vector(path: str) -> bool:
    """Whether `path` is a fingerprint vector (its metadata says so); False for a model."""
    from fpcore.vector import FORMAT

    ck = Checkpoint(path)
    return ck.metadata[ck.files[0]].get("format") == FORMAT


def cmd_stamp(args: argparse.Namespace, *, unstamp: bool = False) -> int:
    from fpcore import stamping

    key = licensees = None
    if unstamp:
        first, models = args.vector, [args.model]
    else:
        paths = list(args.paths)
        if args.trace_key is None and args.licensee:
            raise ValueError("--licensee needs --trace-key")
        if args.trace_key is not None:
            from fpcore.trace.key import TraceKey

            key = TraceKey.load(args.trace_key)
            licensees = list(args.licensee or [])
            first = paths.pop(0) if _is_vector(paths[0]) else None
        else:
            first = paths.pop(0)
        models = paths
        if not models:
            raise ValueError("give at least one MODEL after the VECTOR")
        if licensees is not None and len(licensees) != len(models):
            raise ValueError(
                f"{len(licensees)} --licensee values for {len(models)} models: give one per model, in order"
            )
    vectors = ([first] if first is not None else []) + list(args.vectors or [])
    alphas = list(args.alpha or [])
    if len(alphas) > len(vectors):
        raise ValueError(f"got {len(alphas)} --alpha values for {len(vectors)} vectors")
    alphas += [1.0] * (len(vectors) - len(alphas))
    if unstamp:
        alphas = [-a for a in alphas]
    total = sum(Checkpoint(m).nbytes for m in models)
    t0 = time.perf_counter()
    with _progress(total, "unstamp" if unstamp else "stamp", args.quiet) as prog:
        res = stamping.stamp(
            list(zip(vectors, alphas, strict=True)),
            models,
            args.output,
            overwrite=args.overwrite,
            in_place=args.in_place,
            skip_mismatched=getattr(args, "skip_mismatched", False),
            allow_nonfinite=args.allow_nonfinite,
            progress=prog,
            trace_key=key,
            licensees=licensees,
        )
    sec = time.perf_counter() - t0
    verb = "unstamped" if unstamp else "stamped"
    lines = [f"{verb} {len(res.outputs)} model(s) in {sec:.2f} s ({total / 1e9 / sec:.2f} GB/s):"]
    lines += [f"  {p}" for p in res.outputs] + [f"  note: {n}" for n in res.notes]
    _emit(args, {"command": "unstamp" if unstamp else "stamp", "seconds": sec, **asdict(res)}, "\n".join(lines))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    ck = Checkpoint(args.path)
    tensors = {
        n: {"dtype": str(i.dtype).removeprefix("torch."), "shape": list(i.shape), "file": i.file.name}
        for n, i in ck.items()
    }
    dtypes: dict[str, int] = {}
    for i in tensors.values():
        dtypes[i["dtype"]] = dtypes.get(i["dtype"], 0) + 1
    meta = {str(f.name): m for f, m in ck.metadata.items()}
    vector = None
    first = ck.metadata[ck.files[0]]
    if first.get("format") == "fpcore.fingerprint-vector":
        from fpcore.vector import VectorMeta

        vm = VectorMeta.from_strings(ck.files[0], first)
        vector = {
            "dtype": vm.dtype,
            "base_digest": vm.base_digest,
            "skipped": vm.skipped,
            "alpha": vm.alpha,
            "fpcore_version": vm.fpcore_version,
            "architecture_tensors": len(vm.architecture),
        }
    result = {
        "path": str(ck.path),
        "kind": "fingerprint-vector" if vector else "model",
        "tensors": len(ck),
        "parameters": ck.numel,
        "bytes": ck.nbytes,
        "shards": [f.name for f in ck.files],
        "dtypes": dtypes,
        "vector": vector,
        "metadata": meta,
        "other_files": [f.name for f in ck.other_files()],
        "tensor_list": tensors,
    }
    text = [
        f"{ck.path}: {result['kind']}, {len(ck)} tensors, {ck.numel:,} parameters, {ck.nbytes / 1e6:.1f} MB "
        f"in {len(ck.files)} file(s); dtypes {dtypes}",
    ]
    if vector:
        text.append(
            f"  vector: stored {vector['dtype']}, base {vector['base_digest'][:16]}…, "
            f"{len(vector['skipped'])} tensors skipped"
        )
    if args.tensors:
        text += [f"  {n}: {i['dtype']} {tuple(i['shape'])} [{i['file']}]" for n, i in tensors.items()]
    _emit(args, result, "\n".join(text))
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from fpcore.detect import detect
    from fpcore.fingerprint.align import aligned
    from fpcore.vector import FingerprintVector

    vec = FingerprintVector(args.vector)
    total = 3 * vec.ckpt.nbytes  # about: tau and the suspect's and base's matching tensors
    t0 = time.perf_counter()
    with (
        aligned(args.suspect, args.base, args.align) as (suspect, alignment),
        _progress(total, "detect", args.quiet) as prog,
    ):
        res = detect(args.vector, suspect, args.base, progress=prog)
    if str(suspect) != str(args.suspect):  # scored an aligned copy: name the suspect the user gave
        res.notes = [n.replace(str(suspect), str(args.suspect)) for n in res.notes]
        res.suspect = Path(args.suspect)
    sec = time.perf_counter() - t0
    lines = [f"{res.suspect}: {res.verdict} ({res.tensors} tensors, {res.elements:,} elements, {sec:.2f} s)"]
    if alignment is not None:
        lines.append(f"  {alignment.summary()}")
    lines += [f"  note: {n}" for n in res.notes]
    if args.tensors:
        lines += [
            f"  {t.name}: alpha_hat {t.alpha_hat:.4f} cosine {t.cosine:.5f}" + (f" ({t.note})" if t.note else "")
            for t in res.per_tensor
        ]
    result = {"command": "detect", "seconds": sec, **asdict(res)}
    result["channels"] = {"white_box": result.pop("channel")}
    result["alignment"] = alignment.as_json() if alignment is not None else None
    if not args.tensors:
        result.pop("per_tensor")
    _emit(args, result, "\n".join(lines))
    return 0 if res.detected else 1


def _command_word(argv: Sequence[str] | None) -> str | None:
    args = sys.argv[1:] if argv is None else list(argv)
    return next((a for a in args if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The `fpcore` parser. With `argv`, command groups of other modules are registered only when
    argv's command is theirs (or is unknown or missing, so that help and errors list everything)."""
    p = argparse.ArgumentParser(
        prog="fpcore",
        description="Fingerprint vectors for large models: extract tau = tuned - base once, stamp it into any "
        "model derived from the same base, streaming over sharded safetensors.",
    )
    p.add_argument("--version", action="version", version=f"fpcore {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--json", action="store_true", help="print a machine-readable result")
        sp.add_argument("--quiet", action="store_true", help="no progress bar, no summary")

    e = sub.add_parser("extract", help="write the fingerprint vector tau = TUNED - BASE")
    e.add_argument("tuned", help="the fingerprinted model (file or folder)")
    e.add_argument("base", help="the base model it was fine-tuned from")
    e.add_argument("-o", "--output", required=True, help="the vector file to write (.safetensors)")
    e.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16", help="storage dtype (default bf16)")
    e.add_argument("--skip-embed", action="store_true", help="leave token embeddings and the output head out")
    e.add_argument("--include", action="append", metavar="GLOB", help="only tensors whose name matches (repeatable)")
    e.add_argument("--exclude", action="append", metavar="GLOB", help="leave out tensors whose name matches")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output")
    e.add_argument("--allow-nonfinite", action="store_true", help="keep a tau with NaN/Inf instead of refusing")
    e.add_argument("--force", action="store_true", help="extract even when BASE does not look like TUNED's base")
    common(e)
    e.set_defaults(func=cmd_extract)

    s = sub.add_parser(
        "stamp",
        help="stamp theta' = theta + alpha*tau into one or more models (with --trace-key: and a licensee code each)",
    )
    s.add_argument(
        "paths",
        nargs="+",
        metavar="[VECTOR] MODEL",
        help="the fingerprint vector, then model file(s) or folder(s); with --trace-key the vector is optional",
    )
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", help="one model: the stamped model; several: a folder of them")
    where.add_argument(
        "--in-place",
        action="store_true",
        help="change the model(s) where they are: each shard rewritten beside itself, renamed over it at the end",
    )
    s.add_argument("--alpha", type=float, action="append", help="strength per vector, in order (default 1.0)")
    s.add_argument("--vector", dest="vectors", action="append", metavar="V", help="another vector (repeatable)")
    s.add_argument("--skip-mismatched", action="store_true", help="leave tensors of another shape unstamped")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output")
    s.add_argument("--allow-nonfinite", action="store_true", help="use a vector holding NaN/Inf")
    s.add_argument(
        "--trace-key", metavar="KEY", help="trace key file (fpcore trace-key new): also stamp licensee codes"
    )
    s.add_argument(
        "--licensee", action="append", metavar="ID", help="the licensee of each MODEL, in order (one per model)"
    )
    common(s)
    s.set_defaults(func=cmd_stamp)

    u = sub.add_parser("unstamp", help="remove a stamp: theta = theta' - alpha*tau")
    u.add_argument("vector")
    u.add_argument("model")
    uwhere = u.add_mutually_exclusive_group(required=True)
    uwhere.add_argument("-o", "--output", help="the unstamped model")
    uwhere.add_argument(
        "--in-place", action="store_true", help="change MODEL where it is (shard by shard, temp + rename)"
    )
    u.add_argument("--alpha", type=float, action="append", help="the strength it was stamped with (default 1.0)")
    u.add_argument("--overwrite", action="store_true")
    u.add_argument("--allow-nonfinite", action="store_true")
    common(u)
    u.set_defaults(func=lambda a: cmd_stamp(a, unstamp=True), vectors=None)

    i = sub.add_parser("inspect", help="a model's or vector's tensors, dtypes, sizes, shards, metadata, lineage")
    i.add_argument("path")
    i.add_argument("--tensors", action="store_true", help="list every tensor")
    common(i)
    i.set_defaults(func=cmd_inspect)

    d = sub.add_parser(
        "detect",
        help="is SUSPECT stamped with VECTOR? alpha_hat and cosine of SUSPECT - BASE on tau (exit 0 found, 1 not)",
    )
    d.add_argument("vector", help="fingerprint vector file")
    d.add_argument("suspect", help="the model under test (file or folder)")
    d.add_argument("--base", required=True, help="the base model the vector was extracted from")
    d.add_argument("--tensors", action="store_true", help="also show (or, with --json, include) per-tensor figures")
    d.add_argument(
        "--align",
        action="store_true",
        help="first undo permutations and norm rescalings against BASE (fpcore align; needs BASE's config.json)",
    )
    common(d)
    d.set_defaults(func=cmd_detect)

    word = _command_word(argv)
    if argv is not None and "--version" in argv and word is None:
        modules: list[str] = []
    elif word in _SUBCOMMAND_MODULES:
        modules = [_SUBCOMMAND_MODULES[word]]
    elif word in _CORE_COMMANDS:
        modules = []
    else:
        modules = list(dict.fromkeys(_SUBCOMMAND_MODULES.values()))
    for name in modules:
        importlib.import_module(name).register(sub, common)
    return p


def _command_path(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The command words that ran, e.g. "pot eval" (each subparser level's dest holds its word)."""
    words: list[str] = []
    p: argparse.ArgumentParser | None = parser
    while p is not None:
        act = next((a for a in p._actions if isinstance(a, argparse._SubParsersAction)), None)
        word = getattr(args, act.dest, None) if act is not None else None
        if act is None or word not in act.choices:
            break
        words.append(word)
        p = act.choices[word]
    return " ".join(words) or str(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    rc = _main(argv)
    if argv is None:
        # this process is the command (argv from sys.argv): what it built dies with it. Frozen objects
        # are skipped by the collections of interpreter exit (0.1 s once Dask is loaded); atexit runs
        import gc

        gc.freeze()
    return rc


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ImportError as exc:  # a package of an optional extra: one line naming the extra, not a traceback
        from fpcore._extras import missing

        command = _command_path(parser, args)
        msg = missing(exc, command)
        if msg is None:
            raise
        print(f"fpcore {command}: {msg}", file=sys.stderr)
        return 2
    except (CheckpointError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"fpcore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fpcore {args.command}: interrupted; no output was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
