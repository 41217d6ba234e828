"""`fpcore demo` (= `make demo`): FP-VEC end to end on a language model built and trained here.

1. A byte-level BPE tokenizer and a small Llama-style LM, pretrained on the Python documentation
   that ships with Python (pydoc_data.topics) mixed with standard-library source files (disjoint from
   the downstream tasks' data); held-out perplexity on every 10th window.
2. Downstream models fine-tuned from the base on other tasks until they reach a set drift
   |theta_down - theta_base| / |theta_base| (low: <= 7 %, high: 15-40 %), each with a held-out metric.
3. The base fingerprinted once (fpcore.fingerprint.create); tau extracted; every downstream model
   stamped in one call (fpcore.stamping.stamp, = `fpcore stamp VECTOR M1 M2 ... -o OUT`).
4. Per model: drift, FSR before/after, false-trigger rates, metric before/after, white-box detect
   alpha_hat/cosine stamped and unstamped, stamping time -> report.md, report.json, fsr_vs_drift.png.
"""

from __future__ import annotations

import copy
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fpcore import ops, stamping
from fpcore.detect import detect
from fpcore.fingerprint import data, tasks, tinylm
from fpcore.fingerprint.create import create
from fpcore.fingerprint.lm import LM, load_lm, perplexity, save_lm, windows_of
from fpcore.fingerprint.secret import Secret
from fpcore.fingerprint.train import FingerprintOptions, fit
from fpcore.fingerprint.verify import SIGNIFICANCE, verify
from fpcore.io import AtomicOutput, Checkpoint


@dataclass
class Downstream:
    """A downstream model: fine-tune the base on `task` at `lr` until drift reaches `drift` (or max_steps)."""

    name: str
    task: str
    lr: float
    drift: float
    max_steps: int


LOW_DRIFT = 0.07
DOWNSTREAM = (
    Downstream("docstrings", "docstrings", 3e-4, 0.03, 200),
    Downstream("classify", "classify", 3e-4, 0.05, 300),
    Downstream("code", "code", 5e-4, 0.065, 300),
    Downstream("docstrings-mid", "docstrings", 1e-3, 0.11, 300),
    Downstream("code-far", "code", 2e-3, 0.20, 600),
    Downstream("classify-far", "classify", 2e-3, 0.35, 900),
)


@dataclass
class DemoConfig:
    model: tinylm.TinyConfig = field(default_factory=tinylm.TinyConfig)
    pretrain_steps: int = 1000
    pretrain_lr: float = 3e-3
    # characters of standard-library Python source mixed into pretraining (tasks.pretrain_code_texts;
    # disjoint from the downstream tasks' data): a real pretrained LLM has seen code (0: documentation only)
    pretrain_code_chars: int = 460_000
    downstream: tuple[Downstream, ...] = DOWNSTREAM
    fingerprint: FingerprintOptions = field(default_factory=FingerprintOptions)
    alpha: float = 1.0
    lookalikes: int = 200
    ordinary: int = 200
    samples: int = 5
    seed: int = 0


def drift(model: str | Path, base: str | Path) -> float:
    """|theta_model - theta_base| / |theta_base| over every tensor (fpcore.ops.pair_stats, streamed)."""
    mck, bck = Checkpoint(model), Checkpoint(base)
    names = bck.names()
    s = ops.pair_stats([mck.get(n).float() for n in names], [bck.get(n).float() for n in names])
    return s.l2 / s.norm_b


def _param_drift(model: Any, ref: dict[str, torch.Tensor], ref_norm: float) -> float:
    sq = sum(float((p.detach() - ref[n]).pow(2).sum()) for n, p in model.named_parameters())
    return sq**0.5 / ref_norm


def finetune(lm: LM, task: tasks.Task, spec: Downstream) -> tuple[LM, int]:
    """A copy of the base fine-tuned on `task` until its drift reaches spec.drift; returns it and the steps."""
    model = copy.deepcopy(lm.model)
    ref = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    ref_norm = sum(float(p.pow(2).sum()) for p in ref.values()) ** 0.5
    stop = lambda i: (i + 1) % 5 == 0 and _param_drift(model, ref, ref_norm) >= spec.drift  # noqa: E731
    losses = fit(model, lambda i: task.loss(model, i), spec.max_steps, spec.lr, warmup=10, stop=stop)
    return LM(model, lm.tokenizer), len(losses)


class _Clock:
    def __init__(self, log: Callable[[str], None]) -> None:
        self.t0 = time.perf_counter()
        self.log = log
        self.phases: dict[str, float] = {}
        self._last = self.t0

    def say(self, msg: str) -> None:
        self.log(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}")

    def phase(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = now - self._last
        self._last = now


def run(out: str | Path, cfg: DemoConfig | None = None, *, overwrite: bool = False, log=None) -> dict[str, Any]:
    """Run the whole demo into folder `out`; returns the report (also written as out/report.json)."""
    cfg = cfg or DemoConfig()
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    clock = _Clock(log or (lambda m: print(m, file=sys.stderr, flush=True)))
    say = clock.say
    with AtomicOutput(out, overwrite=overwrite) as tmp:
        report = _run(tmp, out, cfg, clock)
        _write_report(tmp, report)
    say(f"done in {report['seconds_total']:.0f} s: {out}/report.md, report.json, fsr_vs_drift.png")
    return report


def _run(tmp: Path, out: Path, cfg: DemoConfig, clock: _Clock) -> dict[str, Any]:
    w = build(tmp, cfg, clock)
    m = measure(tmp, tmp / "models", w["lm"], w["test_w"], w["tasks"], w["models"], cfg, clock)
    report = {
        "command": f"fpcore demo --out {out}",
        "out": str(out),
        "machine": machine(),
        "base": {**w["base"], **m.pop("base")},
        **m,
        "phases_seconds": clock.phases,
        "seconds_total": time.perf_counter() - clock.t0,
    }
    report["floors"] = floors(report)
    return report


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(
            (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo", encoding="utf-8") if "model name" in ln), ""
        )
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu or platform.processor(),
        "cpus": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def build(tmp: Path, cfg: DemoConfig, clock: _Clock) -> dict[str, Any]:
    """Steps 1-2: tokenizer, base (pretrained, saved to tmp/models/base), downstream models (saved beside
    it). Returns the loaded base, the held-out windows, the tasks and the report's base/model entries."""
    say = clock.say
    models = tmp / "models"
    models.mkdir()
    # 1. tokenizer and base model
    docs = data.documentation()
    code = tasks.pretrain_code_texts(cfg.pretrain_code_chars) if cfg.pretrain_code_chars > 0 else []
    say(
        f"tokenizer: byte-level BPE, vocabulary {cfg.model.vocab}, trained on {len(docs)} documentation topics"
        f" and {len(code)} standard-library source files ({sum(map(len, code)):,} characters)"
    )
    corpus = docs + code
    tok = tinylm.train_tokenizer(corpus, cfg.model.vocab)
    lm = tinylm.build(cfg.model, tok, seed=cfg.seed)
    n_params = sum(p.numel() for p in lm.model.parameters())
    train_w, test_w = held_out_windows(lm, cfg)
    ppl_init = perplexity(lm.model, test_w)
    say(
        f"base: Llama {cfg.model.layers}x{cfg.model.hidden}, {n_params / 1e6:.2f}M parameters; pretraining "
        f"{cfg.pretrain_steps} steps on {train_w.numel():,} tokens (held out: {test_w.numel():,})"
    )
    clock.phase("setup")
    losses = tinylm.pretrain(lm, train_w, cfg.pretrain_steps, cfg.pretrain_lr, seed=cfg.seed, log=say)
    ppl_base = perplexity(lm.model, test_w)
    say(f"base held-out perplexity {ppl_base:.2f} (untrained {ppl_init:.0f})")
    base_dir = models / "base"
    base_dir.mkdir()
    save_lm(lm, base_dir)
    lm = load_lm(base_dir)
    clock.phase("pretrain")
    # 2. downstream models
    built: dict[str, tasks.Task] = {}
    down: list[dict[str, Any]] = []
    for spec in cfg.downstream:
        if spec.task not in built:
            built[spec.task] = task_by_name(spec.task, lm, cfg.seed)
        task = built[spec.task]
        t0 = time.perf_counter()
        dm, steps = finetune(lm, task, spec)
        d = models / spec.name
        d.mkdir()
        save_lm(dm, d)
        entry = {
            "name": spec.name,
            "task": spec.task,
            "metric_name": task.metric_name,
            "higher_is_better": task.higher_is_better,
            "metric_base": task.evaluate(lm),
            "metric_before": task.evaluate(dm),
            "drift": drift(d, base_dir),
            "finetune": {"lr": spec.lr, "steps": steps, "drift_goal": spec.drift, "seconds": time.perf_counter() - t0},
        }
        down.append(entry)
        say(
            f"downstream {spec.name}: {steps} steps, drift {100 * entry['drift']:.1f}%, {task.metric_name} "
            f"{entry['metric_base']:.2f} (base) -> {entry['metric_before']:.2f}"
        )
    clock.phase("downstream")
    base = {
        "parameters": n_params,
        "config": asdict(cfg.model),
        "pretrain_steps": cfg.pretrain_steps,
        "pretrain_corpus": {
            "documentation_topics": len(docs),
            "documentation_chars": sum(map(len, docs)),
            "code_files": len(code),
            "code_chars": sum(map(len, code)),
        },
        "pretrain_final_loss": losses[-1],
        "tokens_train": int(train_w.numel()),
        "tokens_held_out": int(test_w.numel()),
        "perplexity_untrained": ppl_init,
        "perplexity": ppl_base,
    }
    return {"lm": lm, "test_w": test_w, "tasks": built, "models": down, "base": base}


def held_out_windows(lm: LM, cfg: DemoConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The pretraining windows and the held-out ones (every 10th) of the base's corpus."""
    docs = data.documentation()
    code = tasks.pretrain_code_texts(cfg.pretrain_code_chars) if cfg.pretrain_code_chars > 0 else []
    windows = windows_of([lm.encode(d) for d in docs + code], cfg.model.context, lm.bos, lm.eos)
    held = torch.arange(windows.shape[0]) % 10 == 0
    return windows[~held], windows[held]


def _channels(v: Any) -> dict[str, dict[str, Any]]:
    """A verify result's channels, as the report keeps them: p, statistic and figures per channel."""
    return {k: {"p": c["p"], c["statistic_name"]: c["statistic"], **c["figures"]} for k, c in v.channels.items()}


def measure(
    tmp: Path,
    models: Path,
    lm: LM,
    test_w: torch.Tensor,
    built: dict[str, tasks.Task],
    down: list[dict[str, Any]],
    cfg: DemoConfig,
    clock: _Clock,
) -> dict[str, Any]:
    """Steps 3-4 into `tmp`: fingerprint the base in `models` once (cfg.fingerprint), stamp every downstream
    model, verify every model before and after on every channel, and the white-box verdict on the
    unstamped models after each function-preserving transformation. `down` is not modified."""
    say = clock.say
    base_dir = models / "base"
    down = [dict(e) for e in down]
    # 3. fingerprint once, extract tau
    fp_dir, vec, sec_path = tmp / "base-fingerprinted", tmp / "fingerprint.safetensors", tmp / "secret.json"
    say(f"fingerprinting the base once ({cfg.fingerprint.keys} keys, seed {cfg.fingerprint.seed})")
    cr = create(lm, vec, sec_path, cfg.fingerprint, model_out=fp_dir, log=lambda m: say("  " + m))
    fp = load_lm(fp_dir)
    ppl_fp = perplexity(fp.model, test_w)
    say(f"fingerprinted base: held-out perplexity {ppl_fp:.2f}; tau in {vec.name}")
    clock.phase("fingerprint")
    # 4. stamp every downstream model in one call
    stamped_dir = tmp / "stamped"
    t0 = time.perf_counter()
    st = stamping.stamp([(vec, cfg.alpha)], [models / e["name"] for e in down], stamped_dir)
    stamp_seconds = time.perf_counter() - t0
    say(f"stamped {len(st.outputs)} models in one pass: {stamp_seconds:.2f} s")
    clock.phase("stamp")
    # 5. measure: every channel before and after
    secret = Secret.load(sec_path)
    vkw = {"lookalikes": cfg.lookalikes, "ordinary": cfg.ordinary, "samples": cfg.samples, "seed": cfg.seed}
    wkw = {"vector": vec, "base": base_dir}
    # loaded LMs keep their folder, which the white-box channel reads
    v_base, v_fp = verify(lm, secret, **vkw, **wkw), verify(fp, secret, **vkw, **wkw)
    say(f"base: {v_base.verdict}")
    say(f"fingerprinted base: {v_fp.verdict}")
    for e in down:
        stamped = load_lm(stamped_dir / e["name"])  # loaded once: verified, then its task metric
        vb = verify(models / e["name"], secret, **vkw, **wkw)
        va = verify(stamped, secret, **vkw, **wkw)
        task = built[e["task"]]
        wa, wb = va.channels["white_box"]["figures"], vb.channels["white_box"]["figures"]
        e.update(
            fsr_before=vb.fsr,
            fsr_after=va.fsr,
            sampled_rate_after=va.sampled_rate,
            false_trigger_rate=va.false_trigger_rate,
            false_trigger_lookalike=va.lookalike_rate,
            false_trigger_ordinary=va.ordinary_rate,
            false_trigger_rate_before=vb.false_trigger_rate,
            fingerprinted_before=vb.fingerprinted,
            fingerprinted_after=va.fingerprinted,
            p_before=vb.p_value,
            p_after=va.p_value,
            channels_before=_channels(vb),
            channels_after=_channels(va),
            verdict_before=vb.verdict,
            verdict_after=va.verdict,
            metric_after=task.evaluate(stamped),
            detect_alpha_stamped=wa["alpha_hat"],
            detect_alpha_unstamped=wb["alpha_hat"],
            detect_alpha_star_stamped=wa["alpha_star"],
            detect_alpha_star_unstamped=wb["alpha_star"],
            stamp_seconds=stamp_seconds / len(down),
        )
        ch = e["channels_after"]
        say(
            f"{e['name']}: drift {100 * e['drift']:.1f}%  FSR {100 * vb.fsr:.0f}% -> {100 * va.fsr:.0f}%  "
            f"p {vb.p_value:.2g} -> {va.p_value:.2g} (black {ch['black_box']['p']:.2g}, "
            f"gray {ch['gray_box']['p']:.2g}, white {ch['white_box']['p']:.2g})  "
            f"false triggers {100 * va.false_trigger_rate:.2f}%  "
            f"{task.metric_name} {e['metric_before']:.2f} -> {e['metric_after']:.2f}"
        )
    transformed = transformed_verdicts({"base": base_dir, **{e["name"]: models / e["name"] for e in down}}, vec, tmp)
    say(
        f"function-preserving transformations of the {len(down) + 1} unstamped models: "
        f"{sum(t['fingerprinted'] for t in transformed)} of {len(transformed)} flagged by the white-box channel"
    )
    clock.phase("verify")
    return {
        "base": {
            "perplexity_fingerprinted": ppl_fp,
            "fsr": v_base.fsr,
            "false_trigger_rate": v_base.false_trigger_rate,
            "fingerprinted": v_base.fingerprinted,
            "p": v_base.p_value,
            "channels": _channels(v_base),
        },
        "fingerprint": {
            "options": cr.options,
            "train_seconds": cr.train_seconds,
            "final_loss": cr.final_loss,
            "vector": "fingerprint.safetensors",
            "alpha": cfg.alpha,
            "fsr": v_fp.fsr,
            "sampled_rate": v_fp.sampled_rate,
            "false_trigger_lookalike": v_fp.lookalike_rate,
            "false_trigger_ordinary": v_fp.ordinary_rate,
            "lookalikes": v_fp.lookalikes,
            "ordinary_prompts": v_fp.ordinary,
            "fingerprinted": v_fp.fingerprinted,
            "p": v_fp.p_value,
            "channels": _channels(v_fp),
            "verdict": v_fp.verdict,
        },
        "stamp": {
            "command": "fpcore stamp fingerprint.safetensors "
            + " ".join(f"models/{e['name']}" for e in down)
            + " -o stamped",
            "seconds": stamp_seconds,
            "models": len(down),
        },
        "models": down,
        "transformed": transformed,
    }


def transformed_verdicts(models: dict[str, Path], vec: Path, tmp: Path, seed: int = 1) -> list[dict[str, Any]]:
    """The white-box verdict on every model in `models` (unstamped) after each of fpcore.fingerprint.
    transforms; black- and gray-box answers are the model's function, which the transformations keep."""
    from transformers import AutoConfig

    from fpcore.fingerprint import transforms
    from fpcore.io import write_safetensors

    base = models["base"]
    out = []
    scratch = tmp / ".transformed.safetensors"
    for name, folder in models.items():
        ck = Checkpoint(folder)
        sd = {n: ck.get(n) for n in ck.names()}
        config = AutoConfig.from_pretrained(folder)
        for t in transforms.TRANSFORMS:
            write_safetensors(scratch, transforms.apply(t, sd, config, seed))
            r = detect(vec, scratch, base)
            out.append(
                {"model": name, "transform": t, "fingerprinted": r.detected, "p": r.p, "z": r.z}
                | {"alpha_star": r.alpha_star, "alpha_hat": r.alpha_hat, "cosine": r.cosine}
            )
    scratch.unlink(missing_ok=True)
    return out


def task_by_name(name: str, lm: LM, seed: int) -> tasks.Task:
    """The demo task `name` (code, docstrings, classify, repeat, reverse) for `lm`."""
    if name == "code":
        return tasks.text_task("code", tasks.code_texts(), lm, seed=seed)
    if name == "docstrings":
        return tasks.text_task("docstrings", tasks.docstring_texts(), lm, seed=seed)
    if name == "classify":
        return tasks.classify_task(name, lm, seed=seed)
    if name in ("repeat", "reverse"):
        return tasks.word_task(name, lm, reverse=name == "reverse", seed=seed)
    raise ValueError(f"demo: unknown task {name!r} (code, docstrings, classify, repeat, reverse)")


def _metric_ok(e: dict[str, Any]) -> bool:
    b, a = e["metric_before"], e["metric_after"]
    if e["higher_is_better"]:  # accuracy in points
        return a >= b - 2.0
    return a <= b * 1.05  # perplexity: within 5 % relative


VERDICT_DRIFT = 0.12  # every stamped model up to this drift must be called fingerprinted


def floors(r: dict[str, Any]) -> dict[str, Any]:
    """The issue's floors, each with the measured numbers and met: true/false; `goals` (FSR) apart."""
    low = [e for e in r["models"] if e["drift"] <= LOW_DRIFT]
    # each negative set on its own (look-alike keys, ordinary prompts): the worse of the two counts
    ft = [(e["name"], max(e["false_trigger_lookalike"], e["false_trigger_ordinary"])) for e in r["models"]]
    fp = r["fingerprint"]
    ft.append(("base-fingerprinted", max(fp["false_trigger_lookalike"], fp["false_trigger_ordinary"])))
    ppl_ratio = r["base"]["perplexity_fingerprinted"] / r["base"]["perplexity"]
    transfer = [e["drift"] for e in r["models"] if e["fsr_after"] == 1.0]
    sig = SIGNIFICANCE
    verdict_models = [e for e in r["models"] if e["drift"] <= VERDICT_DRIFT]
    # an unstamped model is falsely accused by the combined verdict or by any one channel's p alone
    unstamped = [("base", r["base"]["fingerprinted"], r["base"].get("channels", {}))]
    unstamped += [(e["name"], e["fingerprinted_before"], e.get("channels_before", {})) for e in r["models"]]
    false_verdicts = [n for n, found, ch in unstamped if found or any(c["p"] < sig for c in ch.values())]
    false_verdicts += [f"{t['model']}/{t['transform']}" for t in r.get("transformed", []) if t["fingerprinted"]]
    return {
        "stamped_fingerprinted_up_to_12pct_drift": {
            "met": bool(verdict_models)
            and all(e["fingerprinted_after"] and e["p_after"] < sig for e in verdict_models),
            "measured": {e["name"]: e["p_after"] for e in verdict_models},
        },
        "no_false_verdicts": {
            "met": not false_verdicts,
            "measured": {
                "unstamped models": len(unstamped),
                "transformed unstamped models": len(r.get("transformed", [])),
                "falsely fingerprinted": len(false_verdicts),
            },
            "false": false_verdicts,
        },
        "false_triggers_le_1pct": {"met": all(v <= 0.01 for _, v in ft), "measured": dict(ft)},
        "low_drift_metric_within_2pt_or_5pct": {
            "met": all(_metric_ok(e) for e in low),
            "measured": {e["name"]: [e["metric_before"], e["metric_after"]] for e in low},
        },
        "fingerprinted_base_perplexity_within_2pct": {"met": ppl_ratio <= 1.02, "measured": ppl_ratio},
        "goals": {
            "stamped_fsr_100_at_low_drift": all(e["fsr_after"] == 1.0 for e in low),
            "fsr_after_at_low_drift": {e["name"]: e["fsr_after"] for e in low},
            "unstamped_fsr_0": all(e["fsr_before"] == 0.0 for e in r["models"]) and r["base"]["fsr"] == 0.0,
            "largest_drift_with_full_transfer": max(transfer) if transfer else None,
        },
        "downstream_low_drift_count": len(low),
        "downstream_high_drift_count": sum(0.15 <= e["drift"] <= 0.40 for e in r["models"]),
    }


def _write_report(tmp: Path, r: dict[str, Any]) -> None:
    from fpcore.fingerprint.report import markdown, plot

    (tmp / "report.json").write_text(json.dumps(r, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp / "report.md").write_text(markdown(r), encoding="utf-8")
    plot(r, tmp / "fsr_vs_drift.png")
