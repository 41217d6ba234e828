"""The attack suite on tiny-lm across seeds: `python -m benchmarks.pot_lm_study [--seeds 3] [--out DIR]`.

Per seed: an honest tiny-lm record (AdamW, dropout, warm-up + cosine, clipping; 128 KiB of the
documentation, 256 steps, a checkpoint every 4) verified, then every attack of fpcore.pot.attacks_task
forged against its final model and verified (integrity, data, init, replay with R for a 1e-6 miss chance
against a 50 % forger). Writes docs/pot/lm_study.json: per record its verdict, the checks that failed and
the replay figures; and a summary (honest accepted, attacks rejected, per attack)."""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from fpcore.pot.attacks_task import TASK_ATTACKS, forge_task
from fpcore.pot.tasks import TinyLM
from fpcore.pot.train import train_task
from fpcore.pot.verify import verify

CHECKS = ("integrity", "data", "init", "replay")
CONFIG = {"corpus_bytes": 131072, "warmup": 16}


def _row(kind: str, seed: int, v) -> dict:
    rp = v.checks.get("replay")
    return {
        "kind": kind,
        "seed": seed,
        "accepted": v.accepted,
        "failed": [k for k, c in v.checks.items() if c.passed is False],
        "reasons": {k: c.reason for k, c in v.checks.items() if c.passed is False},
        "replay": None
        if rp is None or not rp.figures
        else {
            k: rp.figures.get(k)
            for k in ("segments", "replayed", "worst_over_delta", "top_q_passed", "random_passed", "step_digests")
        }
        | {"miss_f50": rp.figures["soundness"]["miss_f50"], "miss_f05": rp.figures["soundness"]["miss_f05"]},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="docs/pot")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    task = TinyLM(CONFIG)
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            root = Path(tmp) / f"s{seed}"
            root.mkdir()
            hp, final, _ = train_task(root / "honest", task, seed)
            rows.append(_row("honest", seed, verify(hp, checks=CHECKS, seed=100 + seed, soundness=1e-6)))
            for a in TASK_ATTACKS:
                fg = forge_task(a, root / a, final, hp, seed)
                rows.append(_row(a, seed, verify(fg.path, checks=CHECKS, seed=100 + seed, soundness=1e-6)))
                shutil.rmtree(fg.path, ignore_errors=True)
            print(f"seed {seed}: " + ", ".join(f"{r['kind']} {'A' if r['accepted'] else 'R'}" for r in rows[-8:]))
    summary = {
        "honest_accepted": f"{sum(r['accepted'] for r in rows if r['kind'] == 'honest')}/{args.seeds}",
        "attacks_rejected": {
            a: f"{sum(not r['accepted'] for r in rows if r['kind'] == a)}/{args.seeds}" for a in TASK_ATTACKS
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "task": task.describe(),
        "checks": CHECKS,
        "soundness": 1e-6,
        "seeds": args.seeds,
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": platform.processor() or platform.machine(),
        "summary": summary,
        "records": rows,
    }
    (out / "lm_study.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
