"""`fpcore trace-key new` and `fpcore trace`: licensee codes' key file and the tracing verdict.

`fpcore trace SUSPECT --reference REF --trace-key K --licensees IDS` exits 0 when a licensee is
identified, 1 when none is, 2 on bad input (a damaged, missing or other-version key; REF of another
architecture; an empty or malformed candidate list).
"""

from __future__ import annotations

import argparse
import sys
import time


def cmd_key_new(args: argparse.Namespace) -> int:
    from fpcore.cli import _emit
    from fpcore.trace.key import TraceKey

    key = TraceKey.generate(fp32_shift=args.fp32_shift)
    path = key.save(args.output)
    _emit(
        args,
        {"command": "trace-key new", "path": str(path), "fp32_shift": key.fp32_shift, "segments": key.segments},
        f"wrote trace key {path} (256 secret bits; keep it private: it is never stored in a model)",
    )
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from fpcore.cli import _emit, _progress
    from fpcore.fingerprint.align import aligned
    from fpcore.io import Checkpoint
    from fpcore.trace.find import trace
    from fpcore.trace.key import TraceKey

    key = TraceKey.load(args.trace_key)
    total = Checkpoint(args.suspect).nbytes + Checkpoint(args.reference).nbytes
    t0 = time.perf_counter()
    with aligned(args.suspect, args.reference, args.align) as (suspect, alignment):
        with _progress(total, "trace", args.quiet) as prog:
            res = trace(suspect, args.reference, key, args.licensees, significance=args.significance, progress=prog)
    sec = time.perf_counter() - t0
    lines = [f"{args.suspect}: {res.verdict}"]
    if alignment is not None:
        lines.append(f"  {alignment.summary()}")
    lines += [f"  runner-up {c.licensee}: z {c.z:.1f}, p {c.p:.3g}" for c in res.runners_up[:3]]
    lines += [f"  note: {n}" for n in res.notes]
    lines.append(f"  ({res.figures['candidates']} candidates, {res.figures['elements']:,} elements, {sec:.2f} s)")
    out = {"command": "trace", "seconds": sec, **res.as_json()}
    out["alignment"] = alignment.as_json() if alignment is not None else None
    _emit(args, out, "\n".join(lines))
    return 0 if res.identified else 1


def register(sub, common) -> None:
    k = sub.add_parser("trace-key", help="the secret key behind licensee codes")
    ks = k.add_subparsers(dest="key_command", required=True, metavar="KEY_COMMAND")
    n = ks.add_parser("new", help="write a new trace key (256 random bits; never overwrites)")
    n.add_argument("-o", "--output", required=True, help="the key file to write")
    n.add_argument(
        "--fp32-shift",
        type=int,
        default=14,
        choices=range(8, 21),
        metavar="{8..20}",
        help="float32 weights move by 2^shift ulps (default 14: at most 2^-9 of the value)",
    )
    common(n)
    n.set_defaults(func=cmd_key_new)

    t = sub.add_parser("trace", help="which licensee's copy is SUSPECT? (exit 0 identified, 1 none, 2 bad input)")
    t.add_argument("suspect", help="the model under test (file or folder)")
    t.add_argument("--reference", required=True, help="the unstamped model the licensees' copies were made from")
    t.add_argument("--trace-key", required=True, metavar="KEY", help="the trace key the copies were stamped with")
    t.add_argument(
        "--licensees",
        required=True,
        metavar="IDS",
        help="a file of candidate ids (one per line), or a count N for the ids 0 .. N-1",
    )
    t.add_argument("--significance", type=float, default=1e-6, help="name a licensee when p (corrected) < this")
    t.add_argument(
        "--align",
        action="store_true",
        help="first undo permutations and norm rescalings against REF (fpcore align; needs REF's config.json)",
    )
    common(t)
    t.set_defaults(func=cmd_trace)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: fpcore trace ...")
