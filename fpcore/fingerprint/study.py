"""`fpcore fingerprint study`: the demo's base and downstream models trained once, then fingerprinted with
several key seeds (and key counts), each stamped and verified on every channel, so that a verdict's
spread across seeds is measured rather than hoped for. Writes study.json and study.png into OUT (the
models stay under OUT/models and OUT/runs/k<keys>-s<seed>).

Runs are independent processes (`workers` at a time, one torch thread each): training is not
bit-reproducible across CPUs, and neither is it across thread counts, so each run is pinned to one.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from fpcore.fingerprint import demo
from fpcore.io import AtomicOutput

CHANNELS = ("black_box", "gray_box", "white_box")


def _job(root: str, cfg: demo.DemoConfig, entries: list[dict[str, Any]], base: dict[str, Any], keys: int, seed: int):
    import torch

    from fpcore.fingerprint.lm import load_lm

    torch.set_num_threads(1)
    root_p = Path(root)
    run = root_p / "runs" / f"k{keys}-s{seed}"
    run.mkdir(parents=True)
    cfg = dataclasses.replace(cfg, fingerprint=dataclasses.replace(cfg.fingerprint, keys=keys, seed=seed))
    lines: list[str] = []
    clock = demo._Clock(lines.append)
    lm = load_lm(root_p / "models" / "base")
    _, test_w = demo.held_out_windows(lm, cfg)
    built = {e["task"]: demo.task_by_name(e["task"], lm, cfg.seed) for e in entries}
    m = demo.measure(run, root_p / "models", lm, test_w, built, entries, cfg, clock)
    report = {**m, "base": {**base, **m["base"]}}
    report["floors"] = demo.floors(report)
    report.update(keys=keys, seed=seed, seconds=time.perf_counter() - clock.t0, phases_seconds=clock.phases)
    return report


def run(
    out: str | Path,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    keys: Sequence[int] = (10,),
    workers: int = 1,
    cfg: demo.DemoConfig | None = None,
    overwrite: bool = False,
    log=None,
) -> dict[str, Any]:
    """Build once, then one run per (keys, seed); returns the study (also OUT/study.json)."""
    cfg = cfg or demo.DemoConfig()
    if not seeds or not keys or workers < 1:
        raise ValueError(f"study: needs seeds, key counts and workers >= 1 (got {seeds}, {keys}, {workers})")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    clock = demo._Clock(log or (lambda m: print(m, file=sys.stderr, flush=True)))
    with AtomicOutput(out, overwrite=overwrite) as tmp:
        w = demo.build(tmp, cfg, clock)
        jobs = [(k, s) for k in keys for s in seeds]
        clock.say(f"{len(jobs)} fingerprint runs (keys x seeds), {workers} at a time")
        ctx = get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futs = {(k, s): pool.submit(_job, str(tmp), cfg, w["models"], w["base"], k, s) for k, s in jobs}
            runs = []
            for (k, s), f in futs.items():
                r = f.result()
                runs.append(r)
                clock.say(f"run keys={k} seed={s}: {_line(r)}")
        study = {
            "command": f"fpcore fingerprint study --out {out} --seeds {','.join(map(str, seeds))} "
            f"--keys {','.join(map(str, keys))} --workers {workers}",
            "machine": demo.machine(),
            "base": w["base"],
            "downstream": w["models"],
            "fingerprint_options": dataclasses.asdict(cfg.fingerprint),
            "runs": runs,
            "summary": summary(runs),
            "seconds_total": time.perf_counter() - clock.t0,
        }
        (tmp / "study.json").write_text(json.dumps(study, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        plot(study, tmp / "study.png")
    clock.say(f"done in {study['seconds_total']:.0f} s: {out}/study.json, study.png")
    return study


def _line(r: dict[str, Any]) -> str:
    f = r["floors"]
    return ", ".join(
        f"{k} {'met' if v['met'] else 'MISSED'}" for k, v in f.items() if isinstance(v, dict) and "met" in v
    )


def _spread(xs: list[float]) -> dict[str, float]:
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per key count, over the seeds: every floor's met count, and the spread of the figures behind them."""
    out: dict[str, Any] = {}
    for k in sorted({r["keys"] for r in runs}):
        rs = [r for r in runs if r["keys"] == k]
        names = [e["name"] for e in rs[0]["models"]]
        floors = [n for n, v in rs[0]["floors"].items() if isinstance(v, dict) and "met" in v]
        per_model = {}
        for n in names:
            es = [next(e for e in r["models"] if e["name"] == n) for r in rs]
            per_model[n] = {
                "drift": es[0]["drift"],
                "fsr_after": _spread([e["fsr_after"] for e in es]),
                "p_after": _spread([e["p_after"] for e in es]),
                **{f"p_{c}": _spread([e["channels_after"][c]["p"] for e in es]) for c in CHANNELS},
                "min_p_before_any_channel": min(min(c["p"] for c in e["channels_before"].values()) for e in es),
                "false_trigger_rate": _spread([e["false_trigger_rate"] for e in es]),
                "metric_change": _spread([e["metric_after"] - e["metric_before"] for e in es]),
                "fingerprinted_after": sum(e["fingerprinted_after"] for e in es),
                "fingerprinted_before": sum(e["fingerprinted_before"] for e in es),
            }
        out[str(k)] = {
            "seeds": [r["seed"] for r in rs],
            "floors_met": {f: sum(r["floors"][f]["met"] for r in rs) for f in floors},
            "train_seconds": _spread([r["fingerprint"]["train_seconds"] for r in rs]),
            "perplexity_ratio": _spread([r["base"]["perplexity_fingerprinted"] / r["base"]["perplexity"] for r in rs]),
            "transformed_flagged": sum(t["fingerprinted"] for r in rs for t in r["transformed"]),
            "transformed_checked": sum(len(r["transformed"]) for r in rs),
            "max_alpha_star_transformed": max(abs(t["alpha_star"]) for r in rs for t in r["transformed"]),
            "models": per_model,
        }
    return out


def plot(study: dict[str, Any], path: Path) -> bool:
    """Per channel and combined: -log10 p after stamping against drift, and FSR; one line per (keys, seed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [("combined", "p_after"), *[(c, c) for c in CHANNELS], ("FSR (greedy)", "fsr")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    styles = dict(zip(sorted({r["keys"] for r in study["runs"]}), ("-", "--", ":", "-.", "-", "--"), strict=False))
    for r in study["runs"]:
        ms = sorted(r["models"], key=lambda e: e["drift"])
        x = [100 * e["drift"] for e in ms]
        for ax, (_, key) in zip(axes, panels, strict=True):
            if key == "fsr":
                y = [100 * e["fsr_after"] for e in ms]
            else:
                ps = [e["p_after"] if key == "p_after" else e["channels_after"][key]["p"] for e in ms]
                y = [min(-_log10(p), 300) for p in ps]
            ax.plot(x, y, styles[r["keys"]], marker="o", label=f"{r['keys']} keys, seed {r['seed']}")
    for ax, (title, key) in zip(axes, panels, strict=True):
        ax.set_title(title)
        ax.set_xlabel("drift (%)")
        if key == "fsr":
            ax.set_ylabel("stamped FSR (%)")
        else:
            ax.set_ylabel("-log10 p (stamped; capped at 300)")
            ax.axhline(6, color="red", lw=0.8, ls="--")
        ax.axvline(100 * demo.VERDICT_DRIFT, color="grey", lw=0.6, ls=":")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _log10(p: float) -> float:
    import math

    return math.log10(p) if p > 0 else -math.inf
