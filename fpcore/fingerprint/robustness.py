"""Attacks x channels: what each of a thief's attacks leaves of the fingerprint and of the licensee code
(`fpcore fingerprint robustness`).

For every downstream model (unstamped U, and S = U stamped with tau and a licensee code in one pass),
for every attack of the grid, applied to S and to U alike:
- black-box and gray-box: `verify` without the vector (keys asked, target scored);
- white-box: `detect` after alignment against the base (`fpcore align`);
- licensee code: `trace` on the same aligned copy, against U stamped with tau alone (the owner rebuilds it: what
  is left between a copy and it is the code), among `candidates` ids (the models' names, which are
  their licensee ids, and other customers');
- the task metric after the attack, against S's.
A row per (model, attack, copy). S must be found on white-box and code after every attack that keeps
the task metric within 5 % of S's; U must be flagged by nothing, ever.

The trace key is derived from the seed (a study's key, not a customer's): runs are reproducible.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpcore.fingerprint.attacks import AttackOptions

GRID: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("none", "none", {}),
    ("int8", "int8", {}),
    ("int4", "int4", {"group": 32}),
    ("prune 30 %", "prune", {"fraction": 0.3}),
    ("noise 1 %", "noise", {"sigma": 0.01}),
    ("permute MLP", "permute_mlp", {}),
    ("permute heads", "permute_heads", {}),
    ("permute residual", "permute_residual", {}),
    ("rescale norms", "rescale_norms", {}),
    ("fine-tune to 10 % drift", "finetune", {"drift": 0.1}),
    ("merge 0.25", "merge", {"weight": 0.25}),
    ("merge 0.5", "merge", {"weight": 0.5}),
    ("merge 0.75", "merge", {"weight": 0.75}),
)
METRIC_TOLERANCE = 0.05


@dataclass(frozen=True)
class Subject:
    name: str
    model: Path  # unstamped (U)
    task: str  # demo task name, for the metric and the fine-tune attack


def study_key(seed: int):
    from fpcore.trace.key import TraceKey

    return TraceKey(hashlib.sha256(f"fpcore robustness key {seed}".encode()).digest())


def _metric_ok(before: float, after: float, higher_is_better: bool) -> bool:
    if higher_is_better:
        return after >= before * (1 - METRIC_TOLERANCE)
    return after <= before * (1 + METRIC_TOLERANCE)


def run(
    base: Path,
    vector: Path,
    secret: Path,
    subjects: Sequence[Subject],
    *,
    attacks: Sequence[str] | None = None,
    seed: int = 0,
    candidates: int = 10_000,
    lookalikes: int = 100,
    ordinary: int = 100,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The rows (module doc) and a summary per attack."""
    from fpcore import stamping
    from fpcore.detect import detect
    from fpcore.fingerprint import demo
    from fpcore.fingerprint.align import aligned
    from fpcore.fingerprint.attacks import attack_model
    from fpcore.fingerprint.lm import load_lm
    from fpcore.fingerprint.secret import Secret
    from fpcore.fingerprint.verify import verify
    from fpcore.trace.find import trace

    say = log or (lambda m: None)
    grid = [g for g in GRID if attacks is None or g[0] in attacks or g[1] in attacks]
    if not grid:
        raise ValueError(f"robustness: no attack of the grid matches {list(attacks or [])}")
    if any(g[1] == "merge" for g in grid) and len(subjects) < 2:
        raise ValueError("robustness: merges need at least two models (each is merged with the next)")
    key = study_key(seed)
    sec = Secret.load(secret)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fpcore-robustness-") as tmp_s:
        tmp = Path(tmp_s)
        names = [s.name for s in subjects]
        ids = names + [f"customer-{i}" for i in range(max(0, candidates - len(names)))]
        (tmp / "stamped").mkdir()
        stamped = [tmp / "stamped" / s.name for s in subjects]
        stamping.stamp(
            [(vector, 1.0)], [s.model for s in subjects], None, outputs=stamped, trace_key=key, licensees=names
        )
        # the trace reference: each model with tau alone (the owner can rebuild it), so that what is
        # left between a copy and it is the code (and the attack)
        (tmp / "reference").mkdir()
        refs = [tmp / "reference" / s.name for s in subjects]
        stamping.stamp([(vector, 1.0)], [s.model for s in subjects], None, outputs=refs)
        for k, sub in enumerate(subjects):
            other = subjects[(k + 1) % len(subjects)].model
            lm_s = load_lm(stamped[k])
            task = demo.task_by_name(sub.task, lm_s, seed)
            metric_s = task.evaluate(lm_s)
            for label, name, kw in grid:
                for copy, src in (("stamped", stamped[k]), ("unstamped", sub.model)):
                    out = tmp / "attacked"
                    shutil.rmtree(out, ignore_errors=True)
                    if name == "none":
                        target = src
                    else:
                        opts = AttackOptions(seed=seed, task=sub.task, **kw)
                        attack_model(name, src, out, opts, other=other if name == "merge" else None)
                        target = out
                    lm = load_lm(target)
                    v = verify(lm, sec, lookalikes=lookalikes, ordinary=ordinary, samples=0, seed=seed)
                    # one alignment serves both: base, U and U + tau share one order and one scaling
                    with aligned(target, base, True) as (a_path, rep):
                        w = detect(vector, a_path, base)
                        tr = trace(a_path, refs[k], key, ids)
                    metric = task.evaluate(lm)
                    row = {
                        "model": sub.name,
                        "attack": label,
                        "copy": copy,
                        "metric": metric,
                        "metric_stamped": metric_s,
                        "metric_kept": _metric_ok(metric_s, metric, task.higher_is_better),
                        "fsr": v.fsr,
                        "black_box_p": v.channels["black_box"]["p"],
                        "gray_box_p": v.channels["gray_box"]["p"],
                        "white_box_p": w.p,
                        "white_box_alpha_star": w.alpha_star,
                        "alignment_quality": rep.quality if rep else None,
                        "code_identified": [c.licensee for c in tr.identified],
                        "code_p": tr.identified[0].p if tr.identified else None,
                    }
                    rows.append(row)
                    say(
                        f"{sub.name} {copy:9s} {label:24s} FSR {v.fsr:4.0%}  black {row['black_box_p']:.2g}  "
                        f"gray {row['gray_box_p']:.2g}  white {w.p:.2g} (alpha* {w.alpha_star:.2f})  "
                        f"code {row['code_identified'] or '-'}  {task.metric_name} {metric:.3g}"
                    )
    return {
        "seed": seed,
        "key_seed": sec.seed,
        "vector_digest": sec.vector_digest,
        "machine": f"{demo.machine()['cpu']}, {os.cpu_count()} cores",
        "candidates": candidates,
        "rows": rows,
        "summary": summary(rows),
        "seconds": time.perf_counter() - t0,
    }


def summary(rows: list[dict[str, Any]], significance: float = 1e-6) -> dict[str, Any]:
    """Per attack: stamped copies found (white-box, code; among those whose metric stayed within 5 %),
    black-/gray-box found, and unstamped copies flagged on any channel (must be 0)."""
    out: dict[str, Any] = {}
    for label in dict.fromkeys(r["attack"] for r in rows):
        s = [r for r in rows if r["attack"] == label and r["copy"] == "stamped"]
        u = [r for r in rows if r["attack"] == label and r["copy"] == "unstamped"]
        kept = [r for r in s if r["metric_kept"]]
        out[label] = {
            "stamped": len(s),
            "metric_kept": len(kept),
            "white_box_found": sum(r["white_box_p"] < significance for r in kept),
            "code_found": sum(r["code_identified"] == [r["model"]] for r in kept),
            "white_box_found_all": sum(r["white_box_p"] < significance for r in s),
            "code_found_all": sum(r["code_identified"] == [r["model"]] for r in s),
            "black_box_found": sum(r["black_box_p"] < significance for r in s),
            "gray_box_found": sum(r["gray_box_p"] < significance for r in s),
            "unstamped_flagged": sum(
                r["white_box_p"] < significance
                or r["black_box_p"] < significance
                or r["gray_box_p"] < significance
                or bool(r["code_identified"])
                for r in u
            ),
        }
    return out


def combine(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of the grid as one result: runs over parts of the models (one key seed) and runs
    over other fingerprints (key seeds). Rows are tagged with their key seed; the summary is over every
    row, with one per key seed beside it."""
    rows: list[dict[str, Any]] = []
    for r in results:
        if "rows" not in r:
            raise ValueError(
                "robustness --combine: a file without rows (not written by `fingerprint robustness --out`)"
            )
        ks = r.get("key_seed", 0)  # runs before key seeds were recorded used the demo's fingerprint (seed 0)
        rows += [{**row, "key_seed": row.get("key_seed", ks)} for row in r["rows"]]
    seen: set[tuple[Any, ...]] = set()
    for row in rows:
        k = (row["key_seed"], row["model"], row["attack"], row["copy"])
        if k in seen:
            raise ValueError(f"robustness --combine: row {k} comes twice (the same run given twice?)")
        seen.add(k)
    seeds = sorted({row["key_seed"] for row in rows})
    secs = [r.get("seconds", 0.0) for r in results]  # a list where the run was itself combined
    return {
        "key_seeds": seeds,
        "models": sorted({row["model"] for row in rows}),
        "machines": sorted({str(r.get("machine", "")) for r in results} - {""}),
        "seconds": sum(sum(map(float, sec)) if isinstance(sec, list) else float(sec) for sec in secs),
        "rows": rows,
        "summary": summary(rows),
        "per_seed": {str(s): summary([row for row in rows if row["key_seed"] == s]) for s in seeds},
    }


CHANNELS = (
    ("white_box_found", "white-box", "metric_kept"),
    ("code_found", "licensee code", "metric_kept"),
    ("gray_box_found", "gray-box", "stamped"),
    ("black_box_found", "black-box", "stamped"),
)


def plot(result: dict[str, Any], path: str | Path) -> bool:
    """The figure: per attack, the share of stamped copies each channel found (white-box and code among
    the copies that kept the task metric), unstamped copies flagged marked; merges as a curve over the
    weight. False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    summ = result["summary"]
    plain = [a for a in summ if not a.startswith("merge")]
    merges = [a for a in summ if a.startswith("merge")]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [3, 1.3]})
    h = 0.8 / len(CHANNELS)
    for c, (key, label, of) in enumerate(CHANNELS):
        ys = [k + (c - 1.5) * h for k in range(len(plain))]
        ax.barh(ys, [summ[a][key] / max(summ[a][of], 1) for a in plain], height=h, label=label)
    for k, a in enumerate(plain):
        flagged = summ[a]["unstamped_flagged"]
        ax.text(
            1.02,
            k,
            f"kept {summ[a]['metric_kept']}/{summ[a]['stamped']}; unstamped flagged {flagged}",
            va="center",
            fontsize=7,
            color="red" if flagged else "black",
        )
    ax.set_yticks(range(len(plain)), plain)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.6)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel("share of stamped copies found (p < 1e-6)")
    seeds = result.get("key_seeds", [result.get("key_seed", 0)])
    ax.set_title(f"attacks x channels: {len(seeds)} key seed(s) {seeds}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.4, -0.09), ncol=4, fontsize=8)
    if merges:
        ws = [0.0] + [float(a.split()[-1]) for a in merges]
        for key, label, _ in CHANNELS:
            key = key.replace("_found", "_found_all") if key in ("white_box_found", "code_found") else key
            ys = [summ["none"][key] / max(summ["none"]["stamped"], 1) if "none" in summ else float("nan")]
            ys += [summ[a][key] / max(summ[a]["stamped"], 1) for a in merges]
            bx.plot(ws, ys, marker="o", label=label)
        bx.set_xlabel("weight of the other model in the merge")
        bx.set_ylim(-0.05, 1.05)
        bx.set_title("merges (all copies; the metric is not kept)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def docs_block(result: dict[str, Any], sources: Sequence[str], figure: str | None = None) -> str:
    """The docs page's generated section: where the figures come from, the table, the figure (`figure`:
    its link, relative to the page)."""
    seeds = result.get("key_seeds", [result.get("key_seed", 0)])
    models = result.get("models") or sorted({r["model"] for r in result["rows"]})
    machines = "; ".join(result.get("machines", [])) or str(result.get("machine", ""))
    files = ", ".join(f"`{s}`" for s in sources)
    out = [
        f"From {files}: {len(seeds)} key seed(s) {seeds} x {len(models)} models x {len(result['summary'])} attacks, "
        f"{len(result['rows'])} rows, {result.get('seconds', 0) / 60:.0f} min of runs"
        + (f" ({machines})" if machines else "")
        + ". Counts are over every (key seed, model); white-box and code among the copies that kept the task metric.",
        "",
        table(result),
        "",
    ]
    if figure:
        out += [f"![attacks x channels]({figure})", ""]
    return "\n".join(out)


def table(result: dict[str, Any]) -> str:
    lines = [
        "| attack | metric within 5 % | white-box found | code found | black-box found | gray-box found | "
        "unstamped flagged |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, s in result["summary"].items():
        k = s["metric_kept"]
        lines.append(
            f"| {label} | {k}/{s['stamped']} | {s['white_box_found']}/{k} | {s['code_found']}/{k} | "
            f"{s['black_box_found']}/{s['stamped']} | {s['gray_box_found']}/{s['stamped']} | {s['unstamped_flagged']} |"
        )
    return "\n".join(lines)
