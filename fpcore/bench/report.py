"""`fpcore bench report RESULTS.json [--png FILE] [--update FILE --section SECTION]`

Turns a pytest-benchmark JSON file into the performance tables (every benchmark with its GB/s and
same-run roofline ratio, then each floor of the engine with the measured ratio and a verdict), a PNG
plot, and optionally rewrites a page's performance section between its perf-SECTION markers. Figures
come only from the JSON: nothing is typed by hand. Also ``python -m fpcore.bench.report``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from fpcore._markers import update_section


@dataclass
class Floor:
    label: str
    num: str  # benchmark name (function name without params)
    den: str | None  # None: ratio_to_roofline of num; else the peer whose median time is divided by num's
    target: float


FLOORS = [
    Floor("stamp bf16+bf16->bf16 vs fp32 add roofline", "test_headline_stamp_bf16_bf16", None, 1.0),
    Floor("stamp bf16+fp32->bf16 vs fp32 add roofline", "test_headline_stamp_bf16_fp32", None, 1.0),
    Floor(
        "stamp bf16 vs torch bf16 add_ (speed-up)",
        "test_headline_stamp_bf16_bf16",
        "test_headline_peer_torch_bf16_add_inplace",
        2.0,
    ),
    Floor(
        "stamp bf16 vs eager upcast (speed-up)",
        "test_headline_stamp_bf16_bf16",
        "test_headline_peer_eager_upcast",
        20.0,
    ),
    Floor(
        "stamp_tensors_ (2 Llama-7B layers + embed) vs one big tensor",
        "test_headline_stamp_tensors_llama_layers",
        "test_headline_stamp_single_tensor_same_bytes",
        0.9,
    ),
    Floor(
        "trajectory_stats T=16 consecutive vs fp32 sum read roofline", "test_headline_trajectory_consecutive", None, 0.8
    ),
    Floor(
        "trajectory_stats vs Proof-of-Learning loop (speed-up)",
        "test_headline_trajectory_consecutive",
        "test_headline_peer_pol_loop",
        10.0,
    ),
    Floor(
        "file->file stamp vs the plain-copy I/O floor, in-process (>= 0.77: within 1.3x)",
        "test_checkpoint_stamp_file_to_file",
        "test_checkpoint_floor_copy[page-cache]",
        1 / 1.3,
    ),
    Floor(
        "file->file stamp vs the same copy written with O_DIRECT, in-process (>= 0.77: within 1.3x)",
        "test_checkpoint_stamp_file_to_file",
        "test_checkpoint_floor_copy[o-direct]",
        1 / 1.3,
    ),
    Floor(
        "stamp-on-load vs plain safetensors load, warm cache (>= 0.91: overhead <= 10%)",
        "test_serving_stamped_load[warm]",
        "test_serving_plain_load[warm]",
        1 / 1.1,
    ),
    Floor(
        "stamp-on-load vs plain safetensors load, model cold (>= 0.91: overhead <= 10%)",
        "test_serving_stamped_load[cold]",
        "test_serving_plain_load[cold]",
        1 / 1.1,
    ),
    Floor("GPU stamp bf16+bf16->bf16 vs device-to-device copy", "test_stamp_bf16_bf16", None, 0.85),
    Floor("GPU stamp bf16+fp32->bf16 vs device-to-device copy", "test_stamp_bf16_f32tau", None, 0.85),
    Floor(
        "GPU stamp 7B state dict vs _foreach_add_, bf16 tau (speed-up)",
        "test_stamp_multi_7b_bf16",
        "test_foreach_add_7b_bf16",
        2.0,
    ),
    Floor(
        "GPU stamp 7B state dict vs _foreach_add_, fp32 tau (speed-up)",
        "test_stamp_multi_7b_f32tau",
        "test_foreach_add_7b_f32tau",
        2.0,
    ),
]


def median_ms(b: dict) -> float:
    """The op's median in ms: the kernel time a benchmark recorded itself (GPU: CUDA-event median of
    triton's do_bench), else pytest-benchmark's wall-clock median."""
    return b.get("extra_info", {}).get("ms") or b["stats"]["median"] * 1e3


def load(path: str | Path) -> dict:
    data = json.loads(Path(path).read_text())
    if "benchmarks" not in data:
        raise ValueError(f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' key)")
    return data


def rows(data: dict) -> list[dict]:
    out = []
    for b in data["benchmarks"]:
        ex = b.get("extra_info", {})
        out.append(
            {
                "group": b.get("group") or "",
                "name": b["name"],
                "impl": ex.get("impl", ""),
                "what": ex.get("dtypes") or (f"T={ex['T']} x {ex['ckpt_mb']} MB" if "T" in ex else ex.get("op", "")),
                "median_ms": median_ms(b),
                "gbps": ex.get("gbps"),
                "ratio": ex.get("ratio_to_roofline"),
                "roofline_gbps": ex.get("roofline_gbps"),
            }
        )
    return out


def floors(data: dict) -> list[dict]:
    by_name = {b["name"]: b for b in data["benchmarks"]}
    out = []
    for f in FLOORS:
        num = by_name.get(f.num)
        den = by_name.get(f.den) if f.den else None
        if num is None or (f.den and den is None):
            continue  # this run did not measure that floor (e.g. a GPU-only run)
        if f.den is None:
            measured = num["extra_info"].get("ratio_to_roofline")
        else:
            measured = median_ms(den) / median_ms(num)
        out.append(
            {
                "label": f.label,
                "measured": measured,
                "target": f.target,
                "ok": measured is not None and measured >= f.target,
            }
        )
    return out


def _is_fpcore(r: dict) -> bool:
    if r["impl"]:
        return r["impl"] == "fpcore"
    return not r["name"].startswith(("test_copy", "test_torch", "test_foreach"))  # GPU rows name their peers


def _short(name: str) -> str:
    return name.removeprefix("test_").removeprefix("headline_")


def _fmt(x: float | None, nd: int = 2) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def markdown(data: dict) -> str:
    mi = data.get("machine_info", {})
    cpu = mi.get("cpu", {}).get("brand_raw") or mi.get("processor") or platform.processor()
    devices = sorted({b.get("extra_info", {}).get("device") for b in data["benchmarks"]} - {None})
    where = ", ".join(devices) if devices else f"{cpu} ({mi.get('cpu', {}).get('count', '?')} cores)"
    lines = [
        f"Measured on {where}, {data.get('datetime', '')[:19]}; medians; ratios use the roofline measured in the "
        "same run.",
        "",
        "| floor | measured | target | |",
        "|---|---:|---:|---|",
    ]
    for f in floors(data):
        verdict = "n/a" if f["ok"] is None else ("pass" if f["ok"] else "**miss**")
        lines.append(f"| {f['label']} | {_fmt(f['measured'])}× | ≥ {f['target']:.2f}× | {verdict} |")
    lines += [
        "",
        "| group | benchmark | impl | operands | median ms | GB/s | × roofline |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in sorted(rows(data), key=lambda r: (r["group"], r["median_ms"])):
        name = _short(r["name"])
        cells = [r["group"], name, r["impl"], r["what"], f"{r['median_ms']:.1f}", _fmt(r["gbps"], 1), _fmt(r["ratio"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(data: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [r for r in rows(data) if r["gbps"] is not None]
    groups = sorted({r["group"] for r in rs})
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 2.2 + 0.45 * len(rs)), squeeze=False)
    for ax, g in zip(axes[:, 0], groups, strict=True):
        gr = sorted((r for r in rs if r["group"] == g), key=lambda r: r["gbps"])
        labels = [_short(r["name"]) + (f" ({r['impl']})" if r["impl"] else "") for r in gr]
        colors = ["tab:green" if _is_fpcore(r) else "tab:gray" for r in gr]
        ax.barh(labels, [r["gbps"] for r in gr], color=colors)
        roofs = {r["roofline_gbps"] for r in gr if r["roofline_gbps"]}
        for roof in roofs:
            ax.axvline(roof, color="tab:red", linestyle="--", linewidth=1)
        ax.set_title(f"{g} (GB/s; dashed: roofline measured in the same run)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The report's options (shared by `fpcore bench report` and `python -m fpcore.bench.report`)."""
    ap.add_argument("results", help="pytest-benchmark JSON (from --benchmark-json)")
    ap.add_argument("--png", help="write a bar chart here (default: next to the JSON)")
    ap.add_argument(
        "--update",
        metavar="FILE",
        help="rewrite FILE's performance section (between its perf-SECTION start/end markers; the tables live "
        "in docs/performance.md)",
    )
    ap.add_argument("--update-readme", dest="update", help=argparse.SUPPRESS)  # the old name
    ap.add_argument("--section", default="cpu", help="which section (markers perf-SECTION:start/end; default cpu)")


def run(args: argparse.Namespace) -> int:
    png = args.png or str(Path(args.results).with_suffix(".png"))
    try:
        data = load(args.results)
    except (OSError, ValueError) as exc:
        print(f"fpcore bench report: error: {exc}", file=sys.stderr)
        return 2
    table = markdown(data)
    if args.update:  # the plot, linked relative to the page it goes into
        link = Path(os.path.relpath(Path(png).resolve(), Path(args.update).resolve().parent)).as_posix()
        table += f"\n![{args.section} benchmarks]({link})\n"
    print(table)
    plot(data, png)
    print(f"plot: {png}")
    if args.update:
        try:
            update_section(args.update, table, args.section)
        except (OSError, ValueError) as exc:
            print(f"fpcore bench report: error: {exc}", file=sys.stderr)
            return 2
        print(f"updated: {args.update}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fpcore.bench.report", description=__doc__.split("\n\n")[1])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
