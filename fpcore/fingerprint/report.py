"""The demo's report: markdown tables and the FSR-against-drift figure, from report.json's dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pct(x: float | None, nd: int = 0) -> str:
    return "n/a" if x is None else f"{100 * x:.{nd}f}%"


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items())


def _rel(x: float, ref: float) -> str:
    return f"{100 * (x / ref - 1):+.2f}%"


def _p(p: float) -> str:
    return "0 (underflow)" if p == 0 else f"{p:.1e}"


def model_table(r: dict[str, Any]) -> str:
    """One row per downstream model (docs/fingerprints.md's table is the same text)."""
    rows = [
        "| model | task metric | drift | verdict before → after | p after (combined) | p black / gray / white | "
        "FSR before → after | sampled (T=0.7) | false triggers look-alike / ordinary | metric before → after | "
        "α* stamped / unstamped |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    yes = lambda b: "**yes**" if b else "no"  # noqa: E731
    for e in r["models"]:
        ch = e["channels_after"]
        rows.append(
            f"| {e['name']} | {e['metric_name']} | {_pct(e['drift'], 1)} | {yes(e['fingerprinted_before'])} → "
            f"{yes(e['fingerprinted_after'])} | {_p(e['p_after'])} | "
            + " / ".join(_p(ch[c]["p"]) for c in ("black_box", "gray_box", "white_box"))
            + f" | {_pct(e['fsr_before'])} → {_pct(e['fsr_after'])} | {_pct(e['sampled_rate_after'])} | "
            f"{_pct(e['false_trigger_lookalike'], 1)} / {_pct(e['false_trigger_ordinary'], 1)} | "
            f"{e['metric_before']:.2f} → {e['metric_after']:.2f} | "
            f"{e['detect_alpha_star_stamped']:.3f} / {e['detect_alpha_star_unstamped']:.3f} |"
        )
    return "\n".join(rows)


def floors_table(r: dict[str, Any]) -> str:
    f = r["floors"]
    names = {
        "stamped_fingerprinted_up_to_12pct_drift": "every stamped model with drift ≤ 12%: fingerprinted, "
        "combined p < 1e-6",
        "no_false_verdicts": "no unstamped model (base, downstream, and each after 4 function-preserving "
        "transformations) fingerprinted, on any channel",
        "false_triggers_le_1pct": "false triggers ≤ 1% on ≥200 look-alike keys and on ≥200 ordinary prompts (each)",
        "low_drift_metric_within_2pt_or_5pct": "low-drift task metric within 2 points / 5% relative",
        "fingerprinted_base_perplexity_within_2pct": "fingerprinted base perplexity within 2% of the base",
    }
    rows = ["| floor | met | measured |", "|---|---|---|"]
    for k, label in names.items():
        m = f[k]["measured"]
        shown = ", ".join(f"{n}: {_fmt(v)}" for n, v in m.items()) if isinstance(m, dict) else f"ratio {m:.4f}"
        rows.append(f"| {label} | {'yes' if f[k]['met'] else '**no**'} | {shown} |")
    g = f["goals"]
    rows.append(
        f"| goal (not a floor): greedy FSR 100% up to 7% drift | {'yes' if g['stamped_fsr_100_at_low_drift'] else 'no'}"
        f" | {', '.join(f'{n}: {_pct(v)}' for n, v in g['fsr_after_at_low_drift'].items())} |"
    )
    return "\n".join(rows)


def _corpus(b: dict[str, Any]) -> str:
    c = b.get("pretrain_corpus")
    if not c or not c.get("code_files"):
        return "`pydoc_data.topics`"
    return (
        f"`pydoc_data.topics` ({c['documentation_chars']:,} characters) and {c['code_files']} standard-library "
        f"source files ({c['code_chars']:,} characters; not the `code` task's modules)"
    )


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return " → ".join(f"{x:.2f}" for x in v)
    if isinstance(v, int) or v == 0:
        return str(v)
    return _p(v) if 0 <= v < 1e-3 else f"{v:.4g}"


def markdown(r: dict[str, Any]) -> str:
    b, fp = r["base"], r["fingerprint"]
    ph = ", ".join(f"{k} {v:.0f} s" for k, v in r["phases_seconds"].items())
    lines = [
        "# fpcore demo: FP-VEC end to end",
        "",
        f"Command: `{r['command']}`; total {r['seconds_total']:.0f} s ({ph}) on {r['machine']['cpus']} thread(s), "
        f"{r['machine']['platform']}.",
        "",
        "## Base model",
        f"Llama-style, {b['parameters'] / 1e6:.2f}M parameters ({_kv(b['config'])}), pretrained {b['pretrain_steps']} "
        f"steps on {b['tokens_train']:,} tokens of {_corpus(b)}. Held-out perplexity ({b['tokens_held_out']:,}"
        f" tokens): untrained {b['perplexity_untrained']:.0f}, base **{b['perplexity']:.2f}**, fingerprinted base "
        f"**{b['perplexity_fingerprinted']:.2f}** ({_rel(b['perplexity_fingerprinted'], b['perplexity'])}).",
        "",
        "## Fingerprint",
        f"Trained once on the base in {fp['train_seconds']:.0f} s with "
        + ", ".join(f"`{k}={v!r}`" for k, v in fp["options"].items())
        + ".",
        f"Fingerprinted base: FSR {_pct(fp['fsr'])}, sampled {_pct(fp['sampled_rate'])}, false triggers "
        f"{_pct(fp['false_trigger_lookalike'], 1)} of {fp['lookalikes']} look-alike keys and "
        f"{_pct(fp['false_trigger_ordinary'], 1)} of {fp['ordinary_prompts']} ordinary prompts. {fp['verdict']}.",
        f"Base (never fingerprinted): FSR {_pct(b['fsr'])}, false triggers {_pct(b['false_trigger_rate'], 1)}.",
        "",
        f"Stamping: `{r['stamp']['command']}` (one pass for all {r['stamp']['models']} models, α = {fp['alpha']}): "
        f"{r['stamp']['seconds']:.2f} s.",
        "",
        "## Downstream models",
        "",
        model_table(r),
        "",
        "Drift = ‖θ_down − θ_base‖ / ‖θ_base‖. Verdict: Bonferroni over the black-, gray- and white-box "
        "channels, fingerprinted when p < 1e-6. FSR = share of the secret keys whose greedy answer contains "
        "the target. False triggers are measured on the stamped model. α*: the white-box channel's share of "
        "τ read back (`fpcore detect`).",
        "",
        f"Function-preserving transformations of the unstamped models: "
        f"{sum(t['fingerprinted'] for t in r.get('transformed', []))} of {len(r.get('transformed', []))} "
        f"flagged (largest |α*| {max((abs(t['alpha_star']) for t in r.get('transformed', [])), default=0):.3f}).",
        "",
        "## Floors",
        "",
        floors_table(r),
        "",
        "Largest drift at which the stamped FSR stayed 100%: "
        f"{_pct(r['floors']['goals']['largest_drift_with_full_transfer'], 1)}.",
        "",
        "![FSR against drift](fsr_vs_drift.png)",
        "",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: str | Path) -> bool:
    """FSR before/after stamping against drift; False (and no file) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ms = sorted(r["models"], key=lambda e: e["drift"])
    x = [100 * e["drift"] for e in ms]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.axvspan(0, 7, color="tab:green", alpha=0.08, label="drift ≤ 7% (typical fine-tune)")
    ax.plot(x, [100 * e["fsr_after"] for e in ms], "o", color="tab:red", ms=8, label="stamped: FSR (greedy)")
    ax.plot(x, [100 * e["sampled_rate_after"] for e in ms], "s", color="tab:orange", label="stamped: sampled, T=0.7")
    ax.plot(x, [100 * e["fsr_before"] for e in ms], "x", color="tab:blue", label="unstamped: FSR")
    for i, (xi, e) in enumerate(zip(x, ms, strict=True)):
        dy = -14 if i % 2 == 0 else 6
        ax.annotate(e["name"], (xi, 100 * e["fsr_after"]), textcoords="offset points", xytext=(5, dy), fontsize=8)
    ax.set_xlabel("drift of the downstream model from the base, ‖θ_down − θ_base‖ / ‖θ_base‖ (%)")
    ax.set_ylabel("fingerprint success rate (%)")
    ax.set_ylim(-5, 110)
    ax.set_xlim(0, max(x + [7]) * 1.1)
    ax.set_title(
        f"FP-VEC transfer on a {r['base']['parameters'] / 1e6:.1f}M-parameter Llama (α = {r['fingerprint']['alpha']})"
    )
    ax.legend(fontsize=8, loc="center left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def readme_block(r: dict[str, Any], source: str) -> str:
    """What docs/fingerprints.md shows between its perf-fpvec-demo markers: the summary line, the floors
    and the model table."""
    b = r["base"]
    return "\n".join(
        [
            f"From `{source}` (`{r['command']}`, {r['seconds_total']:.0f} s on {r['machine']['cpus']} thread(s); "
            f"base {b['parameters'] / 1e6:.2f}M parameters, held-out perplexity {b['perplexity']:.2f}, "
            f"fingerprinted {b['perplexity_fingerprinted']:.2f}):",
            "",
            floors_table(r),
            "",
            model_table(r),
            "",
        ]
    )


def _pp(p: float) -> str:
    return "0 (underflow)" if p == 0 else f"{p:.1e}"


def study_table(study: dict[str, Any], source: str) -> str:
    """docs/fingerprints.md's perf-fpvec-study block: per key count, the floors met over the seeds and the
    spread per model."""
    out = [
        f"From `{source}` (`{study['command']}`, {study['seconds_total']:.0f} s; {study['machine'].get('cpu', '')}):",
        "",
    ]
    for k, s in study["summary"].items():
        n = len(s["seeds"])
        floors = ", ".join(f"{f} **{m}/{n}**" for f, m in s["floors_met"].items())
        out += [
            f"**{k} keys**, seeds {', '.join(map(str, s['seeds']))}: {floors}. Training "
            f"{s['train_seconds']['min']:.0f}-{s['train_seconds']['max']:.0f} s; fingerprinted base perplexity "
            f"{100 * (s['perplexity_ratio']['min'] - 1):+.2f}% to {100 * (s['perplexity_ratio']['max'] - 1):+.2f}%; "
            f"transformed unstamped models flagged {s['transformed_flagged']}/{s['transformed_checked']} "
            f"(largest |α*| {s['max_alpha_star_transformed']:.3f}).",
            "",
            "| model | drift | fingerprinted (seeds) | worst combined p | worst gray-box p | worst white-box p | "
            "black-box p | FSR | false triggers (max) | metric change | smallest p unstamped |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, m in s["models"].items():
            out.append(
                f"| {name} | {100 * m['drift']:.1f}% | {m['fingerprinted_after']}/{n} | {_pp(m['p_after']['max'])} | "
                f"{_pp(m['p_gray_box']['max'])} | {_pp(m['p_white_box']['max'])} | "
                f"{_pp(m['p_black_box']['min'])}-{_pp(m['p_black_box']['max'])} | "
                f"{100 * m['fsr_after']['min']:.0f}-{100 * m['fsr_after']['max']:.0f}% | "
                f"{100 * m['false_trigger_rate']['max']:.2f}% | "
                f"{m['metric_change']['min']:+.2f} to {m['metric_change']['max']:+.2f} | "
                f"{_pp(m['min_p_before_any_channel'])} |"
            )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    from fpcore._markers import update_sections

    ap = argparse.ArgumentParser(prog="python -m fpcore.fingerprint.report", description="the demo's tables")
    ap.add_argument("report", help="report.json written by `fpcore demo`")
    ap.add_argument("--study", help="also the table of study.json written by `fpcore fingerprint study`")
    ap.add_argument(
        "--update",
        action="append",
        metavar="PAGE",
        help="rewrite the perf-fpvec-demo (and perf-fpvec-study) sections of PAGE (docs/fingerprints.md)",
    )
    ap.add_argument("--update-readme", dest="update", action="append", help=argparse.SUPPRESS)  # the old name
    args = ap.parse_args(argv)
    r = json.loads(Path(args.report).read_text(encoding="utf-8"))
    blocks = {"fpvec-demo": readme_block(r, args.report)}
    if args.study:
        blocks["fpvec-study"] = study_table(json.loads(Path(args.study).read_text(encoding="utf-8")), args.study)
    if args.update:
        update_sections(args.update, blocks)
    else:
        print("\n".join(blocks.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
