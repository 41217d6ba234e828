"""The attack suite on a task (`fpcore pot eval --task tiny-lm`): per seed an honest record of the task,
verified, then every attack of fpcore.pot.attacks_task forged against its final model and verified
(integrity, data, init, replay with R for a miss chance <= soundness against a 50 % forger)."""

from __future__ import annotations

import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .attacks_task import TASK_ATTACKS, forge_task
from .tasks import Task
from .train import train_task
from .verify import verify

CHECKS = ("integrity", "data", "init", "replay")


def _row(kind: str, seed: int, v) -> dict:
    rp = v.checks.get("replay")
    figs = None
    if rp is not None and rp.figures:
        keep = ("segments", "replayed", "worst_over_delta", "top_q_passed", "random_passed", "step_digests")
        figs = {k: rp.figures.get(k) for k in keep}
        figs |= {"miss_f50": rp.figures["soundness"]["miss_f50"], "miss_f05": rp.figures["soundness"]["miss_f05"]}
    return {
        "kind": kind,
        "seed": seed,
        "accepted": v.accepted,
        "failed": [k for k, c in v.checks.items() if c.passed is False],
        "reasons": {k: c.reason for k, c in v.checks.items() if c.passed is False},
        "replay": figs,
    }


def evaluate_task(
    task: Task,
    seeds: int,
    *,
    attacks: tuple[str, ...] = TASK_ATTACKS,
    soundness: float = 1e-6,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    """{task, checks, soundness, seeds, seconds, machine, summary, records: [{kind, seed, accepted, ...}]}."""
    bad = [a for a in attacks if a not in TASK_ATTACKS]
    if bad:
        raise ValueError(f"unknown task attack(s) {', '.join(bad)}; choose from {', '.join(TASK_ATTACKS)}")
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            root = Path(tmp) / f"s{seed}"
            root.mkdir()
            hp, final, _ = train_task(root / "honest", task, seed)
            rows.append(_row("honest", seed, verify(hp, checks=CHECKS, seed=100 + seed, soundness=soundness)))
            for a in attacks:
                fg = forge_task(a, root / a, final, hp, seed)
                rows.append(_row(a, seed, verify(fg.path, checks=CHECKS, seed=100 + seed, soundness=soundness)))
                shutil.rmtree(fg.path, ignore_errors=True)
            done = rows[-(len(attacks) + 1) :]
            log(
                f"seed {seed}: " + ", ".join(f"{r['kind']} {'accepted' if r['accepted'] else 'rejected'}" for r in done)
            )
    summary = {
        "honest_accepted": f"{sum(r['accepted'] for r in rows if r['kind'] == 'honest')}/{seeds}",
        "attacks_rejected": {a: f"{sum(not r['accepted'] for r in rows if r['kind'] == a)}/{seeds}" for a in attacks},
    }
    return {
        "task": task.describe(),
        "checks": list(CHECKS),
        "soundness": soundness,
        "seeds": seeds,
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": platform.processor() or platform.machine(),
        "summary": summary,
        "records": rows,
    }
