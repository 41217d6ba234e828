"""Licensee codes on the demo's trained models: harmless? found after attacks? never wrong?

    .venv/bin/python -m benchmarks.trace_study --demo fpcore-demo --seeds 0,1,2    # ~3-6 min, 2 cores

Needs a finished `make demo` folder (models/<name>, fingerprint.safetensors). Per key seed (the trace
key's secret is derived from the seed, so a rerun is the same study) and per model (the base and
every downstream model), four licensees are drawn at random from the ids "0" .. "999999" and one
code-only copy is stamped for each through the real `fpcore.stamping.stamp` file path. Then:

- harm: the model's own task metric (the base: held-out perplexity) of the first copy against the
  model, and the largest relative move of any element;
- found: `fpcore.trace.find.trace` of the copy against the model among all 10^6 candidate ids, after
  nothing; a further 10 % weight drift (another downstream model's task vector, scaled to 10 % of the
  model's norm); the fingerprint vector stamped with the code, then that drift; an int8 round trip
  (symmetric, per row); and the average of 2, 3 and 4 licensees' copies (every colluder must be named);
- never wrong: every one of those traces also counts non-licensees named among the 10^6 (must be 0),
  and 10^4 further random ids are traced against an unstamped model with 10 % drift, against each copy
  and against the 4-copy average; a wrong key and a wrong reference must name nobody.

Writes docs/trace/study.json. ``--update docs/tracing.md --update docs/performance.md`` only rewrites
the tables (the study's in docs/tracing.md, bench_trace's costs in docs/performance.md) from the JSONs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import random
import tempfile
import time
from pathlib import Path

import torch

from fpcore import stamping
from fpcore.io import Checkpoint, write_safetensors
from fpcore.trace.find import candidate_ids, scores
from fpcore.trace.key import TraceKey
from fpcore.trace.score import score_candidates

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = 1_000_000
SIGNIFICANCE = 1e-6
DRIFT_SOURCE = {"classify-far": "code-far"}  # the task vector added as drift: classify-far's, or code-far's


def study_key(seed: int) -> TraceKey:
    return TraceKey(hashlib.sha256(f"fpcore trace study {seed}".encode()).digest())


def _coded_names(ck: Checkpoint) -> list[str]:
    from fpcore._code import is_coded

    return [n for n, info in ck.items() if is_coded(info)]


def _write_like(src: Path, dst: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """A model folder like src (config, tokenizer) whose weights are src's with `tensors` replaced."""
    import shutil

    shutil.copytree(src, dst)
    ck = Checkpoint(src)
    sd = {n: tensors.get(n, ck.get(n)).contiguous() for n, _ in ck.items()}
    for f in dst.glob("*.safetensors"):
        f.unlink()
    write_safetensors(dst / "model.safetensors", sd)
    return dst


def _state(path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    ck = Checkpoint(path)
    return {n: ck.get(n).float() for n in names}


def _norm(sd: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in sd.values()))


def _int8(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for n, t in sd.items():
        m = t.reshape(t.shape[0], -1)
        scale = m.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
        out[n] = ((m / scale).round().clamp(-127, 127) * scale).reshape(t.shape)
    return out


def _trace(suspect: Path, ref: Path, key: TraceKey, ids: list[str], symbols, colluders: set[str]) -> dict:
    Y, fig, _ = scores(suspect, ref, key)
    ident, runners, _ = score_candidates(Y, symbols, ids, SIGNIFICANCE)
    named = {c.licensee for c in ident}
    return {
        "named": sorted(named),
        "colluders_found": len(named & colluders),
        "colluders": len(colluders),
        "innocent_named": len(named - colluders),
        "p_max_colluder": max((c.p for c in ident if c.licensee in colluders), default=1.0),
        "z_colluders": [round(c.z, 2) for c in ident if c.licensee in colluders],
        "best_innocent_p": min((c.p for c in ident + runners if c.licensee not in colluders), default=1.0),
    }


def _metric(folder: Path, name: str) -> tuple[str, float]:
    from fpcore.fingerprint import demo
    from fpcore.fingerprint.lm import load_lm, perplexity

    lm = load_lm(folder)
    if name == "base":
        _, test_w = demo.held_out_windows(lm, demo.DemoConfig())
        return "held-out perplexity", perplexity(lm.model, test_w)
    task = next(d.task for d in demo.DOWNSTREAM if d.name == name)
    t = demo._task(task, lm, 0)
    return t.metric_name, t.evaluate(lm)


def run(demo_dir: Path, seeds: list[int], out: Path, candidates: int = CANDIDATES) -> dict:
    models_dir = demo_dir / "models"
    names = ["base"] + [p.name for p in sorted(models_dir.iterdir()) if p.is_dir() and p.name != "base"]
    ids = candidate_ids(candidates)
    vec = demo_dir / "fingerprint.safetensors"
    torch.set_num_threads(2)
    rows = []
    t_all = time.perf_counter()
    metric_before = {}
    with tempfile.TemporaryDirectory(prefix="trace-study-") as tmp_s:
        tmp = Path(tmp_s)
        for seed in seeds:
            key = study_key(seed)
            wrong_key = study_key(1000 + seed)
            t0 = time.perf_counter()
            symbols = key.symbol_matrix(ids)
            sym_seconds = time.perf_counter() - t0
            rng = random.Random(seed)
            innocents = [f"innocent-{seed}-{rng.getrandbits(64):016x}" for _ in range(10_000)]
            inn_symbols = key.symbol_matrix(innocents)
            for name in names:
                model = models_dir / name
                ck = Checkpoint(model)
                coded = _coded_names(ck)
                lic = [str(x) for x in rng.sample(range(candidates), 4)]
                work = tmp / f"{seed}-{name}"
                work.mkdir()
                copies = []
                for k, L in enumerate(lic):
                    dst = work / f"copy{k}"
                    stamping.stamp([], [model], dst, trace_key=key, licensees=[L])
                    copies.append(dst)
                ref_sd = _state(model, coded)
                c0 = _state(copies[0], coded)
                moved = max(float(((c0[n] - ref_sd[n]).abs() / ref_sd[n].abs().clamp_min(1e-30)).max()) for n in coded)
                frac_moved = sum(int((c0[n] != ref_sd[n]).sum()) for n in coded) / sum(t.numel() for t in c0.values())
                if name not in metric_before:
                    metric_before[name] = _metric(model, name)
                mname, before = metric_before[name]
                _, after = _metric(copies[0], name)
                # attacks
                src = DRIFT_SOURCE.get(name, "classify-far")
                tv = {
                    n: a - b
                    for (n, a), b in zip(
                        _state(models_dir / src, coded).items(),
                        _state(models_dir / "base", coded).values(),
                        strict=True,
                    )
                }
                scale = 0.10 * _norm(ref_sd) / _norm(tv)
                drifted = _write_like(copies[0], work / "drift", {n: c0[n] + scale * tv[n] for n in coded})
                honest = _write_like(model, work / "honest-drift", {n: ref_sd[n] + scale * tv[n] for n in coded})
                with_tau = work / "with-tau"
                stamping.stamp([(vec, 1.0)], [model], with_tau, trace_key=key, licensees=[lic[0]])
                wt = _state(with_tau, coded)
                tau_drift = _write_like(with_tau, work / "tau-drift", {n: wt[n] + scale * tv[n] for n in coded})
                q8 = _write_like(copies[0], work / "int8", _int8(c0))
                avgs = {}
                for k in (2, 3, 4):
                    sds = [_state(c, coded) for c in copies[:k]]
                    avgs[k] = _write_like(copies[0], work / f"avg{k}", {n: sum(sd[n] for sd in sds) / k for n in coded})
                first = {lic[0]}
                attacks = {
                    "none": _trace(copies[0], model, key, ids, symbols, first),
                    "drift_10pct": _trace(drifted, model, key, ids, symbols, first),
                    "tau_then_drift_10pct": _trace(tau_drift, model, key, ids, symbols, first),
                    "int8_per_row": _trace(q8, model, key, ids, symbols, first),
                    **{f"average_{k}": _trace(avgs[k], model, key, ids, symbols, set(lic[:k])) for k in (2, 3, 4)},
                }
                never = {
                    "honest_drift_1e6": _trace(honest, model, key, ids, symbols, set()),
                    "honest_drift_1e4": _trace(honest, model, key, innocents, inn_symbols, set()),
                    "copy_1e4": sum(
                        _trace(c, model, key, innocents, inn_symbols, set())["innocent_named"] for c in copies
                    ),
                    "average_4_1e4": _trace(avgs[4], model, key, innocents, inn_symbols, set()),
                    "wrong_key": _trace(copies[0], model, wrong_key, ids, wrong_key.symbol_matrix(ids), set()),
                    "wrong_reference": _trace(copies[0], models_dir / src, key, ids, symbols, set()),
                }
                row = {
                    "seed": seed,
                    "model": name,
                    "licensees": lic,
                    "metric": mname,
                    "metric_before": before,
                    "metric_after": after,
                    "metric_change_rel": (after - before) / before if before else 0.0,
                    "max_relative_move": moved,
                    "fraction_moved": frac_moved,
                    "drift_scale": scale,
                    "attacks": attacks,
                    "never_wrong": never,
                    "symbol_matrix_seconds": sym_seconds,
                }
                rows.append(row)
                change = row["metric_change_rel"] * 100
                print(
                    f"seed {seed} {name}: {mname} {before:.4f} -> {after:.4f} ({change:+.3f} %), "
                    + ", ".join(
                        f"{a} {r['colluders_found']}/{r['colluders']} "
                        f"(p {r['p_max_colluder']:.2g}, innocents {r['innocent_named']})"
                        for a, r in attacks.items()
                    )
                    + "; never-wrong: "
                    + ", ".join(f"{a} {r if isinstance(r, int) else len(r['named'])}" for a, r in never.items()),
                    flush=True,
                )
    result = {
        "candidates": candidates,
        "significance": SIGNIFICANCE,
        "seeds": seeds,
        "machine": {"cpu": _cpu(), "python": platform.python_version(), "torch": torch.__version__},
        "seconds": time.perf_counter() - t_all,
        "rows": rows,
        "summary": summary(rows),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(result, indent=1) + "\n")
    tmp_out.replace(out)
    return result


def summary(rows: list[dict]) -> dict:
    attacks = sorted({a for r in rows for a in r["attacks"]})
    s = {
        "max_metric_change_rel": max(abs(r["metric_change_rel"]) for r in rows),
        "max_relative_move": max(r["max_relative_move"] for r in rows),
        "innocents_named_total": sum(r2["innocent_named"] for r in rows for r2 in r["attacks"].values())
        + sum((v if isinstance(v, int) else len(v["named"])) for r in rows for v in r["never_wrong"].values()),
    }
    for a in attacks:
        rs = [r["attacks"][a] for r in rows]
        s[a] = {
            "all_colluders_found": sum(x["colluders_found"] == x["colluders"] for x in rs),
            "cases": len(rs),
            "worst_p": max(x["p_max_colluder"] for x in rs),
        }
    return s


ATTACKS = (
    ("none", "none"),
    ("drift_10pct", "+10 % drift (a task vector)"),
    ("tau_then_drift_10pct", "with tau, then +10 % drift"),
    ("int8_per_row", "int8 round trip (per row)"),
    ("average_2", "2 copies averaged"),
    ("average_3", "3 copies averaged"),
    ("average_4", "4 copies averaged"),
)


def table(result: dict) -> str:
    """docs/tracing.md's table from a study JSON: per attack, found / cases and the worst p (10^6 candidates)."""
    rows, s = result["rows"], result["summary"]
    lines = [
        f"{len(result['seeds'])} key seeds x {len(rows) // len(result['seeds'])} demo models, "
        f"{result['candidates']:,} candidate ids, {result['machine']['cpu']}, {result['seconds']:.0f} s "
        "(`python -m benchmarks.trace_study`; docs/trace/study.json):",
        "",
        "| suspect | every licensee named | worst p (corrected) | innocents named |",
        "|---|---:|---:|---:|",
    ]
    for key, label in ATTACKS:
        a = s[key]
        inn = sum(r["attacks"][key]["innocent_named"] for r in rows)
        lines.append(f"| {label} | {a['all_colluders_found']}/{a['cases']} | {a['worst_p']:.1e} | {inn} |")
    nw = [r["never_wrong"] for r in rows]
    wrong = sum(len(x["wrong_key"]["named"]) + len(x["wrong_reference"]["named"]) for x in nw)
    honest = sum(len(x["honest_drift_1e6"]["named"]) + len(x["honest_drift_1e4"]["named"]) for x in nw)
    lines += [
        "",
        f"Never wrong: {s['innocents_named_total']} innocent ids named in all; unstamped models with 10 % "
        f"drift named {honest}; wrong key or wrong reference named {wrong}; 10^4 further random ids against "
        "every copy and the 4-copy average named 0. "
        f"Harmless: largest task-metric change {s['max_metric_change_rel'] * 100:.3f} % (relative), largest "
        f"element move {s['max_relative_move']:.2e} of its value (fp32, 2^-9).",
        "",
    ]
    return "\n".join(lines)


def bench_table(bench: dict) -> str:
    """docs/performance.md's cost table from `pytest benchmarks/bench_trace.py --benchmark-json`."""
    by = {b["name"]: b for b in bench["benchmarks"]}
    cpu = bench.get("machine_info", {}).get("cpu", {}).get("brand_raw", "")
    lines = [
        f"Measured by `pytest benchmarks/bench_trace.py` ({cpu}; docs/perf/trace_bench.json), each against its "
        "plain twin in the same run:",
        "",
        "| what | coded | plain twin | ratio | floor |",
        "|---|---:|---:|---:|---:|",
    ]
    for dt in ("bf16", "fp32"):
        e = by[f"test_trace_stamp_in_memory_coded[{dt}]"]["extra_info"]
        lines.append(
            f"| in-memory stamp, {dt}, 256 MB operands | {e['gbps']:.1f} GB/s | {e['plain_gbps']:.1f} GB/s "
            f"| {e['ratio_to_plain']:.2f} (median of {e['pairs']} A/B pairs' ratios: {e['pair_ratio_median']:.2f}) "
            "| >= 0.95 |"
        )
    e = by["test_trace_stamp_file_to_file_coded"]["extra_info"]
    what = f"file-to-file stamp, {e['params'] / 1e9:.1f}B bf16"
    ratio = f"{e['ratio_to_plain']:.3f} (median of {e['pairs']} A/B pairs' ratios: {e['pair_ratio_median']:.3f})"
    lines.append(f"| {what} | {e['coded_seconds']:.2f} s | {e['plain_seconds']:.2f} s | {ratio} | <= 1.05 |")
    b = by["test_trace_million_candidates_against_detect"]
    e = b["extra_info"]
    lines.append(
        f"| trace, {e['candidates']:,} candidates vs one detect pass, {e['params'] / 1e9:.1f}B | "
        f"{b['stats']['median']:.1f} s | {e['detect_seconds']:.1f} s | {e['ratio_to_detect']:.2f} | <= 10 |"
    )
    return "\n".join(lines) + "\n"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default="fpcore-demo", help="a finished make-demo folder")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--candidates", type=int, default=CANDIDATES)
    ap.add_argument("--out", default=str(ROOT / "docs" / "trace" / "study.json"))
    ap.add_argument(
        "--update",
        action="append",
        metavar="PAGE",
        help="only rewrite the tables from --out and --bench: perf-trace-study (docs/tracing.md) and "
        "perf-trace-bench (docs/performance.md), each on the given pages that hold its markers (repeatable)",
    )
    ap.add_argument("--update-readme", dest="update", action="append", help=argparse.SUPPRESS)  # the old name
    ap.add_argument("--bench", default=str(ROOT / "docs" / "perf" / "trace_bench.json"), help="bench_trace JSON")
    a = ap.parse_args()
    if a.update:
        from fpcore._markers import update_sections

        blocks = {"trace-study": table(json.loads(Path(a.out).read_text()))}
        if Path(a.bench).is_file():
            blocks["trace-bench"] = bench_table(json.loads(Path(a.bench).read_text()))
        update_sections(a.update, blocks)
        return
    r = run(Path(a.demo), [int(x) for x in a.seeds.split(",")], Path(a.out), a.candidates)
    print(json.dumps(r["summary"], indent=1))


if __name__ == "__main__":
    main()
