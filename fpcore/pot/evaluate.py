"""`fpcore pot eval`: honest runs and every attack on scikit-learn's digits, every verifier on each record.

Per seed: one honest recorded run (its final model is what the forgers steal), the same training without a
Recorder (the overhead baseline and the training compute replay is compared with), then each attack, then
verify() on every record. Writes pot_eval.json, pot_eval.md and pot_eval.png into the output folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fpcore.io import AtomicOutput

from .attacks import ATTACKS, forge
from .record import open_record
from .task import accuracy, load_digits_split
from .train import RunConfig, train_plain, train_recorded
from .verify import CHECKS, Verdict, check_integrity, check_replay, update_profile, verify

TIMING_REPS = 3
COLUMNS = (
    "integrity",
    "binding",
    "data",
    "init",
    "replay:top-Q",
    "replay:random",
    "replay:profile",
    "replay",
    "matching",
)
# Claims that present a valid honest record for a model it does not end at (see binding.py): another run's
# model (substitution), and the record's own final model with one weight moved by one ulp.
BINDING_ATTACKS = {"substitution": "g", "one-element": "g'"}


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def verdict_json(kind: str, seed: int, v: Verdict, **extra) -> dict:
    return {"kind": kind, "seed": seed, **v.as_dict(), **extra}


def _cell(rec: dict, col: str) -> bool | None:
    """passed (True/False) of a column for one record; None when it did not run."""
    if col.startswith("replay:"):
        c = rec["checks"].get("replay", {})
        key = {"top-Q": "top_q_passed", "random": "random_passed", "profile": "profile_passed"}[col[7:]]
        return c.get(key) if c.get("passed") is not None else None
    c = rec["checks"].get(col)
    return None if c is None else c.get("passed")


def table(records: list[dict]) -> str:
    """Markdown: kind x verifier -> rejections / runs, and the combined verdict."""
    kinds = list(dict.fromkeys(r["kind"] for r in records))
    head = "| record | " + " | ".join(COLUMNS) + " | combined verdict | key figures |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for k in kinds:
        rs = [r for r in records if r["kind"] == k]
        cells = []
        for col in COLUMNS:
            vals = [_cell(r, col) for r in rs]
            ran = [x for x in vals if x is not None]
            cells.append("skipped" if not ran else f"rejects {sum(1 for x in ran if x is False)}/{len(ran)}")
        acc = sum(r["accepted"] for r in rs)
        verdict = f"**accepted {acc}/{len(rs)}**" if k == "honest" else f"**rejected {len(rs) - acc}/{len(rs)}**"
        figs = []
        rp = [r["checks"]["replay"] for r in rs if r["checks"].get("replay", {}).get("passed") is not None]
        if rp:
            w = [c["worst_over_delta"] for c in rp]
            figs.append(f"replay worst/δ {min(w):.3g}–{max(w):.3g}")
            figs.append(
                f"spikiness {min(c['profile_spikiness'] for c in rp):.1f}–{max(c['profile_spikiness'] for c in rp):.1f}"
            )
        mt = [r["checks"]["matching"] for r in rs if r["checks"].get("matching", {}).get("passed") is not None]
        if mt:
            figs.append(f"distilled acc {min(c['accuracy'] for c in mt):.2f}–{max(c['accuracy'] for c in mt):.2f}")
        it = [r["checks"]["init"] for r in rs if r["checks"].get("init", {}).get("passed") is not None]
        if it:
            figs.append(f"KS p_min {min(c['p_min'] for c in it):.2g}")
        label = ATTACKS[k][0] if k in ATTACKS else BINDING_ATTACKS.get(k)
        name = f"({label}) {k}" if label else k
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {verdict} | {'; '.join(figs)} |")
    return "\n".join(lines)


def run_eval(
    out: str | Path | None,
    *,
    seeds: int = 5,
    cfg: RunConfig | None = None,
    attacks: tuple[str, ...] = tuple(ATTACKS),
    checks: tuple[str, ...] = CHECKS,
    q: int = 1,
    r: int = 2,
    keep: str | Path | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict:
    cfg = cfg or RunConfig()
    train, test = load_digits_split()
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="fpcore-pot-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    records, costs, profiles = [], [], {}
    for seed in range(seeds):
        sd = work / f"seed{seed}"
        sd.mkdir(exist_ok=True)
        # Timings are medians of TIMING_REPS runs. The recorded runs come first (each pays its own file I/O);
        # then os.sync() so the kernel's write-back of those files does not steal the CPU from what follows,
        # and the plain loop and the replay check are timed in alternation, under the same conditions.
        recorded = []
        for i in range(TIMING_REPS):
            dest = sd / ("honest" if i == 0 else f"timing{i}")
            path, model, sec = train_recorded(dest, cfg, train, seed, overwrite=True)
            recorded.append(sec)
            if i == 0:
                hp, final = path, model
            else:
                shutil.rmtree(path)
        os.sync()
        stolen = final.state_dict()  # the model every claim below is about
        v = verify(hp, train, test_data=test, checks=checks, q=q, r=r, seed=1000 + seed, model=stolen)
        rep = v.checks.get("replay")
        timed_replay = rep is not None and rep.passed is not None
        plain, replay_s = [], []
        for _ in range(TIMING_REPS):
            plain.append(train_plain(cfg, train, seed)[1])
            if timed_replay:  # as inside verify(): integrity first, then replay
                again = open_record(hp)
                check_integrity(again)
                t0 = time.perf_counter()
                check_replay(again, train, q=q, r=r, seed=1000 + seed)
                replay_s.append(time.perf_counter() - t0)
        plain_s, rec_s = float(np.median(plain)), float(np.median(recorded))
        cost = {
            "seed": seed,
            "timing_reps": TIMING_REPS,
            "train_plain_s": plain_s,
            "train_recorded_s": rec_s,
            "recorder_overhead": rec_s / plain_s,
            "verify_s": sum(c.seconds for c in v.checks.values()),
            "final_test_accuracy": accuracy(final, test),
        }
        if timed_replay:
            steps = open_record(hp).doc["steps"]
            cost |= {
                "replay_s": float(np.median(replay_s)),
                "replay_over_training": float(np.median(replay_s)) / plain_s,
                "replayed_steps_fraction": (rep.figures["replayed_steps"] + rep.figures["calibration_steps"]) / steps,
            }
        if "matching" in v.checks:
            cost["matching_s"] = v.checks["matching"].seconds
            cost["matching_over_training"] = v.checks["matching"].seconds / plain_s
        costs.append(cost)
        records.append(verdict_json("honest", seed, v))
        log(f"seed {seed} honest: {'accepted' if v.accepted else 'REJECTED: ' + '; '.join(v.reasons())}")
        other = train_plain(cfg, train, seed + 10_000)[0]  # another run of the same recipe
        for name, claimed in (("substitution", other.state_dict()), ("one-element", one_ulp_off(stolen))):
            bv = verify(hp, train, test_data=test, checks=checks, q=q, r=r, seed=1000 + seed, model=claimed)
            records.append(verdict_json(name, seed, bv))
            log(f"seed {seed} {name}: {'ACCEPTED' if bv.accepted else 'rejected: ' + '; '.join(bv.reasons())[:160]}")
        if seed == 0:
            profiles["honest"] = update_profile(open_record(hp))["l2"]
        for name in attacks:
            t0 = time.perf_counter()
            fg = forge(name, sd / name, final=final, honest=hp, data=train, cfg=cfg, seed=seed)
            forge_s = time.perf_counter() - t0
            fv = verify(fg.path, train, test_data=test, checks=checks, q=q, r=r, seed=1000 + seed, model=stolen)
            extra = {"forge_s": forge_s, "notes": fg.notes}
            if fg.data is not None:  # what replay would say if the verifier took the prover's data
                sv = verify(fg.path, fg.data, checks=("integrity", "data", "replay"), q=q, r=r, seed=1000 + seed)
                extra["replay_on_prover_data"] = {
                    "passed": sv.checks["replay"].passed,
                    "reason": sv.checks["replay"].reason,
                }
            records.append(verdict_json(name, seed, fv, **extra))
            log(f"seed {seed} {name}: {'ACCEPTED' if fv.accepted else 'rejected: ' + '; '.join(fv.reasons())[:160]}")
            if seed == 0 and fv.checks["integrity"].passed:
                profiles[name] = update_profile(open_record(fg.path))["l2"]
    summary = _summary(records, costs)
    result = {
        "config": cfg.as_dict(),
        "q": q,
        "r": r,
        "checks": list(checks),
        "seeds": seeds,
        "records": records,
        "costs": {"per_seed": costs, **summary},
    }
    result = _jsonable(result)
    if out is not None:
        write_outputs(Path(out), result, profiles)
    return result


def one_ulp_off(state: dict) -> dict:
    """A copy of a state_dict with one element of its first floating-point tensor moved by one ulp."""
    out = {n: t.detach().clone() for n, t in state.items()}
    name = next(n for n, t in out.items() if t.is_floating_point() and t.numel())
    flat = out[name].view(-1)
    flat[0] = torch.nextafter(flat[0], torch.tensor(float("inf"), dtype=flat.dtype))
    return out


def _summary(records: list[dict], costs: list[dict]) -> dict:
    honest = [r for r in records if r["kind"] == "honest"]
    s: dict = {
        "honest_accepted": f"{sum(r['accepted'] for r in honest)}/{len(honest)}",
        "forgeries_rejected": f"{sum(not r['accepted'] for r in records if r['kind'] != 'honest')}/"
        f"{sum(1 for r in records if r['kind'] != 'honest')}",
        "recorder_overhead_median": float(np.median([c["recorder_overhead"] for c in costs])),
    }
    if all("replay_over_training" in c for c in costs):
        s["replay_over_training_median"] = float(np.median([c["replay_over_training"] for c in costs]))
        s["replay_over_training_max"] = float(np.max([c["replay_over_training"] for c in costs]))
        s["replayed_steps_fraction_median"] = float(np.median([c["replayed_steps_fraction"] for c in costs]))
    if all("matching_over_training" in c for c in costs):
        s["matching_over_training_median"] = float(np.median([c["matching_over_training"] for c in costs]))
    return s


def write_outputs(out: Path, result: dict, profiles: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with AtomicOutput(out / "pot_eval.json", overwrite=True, is_file=True) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    md = [f"# Proof of training on digits: {result['seeds']} seeds", "", eval_summary_md(result)]
    with AtomicOutput(out / "pot_eval.md", overwrite=True, is_file=True) as tmp:
        tmp.write_text("\n".join(md) + "\n")
    _plot(out / "pot_eval.png", result, profiles)


def _plot(path: Path, result: dict, profiles: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.5))
    for name, prof in profiles.items():
        x = np.linspace(0, 1, len(prof))
        a1.plot(
            x,
            prof,
            lw=1.6 if name == "honest" else 0.8,
            label=f"{name} ({len(prof)} segments)",
            color="black" if name == "honest" else None,
        )
    a1.set_yscale("log")
    a1.set_xlabel("position in the record (fraction of segments)")
    a1.set_ylabel("segment update size, l2")
    a1.set_title("update-size profiles (seed 0)")
    a1.legend(fontsize=7)
    kinds = list(dict.fromkeys(r["kind"] for r in result["records"]))
    for i, k in enumerate(kinds):
        accs = [
            r["checks"]["matching"]["accuracy"]
            for r in result["records"]
            if r["kind"] == k and r["checks"].get("matching", {}).get("accuracy") is not None
        ]
        a2.scatter([i] * len(accs), accs, color="black" if k == "honest" else "tab:red", s=18)
    a2.axhline(0.1, ls=":", color="gray", label="chance")
    from .matching import MIN_ACCURACY

    a2.axhline(MIN_ACCURACY, ls="--", color="tab:blue", label=f"threshold {MIN_ACCURACY}")
    a2.set_xticks(range(len(kinds)), kinds, rotation=30, ha="right", fontsize=8)
    a2.set_ylabel("held-out accuracy of nets trained on the distilled set")
    a2.set_title("trajectory matching")
    a2.legend(fontsize=7)
    fig.tight_layout()
    with AtomicOutput(path, overwrite=True, is_file=True) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def bench_table(bench: dict) -> str:
    """Markdown rows of benchmarks/bench_pot.py's JSON: medians and the same-run ratios."""
    lines = [
        "| benchmark | median ms | ratio (same run) |",
        "|---|---:|---|",
    ]
    keys = ("recorder_overhead", "step_share", "finish_share", "replay_over_training", "matching_over_training")
    for b in bench["benchmarks"]:
        if b.get("group") != "pot":
            continue
        ex = b.get("extra_info", {})
        ratios = ", ".join(f"{k} {ex[k]:.3g}" for k in keys if k in ex) or "baseline"
        lines.append(f"| {b['name'].removeprefix('test_')} | {b['stats']['median'] * 1e3:.1f} | {ratios} |")
    return "\n".join(lines)


def eval_summary_md(result: dict) -> str:
    """The eval table and its cost lines, as pot_eval.md holds them (without the title)."""
    c = result["costs"]
    md = [
        f"Recipe: {result['config']}; replay Q={result['q']} per epoch per metric (union), R={result['r']} "
        f"random; {result['seeds']} seeds.",
        "",
        table(result["records"]),
        "",
        f"- honest accepted {c['honest_accepted']}, false claims rejected {c['forgeries_rejected']}",
        f"- timings per seed are medians of {c['per_seed'][0].get('timing_reps', 1)} runs; below, the median and max "
        "over seeds",
        f"- recorder overhead (recorded / plain training time, median): {c['recorder_overhead_median']:.2f}x",
    ]
    if "replay_over_training_median" in c:
        md.append(
            f"- replay verification / training time: median {c['replay_over_training_median']:.3f}, max "
            f"{c['replay_over_training_max']:.3f}; steps replayed (incl. float64 calibration) "
            f"{c['replayed_steps_fraction_median']:.3f} of the run"
        )
    if "matching_over_training_median" in c:
        md.append(f"- trajectory matching / training time: median {c['matching_over_training_median']:.2f}")
    return "\n".join(md)
