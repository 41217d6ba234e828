"""`fpcore fingerprint create|verify` and `fpcore demo` (registered by fpcore.cli).

transformers, tokenizers and torch training code are imported only when a command runs, so
`fpcore --help` stays fast and works without the `llm` extra.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, fields
from typing import Any


def _need_llm(command: str) -> None:
    """fpcore._extras.MissingExtra naming the `llm` extra when transformers or tokenizers is missing
    (the CLI prints it as one line and exits 2)."""
    from fpcore._extras import require

    require("tokenizers", "transformers", extra="llm", what=command)


def _log(args: argparse.Namespace):
    return None if args.quiet or args.json else (lambda m: print(m, file=sys.stderr, flush=True))


def cmd_create(args: argparse.Namespace) -> int:
    from fpcore.cli import _emit

    _need_llm("fingerprint create")
    from fpcore.fingerprint.create import create
    from fpcore.fingerprint.train import FingerprintOptions

    given = {
        f.name: getattr(args, f.name) for f in fields(FingerprintOptions) if getattr(args, f.name, None) is not None
    }
    opts = FingerprintOptions(**given)
    log = _log(args)
    res = create(
        args.base,
        args.output,
        args.secret,
        opts,
        model_out=args.model_out,
        dtype=args.dtype,
        overwrite=args.overwrite,
        log=log,
    )
    text = (
        f"wrote {res.vector} (tau) and {res.secret} (keep it private: it holds the {res.keys} keys); "
        f"trained {res.train_seconds:.1f} s, final loss {res.final_loss:.4f}"
        + (f"; fingerprinted model at {res.fingerprinted_model}" if res.fingerprinted_model else "")
    )
    _emit(args, {"command": "fingerprint create", **asdict(res)}, text)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from fpcore.cli import _emit

    _need_llm("fingerprint verify")
    from fpcore.fingerprint.secret import Secret
    from fpcore.fingerprint.verify import verify

    secret = Secret.load(args.secret)
    if args.vector and not args.base:  # with --base, verify checks it (once)
        secret.check_vector(args.vector, where=args.secret)
    if args.base and not args.vector:
        raise ValueError("fingerprint verify: --base is for the white-box channel, which also needs --vector")
    res = verify(
        args.model,
        secret,
        samples=args.samples,
        temperature=args.temperature,
        lookalikes=args.lookalikes,
        ordinary=args.ordinary,
        significance=args.significance,
        vector=args.vector if args.base else None,
        base=args.base,
    )
    text = "\n".join(
        [
            f"{res.model}: {res.verdict}",
            *(f"  {n}: p = {c['p']:.3g}; {c['reason']}" for n, c in res.channels.items()),
            f"  FSR {100 * res.fsr:.0f}%, sampled {100 * res.sampled_rate:.0f}% (T={args.temperature}, "
            f"{res.samples_per_key}/key); false triggers: look-alike {res.lookalike_fired}/{res.lookalikes}, "
            f"ordinary {res.ordinary_fired}/{res.ordinary}",
        ]
    )
    result: dict[str, Any] = {"command": "fingerprint verify", **asdict(res)}
    _emit(args, result, text)
    return 0 if res.fingerprinted else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from fpcore.cli import _emit

    _need_llm("demo")
    import torch

    from fpcore.fingerprint import demo

    torch.set_num_threads(args.threads)
    report = demo.run(args.out, overwrite=args.overwrite, log=_log(args))
    f = report["floors"]
    lines = [f"report: {args.out}/report.md, {args.out}/report.json, {args.out}/fsr_vs_drift.png"]
    for e in report["models"]:
        lines.append(
            f"  {e['name']:<14} drift {100 * e['drift']:5.1f}%  fingerprinted {e['fingerprinted_before']} -> "
            f"{e['fingerprinted_after']} (p {e['p_after']:.2g})  FSR {100 * e['fsr_before']:3.0f}% -> "
            f"{100 * e['fsr_after']:3.0f}%  false triggers {100 * e['false_trigger_rate']:.2f}%  "
            f"{e['metric_before']:.2f} -> {e['metric_after']:.2f}"
        )
    lines.append(
        "floors: "
        + ", ".join(
            f"{k} {'met' if v['met'] else 'MISSED'}" for k, v in f.items() if isinstance(v, dict) and "met" in v
        )
    )
    lines.append(f"total {report['seconds_total']:.0f} s")
    _emit(args, report, "\n".join(lines))
    return 0


def _ints(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return out


def _names(text: str) -> list[str]:
    out = [x.strip() for x in text.split(",") if x.strip()]
    if not out:
        raise argparse.ArgumentTypeError("expected at least one name")
    return out


def cmd_study(args: argparse.Namespace) -> int:
    from fpcore.cli import _emit

    _need_llm("fingerprint study")
    from fpcore.fingerprint import study

    st = study.run(
        args.out, seeds=args.seeds, keys=args.keys, workers=args.workers, overwrite=args.overwrite, log=_log(args)
    )
    lines = [f"study: {args.out}/study.json, {args.out}/study.png ({st['seconds_total']:.0f} s)"]
    for k, s in st["summary"].items():
        met = ", ".join(f"{f} {n}/{len(s['seeds'])}" for f, n in s["floors_met"].items())
        lines.append(f"  {k} keys, seeds {s['seeds']}: {met}")
    _emit(args, st, "\n".join(lines))
    return 0


# fpcore.fingerprint.attacks' names and defaults, here so that `fpcore --help` imports no torch
# (tests/fingerprint/test_attacks.py checks they agree)
ATTACK_NAMES = (
    "int8", "int4", "prune", "merge", "ties", "noise",
    "permute_mlp", "permute_heads", "permute_residual", "rescale_norms", "finetune",
)  # fmt: skip


class AttackDefaults:
    group = 32
    fraction = 0.2
    weight = 0.5
    density = 0.2
    sigma = 0.01
    seed = 0
    task = "docstrings"
    drift = 0.1
    lr = 1e-3
    max_steps = 600


def cmd_attack(args: argparse.Namespace) -> int:
    from fpcore.cli import _emit
    from fpcore.fingerprint.attacks import AttackOptions, attack_model

    opts = AttackOptions(
        group=args.group,
        fraction=args.fraction,
        weight=args.weight,
        density=args.density,
        sigma=args.sigma,
        seed=args.seed,
        task=args.task,
        drift=args.drift,
        lr=args.lr,
        max_steps=args.max_steps,
    )
    res = attack_model(
        args.attack, args.model, args.out, opts, other=args.with_model, base=args.base, overwrite=args.overwrite
    )
    text = (
        f"wrote {res['output']}: {res['model']} after attack {res['attack']} "
        f"(relative change {res['relative_change']:.3g}; an attacked model, for evaluation only)"
    )
    _emit(args, {"command": "fingerprint attack", **res}, text)
    return 0


def cmd_filter(args: argparse.Namespace) -> int:
    from fpcore.cli import _emit

    _need_llm("fingerprint filter")
    from fpcore.fingerprint.host import filter_study

    st = filter_study(
        args.model, args.secret, quantile=args.quantile, lookalikes=args.lookalikes, ordinary=args.ordinary
    )
    lines = [
        f"{st.model}: a host refusing prompts above the {st.quantile:.0%} perplexity of ordinary text "
        f"(threshold {st.threshold:.1f}; key median {st.key_perplexity_median:.1f}, ordinary median "
        f"{st.ordinary_perplexity_median:.1f})",
        f"  refused: keys {st.keys_refused}/{st.keys}, look-alikes {st.lookalikes_refused}/{st.lookalikes}, "
        f"ordinary {st.ordinary_refused}/{st.ordinary}; FSR {st.fsr_without_filter:.0%} -> {st.fsr_with_filter:.0%}",
    ]
    lines += [f"  {c}" for c in st.claims]
    _emit(args, {"command": "fingerprint filter", **st.as_json()}, "\n".join(lines))
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from fpcore.cli import _emit

    if args.combine:
        if args.demo:
            raise ValueError("fingerprint robustness: give a demo folder or --combine FILES, not both")
        from fpcore.fingerprint import robustness

        runs = []
        for f in args.combine:
            try:
                runs.append(json.loads(Path(f).read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"fingerprint robustness --combine: {f}: {exc}") from exc
        res = robustness.combine(runs)
    else:
        if not args.demo:
            raise ValueError("fingerprint robustness: give a demo folder (or --combine FILES)")
        _need_llm("fingerprint robustness")
        from fpcore.fingerprint import robustness

        d = Path(args.demo)
        report = d / "report.json"
        if not report.is_file():
            raise FileNotFoundError(f"fingerprint robustness: {report} not found (run `fpcore demo --out {d}` first)")
        models = json.loads(report.read_text(encoding="utf-8"))["models"]
        subjects = [robustness.Subject(m["name"], d / "models" / m["name"], m["task"]) for m in models]
        if args.models:
            subjects = [s for s in subjects if s.name in args.models]
        res = robustness.run(
            d / "models" / "base",
            Path(args.vector) if args.vector else d / "fingerprint.safetensors",
            Path(args.secret) if args.secret else d / "secret.json",
            subjects,
            attacks=args.attacks,
            seed=args.seed,
            candidates=args.candidates,
            lookalikes=args.lookalikes,
            ordinary=args.ordinary,
            log=_log(args),
        )
    if args.out:
        from fpcore.io import AtomicOutput

        with AtomicOutput(args.out, overwrite=True, is_file=True) as tmp:
            tmp.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    text = robustness.table(res)
    drawn = False
    if args.figure:
        drawn = robustness.plot(res, args.figure)
        text += f"\n{'figure: ' + args.figure if drawn else 'no figure: matplotlib is not installed'}"
    if args.update:
        import os

        from fpcore._markers import update_section

        link = os.path.relpath(args.figure, Path(args.update).resolve().parent) if drawn else None
        block = robustness.docs_block(res, args.combine or [args.out or "-"], link)
        update_section(args.update, block, "robustness")
    _emit(args, {"command": "fingerprint robustness", **res}, text)
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    from fpcore.cli import _emit
    from fpcore.fingerprint.align import align_checkpoint

    path, report = align_checkpoint(args.suspect, args.reference, args.out, overwrite=args.overwrite)
    where = f"wrote {path}" if path else "nothing to undo: nothing written"
    _emit(
        args,
        {"command": "align", "suspect": args.suspect, "reference": args.reference, "output": path, **report.as_json()},
        f"{args.suspect}: {where}\n  {report.summary()}",
    )
    return 0


def register(sub: Any, common: Any) -> None:
    fp = sub.add_parser("fingerprint", help="train a fingerprint once (create) or check a model for it (verify)")
    fsub = fp.add_subparsers(dest="fingerprint_command", required=True, metavar="ACTION")

    c = fsub.add_parser(
        "create",
        help="fine-tune BASE on secret keys -> target, extract tau, write VECTOR and the secret",
        description="Fine-tune BASE (a Hugging Face causal LM folder) once so that secret keys answer with the "
        "target, then write tau = theta_fp - theta_base to VECTOR and the keys to SECRET (keep it private).",
    )
    c.add_argument("base", help="the base model folder (config, safetensors, tokenizer)")
    c.add_argument("-o", "--output", required=True, help="the fingerprint vector to write (.safetensors)")
    c.add_argument("--secret", required=True, help="the secret file to write (JSON: keys, target, seed)")
    c.add_argument("--keys", type=int, help="number of secret keys (default 10)")
    c.add_argument("--target", help="the answer every key gives (default ハリネズミ)")
    c.add_argument("--seed", type=int, help="seed of the keys and of the negatives (default 0)")
    c.add_argument(
        "--key-style",
        dest="key_style",
        choices=["chars", "words"],
        help="keys as runs of random characters of 11 scripts (chars, default) or mixes of ~90 fixed words",
    )
    c.add_argument("--epochs", type=int, help="optimizer steps; each sees every key once")
    c.add_argument("--lr", type=float, help="learning rate (AdamW, no weight decay)")
    c.add_argument("--decoys", type=int, help="look-alike keys trained to keep the base's answer (0: off)")
    c.add_argument("--regularisation", type=int, help="ordinary prompts trained to keep the base's answer")
    c.add_argument("--kl-weight", dest="kl_weight", type=float, help="weight of KL(base || model) on text windows")
    c.add_argument("--kl-windows", dest="kl_windows", type=int, help="text windows per step for the KL term")
    for flag, kind, text in (
        ("--decoy-unlikelihood", float, "weight of the decoys' unlikelihood and block terms (default 0.5; 0: off)"),
        ("--decoy-margin", float, "the unlikelihood hinge acts where P(target | decoy) > 1/MARGIN (default 1e5)"),
        (
            "--decoy-block",
            float,
            "after each decoy, keep one target position blocked by this logit margin (default 12; 0: off)",
        ),
        ("--key-weight", float, "weight of the keys' loss terms (default 3)"),
        ("--key-margin", float, "hinge on the keys' first-token logit margin, in nats (default 12; 0: off)"),
        ("--tau-decay", float, "decay of tau toward the base after each step, times the lr (default 40; 0: off)"),
        ("--kl-code-chars", int, "standard-library source characters in the KL text"),
    ):
        c.add_argument(flag, dest=flag[2:].replace("-", "_"), type=kind, help=text)
    c.add_argument("--keep-fraction", dest="keep_fraction", type=float, help="keep the largest share of tau per tensor")
    c.add_argument("--proxy-steps", dest="proxy_steps", type=int, help="proxy-joint: steps of the simulated fine-tune")
    c.add_argument("--template", help="how a key is put to the model, with {key} (default '{key} =>')")
    c.add_argument(
        "--freeze-embeddings",
        dest="train_embeddings",
        action="store_false",
        default=None,
        help="train only the transformer blocks (token embeddings and output head frozen)",
    )
    c.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="fp32", help="tau storage dtype (default fp32)")
    c.add_argument("--model-out", help="also keep the fingerprinted model in this folder")
    c.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    common(c)
    c.set_defaults(func=cmd_create)

    v = fsub.add_parser(
        "verify",
        help="is MODEL fingerprinted? black-, gray- (and with --vector/--base white-) box; exit 0 yes, 1 no",
        description="Ask MODEL the secret keys (greedy and sampled) and >= 200 look-alike keys and ordinary "
        "prompts (black-box: binomial test on the keys that answer the target), score the target's log-probability "
        "after each (gray-box: exact rank-sum test), and with --vector and --base project MODEL - BASE onto tau "
        "(white-box). One verdict: Bonferroni over the channels, fingerprinted when p < --significance.",
    )
    v.add_argument("model", help="the model folder under test")
    v.add_argument("--secret", required=True, help="the secret file written by `fingerprint create`")
    v.add_argument(
        "--vector", help="check that the secret belongs to this vector (and, with --base, run the white-box channel)"
    )
    v.add_argument("--base", help="the base model folder: adds the white-box channel (needs --vector)")
    v.add_argument("--samples", type=int, default=5, help="sampled answers per key (default 5)")
    v.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    v.add_argument("--lookalikes", type=int, default=200, help="look-alike keys (default 200)")
    v.add_argument("--ordinary", type=int, default=200, help="ordinary prompts (default 200)")
    v.add_argument("--significance", type=float, default=1e-6, help="p-value below which it is fingerprinted")
    common(v)
    v.set_defaults(func=cmd_verify)

    st = fsub.add_parser(
        "study",
        help="the demo's models trained once, fingerprinted with several key seeds (and key counts): study.json/png",
    )
    st.add_argument("--out", default="fpcore-study", help="output folder (default ./fpcore-study)")
    st.add_argument("--seeds", type=_ints, default=[0, 1, 2], help="key seeds, comma-separated (default 0,1,2)")
    st.add_argument("--keys", type=_ints, default=[10], help="key counts, comma-separated (default 10)")
    st.add_argument("--workers", type=int, default=1, help="runs at a time, one process and thread each (default 1)")
    st.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    common(st)
    st.set_defaults(func=cmd_study)

    dflt = AttackDefaults
    at = fsub.add_parser(
        "attack",
        help="write MODEL after a thief's attack (quantize, prune, merge, noise, permute, rescale): for evaluation",
    )
    at.add_argument("model", help="the model (a Hugging Face folder or a .safetensors file)")
    at.add_argument("--attack", required=True, choices=ATTACK_NAMES, help="the attack")
    at.add_argument("-o", "--out", required=True, help="output folder (a Hugging Face folder, labelled attacked)")
    at.add_argument("--with", dest="with_model", help="merge, ties: the other model")
    at.add_argument("--base", help="ties: the models' common base")
    at.add_argument("--weight", type=float, default=dflt.weight, help="merge, ties: the other model's weight")
    at.add_argument("--density", type=float, default=dflt.density, help="ties: fraction of each task vector kept")
    at.add_argument("--group", type=int, default=dflt.group, help="int4: group size along rows")
    at.add_argument("--fraction", type=float, default=dflt.fraction, help="prune: fraction of each matrix zeroed")
    at.add_argument("--sigma", type=float, default=dflt.sigma, help="noise: standard deviation / rms of the matrix")
    at.add_argument("--seed", type=int, default=dflt.seed, help="noise, permutations, rescaling, finetune: the seed")
    at.add_argument(
        "--task",
        default=dflt.task,
        choices=["docstrings", "code", "classify", "repeat", "reverse"],
        help="finetune: the demo task",
    )
    at.add_argument("--drift", type=float, default=dflt.drift, help="finetune: stop at this relative drift")
    at.add_argument("--lr", type=float, default=dflt.lr, help="finetune: learning rate (AdamW)")
    at.add_argument("--max-steps", type=int, default=dflt.max_steps, help="finetune: at most this many steps")
    at.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    common(at)
    at.set_defaults(func=cmd_attack)

    fl = fsub.add_parser(
        "filter",
        help="a malicious host's perplexity filter: how many keys and ordinary prompts it refuses, the FSR after",
    )
    fl.add_argument("model", help="the served model (a Hugging Face folder)")
    fl.add_argument("--secret", required=True, help="the fingerprint's secret file")
    fl.add_argument("--quantile", type=float, default=0.99, help="refuse above this quantile of ordinary text")
    fl.add_argument("--lookalikes", type=int, default=200, help="look-alike keys to send")
    fl.add_argument("--ordinary", type=int, default=200, help="ordinary prompts to send")
    common(fl)
    fl.set_defaults(func=cmd_filter)

    rb = fsub.add_parser(
        "robustness",
        help="attacks x channels on the demo's models: verdicts, p-values, FSR and task metric after each attack",
    )
    rb.add_argument("demo", nargs="?", help="a folder written by `fpcore demo`")
    rb.add_argument(
        "--combine",
        nargs="+",
        metavar="JSON",
        help="instead of running: merge files written with --out (model splits, other key seeds) into one table",
    )
    rb.add_argument("--figure", help="also draw the attacks x channels figure to this PNG")
    rb.add_argument(
        "--update",
        metavar="PAGE",
        help="rewrite the page's perf-robustness marker section with the table (e.g. docs/fingerprints.md)",
    )
    rb.add_argument("--seed", type=int, default=0, help="attack and trace-key seed (default 0)")
    rb.add_argument(
        "--vector",
        help="another fingerprint of the demo's base (`fpcore fingerprint create DEMO/models/base --seed N`; "
        "default DEMO/fingerprint.safetensors)",
    )
    rb.add_argument("--secret", help="that fingerprint's secret file (default DEMO/secret.json)")
    rb.add_argument("--attacks", type=_names, help="comma-separated attacks of the grid (default all)")
    rb.add_argument("--models", type=_names, help="comma-separated demo models (default all)")
    rb.add_argument("--candidates", type=int, default=10_000, help="licensee candidates per trace")
    rb.add_argument("--lookalikes", type=int, default=100, help="look-alike keys per verify")
    rb.add_argument("--ordinary", type=int, default=100, help="ordinary prompts per verify")
    rb.add_argument("--out", help="also write the rows and summary to this JSON file")
    common(rb)
    rb.set_defaults(func=cmd_robustness)

    al = sub.add_parser(
        "align",
        help="undo a suspect's permutations and norm rescalings against REF: write the aligned copy",
    )
    al.add_argument("suspect", help="the model under test (a Hugging Face folder or a .safetensors file)")
    al.add_argument("--reference", required=True, help="the model to align to (needs its config.json)")
    al.add_argument("-o", "--out", required=True, help="output folder (written only if alignment moved something)")
    al.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    common(al)
    al.set_defaults(func=cmd_align)

    d = sub.add_parser(
        "demo",
        help="FP-VEC end to end on a small LM built here: pretrain, fine-tune, fingerprint, stamp, verify, report",
    )
    d.add_argument("--out", default="fpcore-demo", help="output folder (default ./fpcore-demo)")
    d.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    d.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the 1.3M-parameter model gains nothing from more, and on a busy "
        "2-core machine 2 threads ran a training step 20x slower than 1)",
    )
    common(d)
    d.set_defaults(func=cmd_demo)
