"""`fpcore fleet run PLAN` and `fpcore fleet status PLAN`.

run: exit 0 when every job is done (by this run or an earlier one), 1 when some failed (each listed
with its reason), 2 for a bad plan, a broken ledger or a held lock. status: exit 0 when the ledger's
chain is intact (whatever the jobs' states), 1 when it is broken, 2 for a bad plan.
"""

from __future__ import annotations

import argparse
import sys


def cmd_run(args: argparse.Namespace) -> int:
    from fpcore._dask import preload, require_dask
    from fpcore.cli import _emit
    from fpcore.fleet.plan import load_plan

    require_dask("fpcore fleet", load=False)
    preload()  # Dask imports while the plan is read and the vectors hashed
    from fpcore.fleet.run import run_fleet

    plan = load_plan(args.plan)
    res = run_fleet(
        plan,
        scheduler=args.scheduler,
        workers=args.workers,
        verify=args.verify,
        batch_size=args.batch,
        progress=not args.quiet and not args.json and sys.stderr.isatty(),
    )
    lines = [
        f"{args.plan}: {len(res.done)} done, {len(res.failed)} failed, {len(res.skipped)} already done "
        f"({res.workers} workers on {res.scheduler}, {res.seconds:.1f} s); ledger {res.ledger}"
    ]
    lines += [f"  failed: job {e['job']['index']} ({e['job']['model']}): {e['error']}" for e in res.failed]
    if res.removed_temporaries:
        lines.append(f"  removed {len(res.removed_temporaries)} temporaries left by an interrupted run")
    _emit(args, {"command": "fleet run", **res.as_json()}, "\n".join(lines))
    return 0 if res.ok else 1


def cmd_status(args: argparse.Namespace) -> int:
    from fpcore.cli import _emit
    from fpcore.fleet.plan import load_plan
    from fpcore.fleet.run import fleet_status

    plan = load_plan(args.plan)
    st, rows = fleet_status(plan)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "pending", "changed")}
    chain = "intact" if st.intact else "BROKEN: " + "; ".join(st.problems)
    lines = [f"{plan.ledger}: {len(st.entries)} lines, chain {chain}"]
    lines.append("  " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    lines += [f"  job {r['index']} ({r['model']}): {r['status']}" + (f": {r['error']}" if r["error"] else "")
              for r in rows if r["status"] != "done"]  # fmt: skip
    if st.torn_tail:
        lines.append("  note: the last line was cut short by a crash (ignored; the next run removes it)")
    _emit(
        args,
        {"command": "fleet status", "ledger": str(plan.ledger), "intact": st.intact, "problems": st.problems,
         "lines": len(st.entries), "torn_tail": st.torn_tail, "counts": counts, "jobs": rows},
        "\n".join(lines),
    )  # fmt: skip
    return 0 if st.intact else 1


def register(sub, common) -> None:
    f = sub.add_parser("fleet", help="stamp a plan of many models on Dask (resumable, with a chained ledger)")
    fs = f.add_subparsers(dest="fleet_command", required=True, metavar="FLEET_COMMAND")
    r = fs.add_parser("run", help="run every job of PLAN not already done (exit 0 all done, 1 some failed, 2 bad plan)")
    r.add_argument("plan", help="the plan file (YAML)")
    r.add_argument(
        "--scheduler", metavar="ADDRESS", help="an existing Dask scheduler (tcp://host:port); needs shared storage"
    )
    r.add_argument("--workers", type=int, help="embedded cluster's worker processes (default: cores - 1)")
    r.add_argument("--verify", action="store_true", help="after each job, a white-box check of its output (ledger)")
    r.add_argument("--batch", type=int, default=4, help="jobs per task among those sharing vectors (default 4)")
    common(r)
    r.set_defaults(func=cmd_run)
    s = fs.add_parser("status", help="check the ledger's chain and each job's state (exit 0 intact, 1 broken)")
    s.add_argument("plan", help="the plan file (YAML)")
    common(s)
    s.set_defaults(func=cmd_status)
