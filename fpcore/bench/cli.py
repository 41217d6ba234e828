"""`fpcore bench checkpoint` and `fpcore bench report` (registered by fpcore.cli).

The harness modules are imported at registration for their options only; both import torch and
matplotlib inside the functions that use them, so `fpcore --help` stays fast."""

from __future__ import annotations

import argparse
from typing import Any


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from fpcore.bench import checkpoint

    return checkpoint.run(args)


def cmd_report(args: argparse.Namespace) -> int:
    from fpcore.bench import report

    return report.run(args)


def register(sub: Any, common: Any) -> None:
    from fpcore.bench import checkpoint, report

    b = sub.add_parser(
        "bench",
        help="benchmark harnesses: the checkpoint benchmark, tables from pytest-benchmark JSON",
        description="The benchmark harnesses (fpcore.bench); the suites themselves are under benchmarks/.",
    )
    bs = b.add_subparsers(dest="bench_command", required=True, metavar="BENCH_COMMAND")
    c = bs.add_parser(
        "checkpoint",
        help="file->file stamp vs the I/O floor and mergekit, on sharded Llama-shaped models built here",
        description=checkpoint.__doc__.split("\n\n")[0],
    )
    checkpoint.add_arguments(c)
    c.set_defaults(func=cmd_checkpoint)
    r = bs.add_parser(
        "report",
        help="performance tables and a plot from pytest-benchmark JSON (optionally into a page's markers)",
        description=report.__doc__.split("\n\n")[1],
    )
    report.add_arguments(r)
    r.set_defaults(func=cmd_report)
