"""`fpcore pot ...`: train (a recorded honest run), verify, forge, eval, demo.

`pot verify REC --model M` exits 0 when the record is accepted (valid, and its final checkpoint is M bit
for bit), 1 when rejected, 2 on bad input (a damaged record: missing file, hash mismatch, truncated
checkpoint, bad JSON, each named; a model that cannot be read). Without --model it says plainly that no
model was checked.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

CHECK_NAMES = ("integrity", "data", "init", "replay", "matching")


def _out(args: argparse.Namespace, result: dict, text: str) -> None:
    from fpcore.cli import _emit

    _emit(args, result, text)


def _verdict_text(v) -> str:
    what = f"for model {v.model}" if v.model is not None else "(NO MODEL CHECKED: the record alone)"
    lines = [f"{v.record} {what}: {'ACCEPTED' if v.accepted else 'REJECTED'}"]
    for c in v.checks.values():
        tag = {True: "pass", False: "FAIL", None: "skip"}[c.passed]
        lines.append(f"  [{tag}] {c.name}: {c.reason} ({c.seconds:.2f} s)")
    return "\n".join(lines)


def _checks(s: str) -> tuple[str, ...]:
    out = tuple(x.strip() for x in s.split(",") if x.strip())
    bad = [x for x in out if x not in CHECK_NAMES]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"unknown check(s) {bad}; choose from {', '.join(CHECK_NAMES)}")
    return out


def _threads(n: int) -> None:
    """torch's threads and fpcore's native (OpenMP) threads: the pot models and checkpoints are small, and
    a 2-thread OpenMP region on a loaded 2-core machine waits for its descheduled thread."""
    import torch

    import fpcore

    torch.set_num_threads(n)
    if fpcore.HAS_NATIVE:
        fpcore.set_num_threads(n)


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import require_intact, verify

    _threads(args.threads)
    v = verify(
        args.record,
        checks=args.checks,
        q=args.q,
        r=args.r,
        seed=args.seed,
        model=args.model,
        soundness=args.soundness,
        forged_fraction=args.forged_fraction,
        scheduler=args.scheduler,
        workers=args.workers,
        store=args.store,
    )
    require_intact(v)
    _out(args, v.as_dict(), _verdict_text(v))
    return 0 if v.accepted else 1


def _recipe(rec):
    """The RunConfig and data an honest record was trained with (what a forger copies)."""
    from .task import load_dataset
    from .train import RunConfig

    doc = rec.doc
    data = load_dataset({**doc["dataset"].get("source", {}), "split": "train"})
    if data.sha256 != doc["dataset"]["sha256"]:
        raise ValueError(f"{rec.path}: its dataset is not the one its source names; cannot forge from it")
    cfg = RunConfig(
        hidden=int(doc["model"]["args"]["hidden"]),
        lr=float(doc["optimizer"]["lr"]),
        momentum=float(doc["optimizer"].get("momentum", 0.0)),
        batch_size=int(doc["batch_size"]),
        every=int(doc["every"]),
        epochs=max(1, int(doc["steps"]) // int(doc["steps_per_epoch"])),
        aug_std=float(doc["augment"].get("std", 0.0)),
    )
    return cfg, data


def _final_model(rec):
    from .record import load_state
    from .tasks import model_of_record

    model = model_of_record(rec.doc)
    load_state(model, None, rec.checkpoint(len(rec.entries) - 1))
    return model


def _train_task(args: argparse.Namespace) -> int:
    from .tasks import task_class
    from .train import train_task

    task = task_class(args.task)({"epochs": args.epochs} if args.epochs is not None else None)
    if args.save_model and Path(args.save_model).exists() and not args.overwrite:
        raise FileExistsError(f"{args.save_model}: already exists (pass --overwrite to replace it)")
    path, model, sec = train_task(args.output, task, args.seed, every=args.every, overwrite=args.overwrite)
    res = {"record": str(path), "seconds": sec, "task": task.describe()}
    return _trained(args, model, res, f"wrote {path}: task {task.name}, recorded in {sec:.2f} s")


def _trained(args: argparse.Namespace, model, res: dict, text: str) -> int:
    """Save the trained model when asked (--save-model), then print."""
    if args.save_model:
        from .binding import save_model

        res["model"] = str(save_model(model, args.save_model, overwrite=args.overwrite))
        text += f"; the trained model in {res['model']}"
    _out(args, res, text)
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from .record import split_record

    moved = split_record(args.record, args.store)
    left = sum(f.stat().st_size for f in Path(args.record).rglob("*") if f.is_file())
    _out(
        args,
        {"record": args.record, "store": args.store, "moved_bytes": moved, "record_bytes": left},
        f"moved {moved:,} bytes of checkpoints to {args.store}; the light record {args.record} holds {left:,} bytes",
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .task import accuracy, load_digits_split
    from .train import RunConfig, train_recorded

    _threads(args.threads)
    if args.task != "digits-mlp":
        return _train_task(args)
    if args.epochs is None:
        args.epochs = 4
    cfg = RunConfig(epochs=args.epochs, every=args.every)
    train, test = load_digits_split()
    if args.save_model and Path(args.save_model).exists() and not args.overwrite:
        raise FileExistsError(f"{args.save_model}: already exists (pass --overwrite to replace it)")
    path, model, sec = train_recorded(args.output, cfg, train, args.seed, overwrite=args.overwrite)
    acc = accuracy(model, test)
    res = {"record": str(path), "seconds": sec, "test_accuracy": acc, "config": cfg.as_dict()}
    return _trained(
        args, model, res, f"wrote {path}: {cfg.epochs} epochs recorded in {sec:.2f} s, test accuracy {acc:.3f}"
    )


def cmd_forge(args: argparse.Namespace) -> int:
    from .attacks import forge
    from .record import open_record
    from .verify import check_integrity

    _threads(args.threads)
    rec = open_record(args.source)
    integ = check_integrity(rec)
    if not integ.passed:
        raise ValueError(f"{rec.path}: damaged record: {integ.reason}")
    cfg, data = _recipe(rec)
    t0 = time.perf_counter()
    f = forge(args.attack, args.output, final=_final_model(rec), honest=rec.path, data=data, cfg=cfg, seed=args.seed)
    sec = time.perf_counter() - t0
    res = {"record": str(f.path), "attack": f.attack, "seconds": sec, "notes": f.notes}
    _out(args, res, f"wrote {f.path}: forged by {f.attack} from {rec.path}'s final model in {sec:.2f} s; {f.notes}")
    return 0


def _eval_task(args: argparse.Namespace, log) -> int:
    from .evaluate_task import evaluate_task
    from .tasks import task_class

    task = task_class(args.task)()
    attacks = tuple(a.strip() for a in args.attacks.split(",") if a.strip()) if args.attacks else None
    res = evaluate_task(task, args.seeds, log=log, **({"attacks": attacks} if attacks else {}))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "pot_eval_task.json").write_text(json.dumps(res, indent=1) + "\n")
    s = res["summary"]
    text = f"task {task.name}: honest accepted {s['honest_accepted']}; rejected: " + ", ".join(
        f"{a} {n}" for a, n in s["attacks_rejected"].items()
    )
    _out(args, res, text)
    return 0 if all(r["accepted"] == (r["kind"] == "honest") for r in res["records"]) else 1


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import run_eval, table

    _threads(args.threads)
    log = (lambda s: print(s, file=sys.stderr)) if not args.quiet else (lambda s: None)
    if args.task != "digits-mlp":
        return _eval_task(args, log)
    from .attacks import ATTACKS

    attacks = tuple(a.strip() for a in args.attacks.split(",") if a.strip()) if args.attacks else tuple(ATTACKS)
    bad = [a for a in attacks if a not in ATTACKS]
    if bad:
        raise ValueError(f"unknown attack(s) {', '.join(bad)}; choose from {', '.join(ATTACKS)}")
    res = run_eval(
        args.out, seeds=args.seeds, q=args.q, r=args.r, keep=args.keep, log=log, attacks=attacks, checks=args.checks
    )
    c = res["costs"]
    text = [
        table(res["records"]),
        "",
        f"honest accepted {c['honest_accepted']}, false claims rejected "
        f"{c['forgeries_rejected']}; recorder overhead {c['recorder_overhead_median']:.2f}x",
    ]
    if "replay_over_training_median" in c:
        text.append(
            f"replay verification / training time: median {c['replay_over_training_median']:.3f} "
            f"(max {c['replay_over_training_max']:.3f})"
        )
    if args.out:
        text.append(f"wrote {args.out}/pot_eval.json, .md, .png")
    _out(args, res, "\n".join(text))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fpcore._markers import update_sections

    from .evaluate import bench_table, eval_summary_md

    parts = []
    if args.eval:
        res = json.loads(Path(args.eval).read_text())
        parts.append(("pot-eval", eval_summary_md(res)))
    if args.bench:
        parts.append(("pot-bench", bench_table(json.loads(Path(args.bench).read_text()))))
    if not parts:
        raise ValueError("pot report: pass --eval and/or --bench")
    if args.update:
        # the eval table lives in docs/proof-of-training.md, the bench table in docs/performance.md
        update_sections(args.update, {m: f"{b}\n" for m, b in parts})
    text = "\n\n".join(body for _, body in parts)
    _out(args, {"sections": {m: b for m, b in parts}}, text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .attacks import forge
    from .binding import save_model
    from .task import accuracy, load_digits_split
    from .train import RunConfig, train_plain, train_recorded
    from .verify import verify

    _threads(args.threads)
    out = Path(args.out)
    if out.exists():
        if not (out / "demo.json").is_file():
            raise FileExistsError(f"{out}: exists and is not a previous pot demo folder; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    say = (lambda s: None) if args.quiet or args.json else print
    cfg = RunConfig()
    train, test = load_digits_split()
    say("Proof of training: a model's owner shows the record of the training that produced it.\n")
    say(
        f"1. Alice trains a {cfg.hidden}-unit MLP on scikit-learn's digits ({len(train)} training images), "
        f"recording every step (checkpoint every {cfg.every} steps, hash-chained)."
    )
    hp, final, sec = train_recorded(out / "honest", cfg, train, 0)
    alice = save_model(final, out / "alice-model.safetensors")
    say(f"   {hp}: {sec:.2f} s, test accuracy {accuracy(final, test):.3f}; her model: {alice}")
    results = []
    v = verify(hp, train, test_data=test, seed=1, model=alice)
    say("\n2. A verifier checks Alice's record against her model:\n" + _verdict_text(v))
    results.append({"kind": "honest", **v.as_dict()})
    say("\n3. Mallory trains a model of his own and presents Alice's valid record as the proof for it (substitution):")
    mallory = save_model(train_plain(cfg, train, 7)[0], out / "mallory-model.safetensors")
    sv = verify(hp, train, test_data=test, seed=1, model=mallory)
    say(_verdict_text(sv))
    results.append({"kind": "substitution", **sv.as_dict()})
    for attack, story in (
        (
            "blindfolded",
            "Mallory steals the final model and forges a record: a few real SGD segments per epoch "
            "(the largest, so top-Q replay picks them) and tiny steps towards the stolen weights in between.",
        ),
        (
            "penalty",
            "Mallory trains on the real data but adds an undeclared pull towards the stolen weights, "
            "then ends the record on them.",
        ),
    ):
        say(f"\n{len(results) + 2}. {story}")
        f = forge(attack, out / f"forged-{attack}", final=final, honest=hp, data=train, cfg=cfg, seed=0)
        fv = verify(f.path, train, test_data=test, seed=1, model=alice)
        say(_verdict_text(fv))
        results.append({"kind": attack, **fv.as_dict()})
    ok = results[0]["accepted"] and not any(r["accepted"] for r in results[1:])
    (out / "demo.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    say(
        f"\n{'As expected' if ok else 'UNEXPECTED'}: honest record "
        f"{'accepted' if results[0]['accepted'] else 'rejected'}, "
        f"{sum(not r['accepted'] for r in results[1:])}/{len(results) - 1} false claims rejected. Files in {out}/"
    )
    if args.json:
        _out(args, {"out": str(out), "records": results}, "")
    return 0 if ok else 1


def register(sub, common) -> None:
    p = sub.add_parser("pot", help="proof of training: record, verify, forge, evaluate")
    ps = p.add_subparsers(dest="pot_command", required=True, metavar="POT_COMMAND")

    def threads(sp):
        sp.add_argument(
            "--threads", type=int, default=1, help="torch and fpcore threads (default 1: the models are tiny)"
        )

    v = ps.add_parser(
        "verify", help="verify a record for a model (exit 0 accepted, 1 rejected, 2 damaged or bad input)"
    )
    v.add_argument("record", help="the record folder")
    v.add_argument(
        "--model",
        metavar="M",
        help="the model in dispute (safetensors file or model folder, state_dict names): accepted only if the "
        "record ends at it bit for bit; without it no model is checked",
    )
    v.add_argument("--q", type=int, default=1, help="largest updates replayed per epoch and metric (default 1)")
    v.add_argument("--r", type=int, default=2, help="random segments replayed as well (default 2)")
    v.add_argument("--checks", type=_checks, default=CHECK_NAMES, help=f"comma list from {','.join(CHECK_NAMES)}")
    v.add_argument("--seed", type=int, default=None, help="the verifier's seed (default: fresh randomness)")
    v.add_argument(
        "--soundness",
        type=float,
        metavar="P",
        help="choose R so that a forger who faked --forged-fraction of the segments is missed with chance <= P",
    )
    v.add_argument("--forged-fraction", type=float, default=0.5, help="the forger --soundness is against (0.5)")
    v.add_argument("--workers", type=int, help="replay segments on an embedded Dask LocalCluster of N workers")
    v.add_argument("--scheduler", metavar="ADDRESS", help="replay segments on an existing Dask cluster")
    v.add_argument("--store", metavar="DIR", help="the prover's checkpoint store of a light record (pot split)")
    threads(v)
    common(v)
    v.set_defaults(func=cmd_verify)

    sp = ps.add_parser(
        "split", help="move a record's checkpoints to a store, leaving the light record a claimant hands over"
    )
    sp.add_argument("record", help="the record folder")
    sp.add_argument("--store", required=True, metavar="DIR", help="the checkpoint store (kept by the prover)")
    common(sp)
    sp.set_defaults(func=cmd_split)

    t = ps.add_parser("train", help="train and record an honest run (digits-mlp, tiny-lm, or a registered task)")
    t.add_argument("-o", "--output", required=True, help="the record folder to write")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int, default=None, help="epochs (default: the task's; digits-mlp 4)")
    t.add_argument(
        "--task", default="digits-mlp", help="digits-mlp (default), tiny-lm, or a task registered via fpcore.pot_tasks"
    )
    t.add_argument("--every", type=int, default=4, help="checkpoint interval k in steps")
    t.add_argument("--save-model", metavar="M", help="also write the trained model here (.safetensors)")
    t.add_argument("--overwrite", action="store_true")
    threads(t)
    common(t)
    t.set_defaults(func=cmd_train)

    from .attacks import ATTACKS

    f = ps.add_parser("forge", help="forge a record for an honest record's final model (for evaluation)")
    f.add_argument("--attack", required=True, choices=list(ATTACKS))
    f.add_argument("--from", dest="source", required=True, help="the honest record whose final model is stolen")
    f.add_argument("-o", "--output", required=True, help="the forged record folder to write")
    f.add_argument("--seed", type=int, default=0)
    threads(f)
    common(f)
    f.set_defaults(func=cmd_forge)

    e = ps.add_parser("eval", help="honest runs and every attack on digits, every verifier: the table")
    e.add_argument("--seeds", type=int, default=5)
    e.add_argument("--task", default="digits-mlp", help="digits-mlp (default: the full table), tiny-lm, or a task")
    e.add_argument("--q", type=int, default=1)
    e.add_argument("--r", type=int, default=2)
    e.add_argument("--out", default=None, help="write pot_eval.json / .md / .png here")
    e.add_argument("--keep", default=None, help="keep the records in this folder (default: a temporary one)")
    e.add_argument("--attacks", default=None, help="comma list of attacks (default: all)")
    e.add_argument("--checks", type=_checks, default=CHECK_NAMES, help=f"comma list from {','.join(CHECK_NAMES)}")
    threads(e)
    common(e)
    e.set_defaults(func=cmd_eval)

    rp = ps.add_parser("report", help="tables from pot_eval.json / bench_pot JSON (optionally into the docs pages)")
    rp.add_argument("--eval", help="pot_eval.json written by `fpcore pot eval --out`")
    rp.add_argument("--bench", help="pytest-benchmark JSON of benchmarks/bench_pot.py")
    rp.add_argument(
        "--update",
        action="append",
        metavar="PAGE",
        help="rewrite the perf-pot-eval / perf-pot-bench sections of the pages that hold them (repeatable: "
        "docs/proof-of-training.md holds the eval table, docs/performance.md the bench table)",
    )
    rp.add_argument("--update-readme", dest="update", action="append", help=argparse.SUPPRESS)  # the old name
    common(rp)
    rp.set_defaults(func=cmd_report)

    d = ps.add_parser(
        "demo", help="a short story: one honest record accepted; a substituted model and two forgeries rejected"
    )
    d.add_argument("--out", default="pot-demo", help="folder for the demo's records (default ./pot-demo)")
    threads(d)
    common(d)
    d.set_defaults(func=cmd_demo)
