"""What a model thief does next: weight-space attacks on a stamped model, for evaluating fingerprints
and licensee codes (`fpcore fingerprint attack`). Every output is labelled as an attacked model.

Each attack takes a state_dict (name -> tensor, Hugging Face names) and returns a new one in the same
dtypes; inputs are never modified. Arithmetic is float32, rounded once to each tensor's dtype.
"Matrices" are the floating-point tensors with >= 2 dimensions (linear weights, embeddings): the
quantizers and the pruner leave norms and biases alone, as weight-only schemes do.

- `int8`: per-row symmetric round trip (scale = max |row| / 127, round to nearest, clamp +-127).
- `int4`: per-group asymmetric round trip along each row (groups of `group`, default 32; scale =
  (max - min) / 15, zero point round(-min / scale), codes 0..15).
- `prune`: magnitude pruning, the `fraction` of each matrix's elements smallest in |w| set to 0.
- `merge`: linear merge (1 - w) * model + w * other, every floating-point tensor.
- `ties`: TIES-merging (Yadav et al. 2023) of the two models' task vectors against `base`: each trimmed
  to its top `density` by magnitude, a sign elected per element by the larger total mass, the agreeing
  entries averaged with weights (1 - w, w), added to base.
- `noise`: Gaussian noise of `sigma` x rms(matrix) added to every matrix (seeded).
- `permute_mlp`, `permute_heads`, `permute_residual`, `rescale_norms`: the function-preserving
  transforms of fpcore.fingerprint.transforms (seeded).
- `finetune` (`finetune_model`; a Hugging Face folder with its tokenizer, and the `llm` extra): further
  fine-tuning on a demo task (`task`: docstrings, code, classify, repeat, reverse) with AdamW at `lr`
  until the drift |theta - theta_model| / |theta_model| reaches `drift` (checked every 5 steps) or
  `max_steps`: the removal attack of the literature, the same loop the demo's downstream models use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fpcore.fingerprint import transforms

StateDict = Mapping[str, torch.Tensor]

WEIGHT_ATTACKS = ("int8", "int4", "prune", "merge", "ties", "noise")
ATTACKS = WEIGHT_ATTACKS + tuple(transforms.TRANSFORMS) + ("finetune",)


@dataclass(frozen=True)
class AttackOptions:
    group: int = 32  # int4
    fraction: float = 0.2  # prune
    weight: float = 0.5  # merge, ties: the other model's weight
    density: float = 0.2  # ties
    sigma: float = 0.01  # noise, relative to each matrix's rms
    seed: int = 0  # noise, the transforms, finetune's data order
    task: str = "docstrings"  # finetune
    drift: float = 0.1  # finetune: stop at this relative drift
    lr: float = 1e-3  # finetune
    max_steps: int = 600  # finetune


def _is_matrix(t: torch.Tensor) -> bool:
    return t.is_floating_point() and t.dim() >= 2


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).reshape(t.shape[0], -1)


def _matrices(sd: StateDict, fn: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """fn on every matrix (in sd's order), a copy of every other tensor."""
    return {n: fn(t) if _is_matrix(t) else t.clone() for n, t in sd.items()}


def int8(sd: StateDict) -> dict[str, torch.Tensor]:
    def one(t: torch.Tensor) -> torch.Tensor:
        m = _rows(t)
        scale = m.abs().amax(dim=1, keepdim=True).clamp_min(1e-30) / 127.0
        return ((m / scale).round().clamp(-127, 127) * scale).reshape(t.shape).to(t.dtype)

    return _matrices(sd, one)


def int4(sd: StateDict, group: int = 32) -> dict[str, torch.Tensor]:
    if group < 2:
        raise ValueError(f"attack int4: group must be >= 2, got {group}")

    def one(t: torch.Tensor) -> torch.Tensor:
        m = _rows(t)
        cols = m.shape[1]
        pad = (-cols) % group
        g = torch.nn.functional.pad(m, (0, pad), value=0.0).reshape(m.shape[0], -1, group)
        if pad:  # the padding must not widen the last group's range: give it the group's first value
            g[:, -1, group - pad :] = g[:, -1, :1]
        lo, hi = g.amin(dim=2, keepdim=True), g.amax(dim=2, keepdim=True)
        scale = ((hi - lo) / 15.0).clamp_min(1e-30)
        zp = (-lo / scale).round()
        q = ((g / scale).round() + zp).clamp(0, 15)
        deq = ((q - zp) * scale).reshape(m.shape[0], -1)[:, :cols]
        return deq.reshape(t.shape).to(t.dtype)

    return _matrices(sd, one)


def prune(sd: StateDict, fraction: float) -> dict[str, torch.Tensor]:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"attack prune: fraction must be in [0, 1), got {fraction}")

    def one(t: torch.Tensor) -> torch.Tensor:
        k = int(fraction * t.numel())
        flat = t.detach().reshape(-1)
        idx = flat.to(torch.float32).abs().argsort(stable=True)[:k]  # ties broken by position: deterministic
        pruned = flat.clone()
        pruned[idx] = 0
        return pruned.reshape(t.shape)

    return _matrices(sd, one)


def _check_same(sd: StateDict, other: StateDict, what: str) -> None:
    missing = sorted(set(sd) ^ set(other))
    if missing:
        raise ValueError(f"attack {what}: the models' tensors differ (e.g. {missing[0]!r} is in only one)")
    for n, t in sd.items():
        if tuple(other[n].shape) != tuple(t.shape):
            raise ValueError(
                f"attack {what}: tensor {n!r} is {tuple(t.shape)} in the model, {tuple(other[n].shape)} in the other"
            )


def merge(sd: StateDict, other: StateDict, weight: float) -> dict[str, torch.Tensor]:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"attack merge: weight must be in [0, 1], got {weight}")
    _check_same(sd, other, "merge")
    out = {}
    for n, t in sd.items():
        if not t.is_floating_point():
            out[n] = t.clone()
            continue
        a, b = t.to(torch.float32), other[n].to(torch.float32)
        out[n] = ((1.0 - weight) * a + weight * b).to(t.dtype)
    return out


def _trim(tv: torch.Tensor, density: float) -> torch.Tensor:
    k = int(round(density * tv.numel()))
    if k >= tv.numel():
        return tv
    if k == 0:
        return torch.zeros_like(tv)
    flat = tv.reshape(-1)
    keep = flat.abs().argsort(descending=True, stable=True)[:k]
    out = torch.zeros_like(flat)
    out[keep] = flat[keep]
    return out.reshape(tv.shape)


def ties(sd: StateDict, other: StateDict, base: StateDict, weight: float, density: float) -> dict[str, torch.Tensor]:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"attack ties: weight must be in [0, 1], got {weight}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"attack ties: density must be in (0, 1], got {density}")
    _check_same(sd, other, "ties")
    _check_same(sd, base, "ties (against --base)")
    out = {}
    for n, t in sd.items():
        if not t.is_floating_point():
            out[n] = t.clone()
            continue
        b0 = base[n].to(torch.float32)
        tvs = [_trim(t.to(torch.float32) - b0, density), _trim(other[n].to(torch.float32) - b0, density)]
        ws = [1.0 - weight, weight]
        mass = sum(w * tv for w, tv in zip(ws, tvs, strict=True))
        sign = torch.where(mass >= 0, 1.0, -1.0)
        num = torch.zeros_like(b0)
        den = torch.zeros_like(b0)
        for w, tv in zip(ws, tvs, strict=True):
            agree = ((tv * sign) > 0).to(torch.float32)
            num += w * tv * agree
            den += w * agree
        merged = torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num))
        out[n] = (b0 + merged).to(t.dtype)
    return out


def noise(sd: StateDict, sigma: float, seed: int = 0) -> dict[str, torch.Tensor]:
    if sigma < 0:
        raise ValueError(f"attack noise: sigma must be >= 0, got {sigma}")
    g = torch.Generator().manual_seed(seed)

    def one(t: torch.Tensor) -> torch.Tensor:
        m = t.detach().to(torch.float32)
        rms = float(m.pow(2).mean().sqrt())
        return (m + torch.randn(m.shape, generator=g) * (sigma * rms)).to(t.dtype)

    out = _matrices({n: sd[n] for n in sorted(sd)}, one)  # a fixed order: the same seed, the same noise
    return {n: out[n] for n in sd}


def attack(
    name: str,
    sd: StateDict,
    opts: AttackOptions = AttackOptions(),
    *,
    other: StateDict | None = None,
    base: StateDict | None = None,
    config: object = None,
) -> dict[str, torch.Tensor]:
    """ATTACKS[name] on sd. merge needs `other`; ties needs `other` and `base`; permute_heads needs the
    model's transformers `config` (head counts)."""
    if name == "int8":
        return int8(sd)
    if name == "int4":
        return int4(sd, opts.group)
    if name == "prune":
        return prune(sd, opts.fraction)
    if name in ("merge", "ties"):
        if other is None:
            raise ValueError(f"attack {name}: needs the other model (--with OTHER)")
        if name == "merge":
            return merge(sd, other, opts.weight)
        if base is None:
            raise ValueError("attack ties: needs the models' common base (--base BASE)")
        return ties(sd, other, base, opts.weight, opts.density)
    if name == "noise":
        return noise(sd, opts.sigma, opts.seed)
    if name == "finetune":
        raise ValueError("attack finetune: trains a model folder (finetune_model), not a state_dict")
    if name in transforms.TRANSFORMS:
        if name == "permute_heads" and config is None:
            raise ValueError("attack permute_heads: needs the model's config.json (head counts)")
        return transforms.apply(name, sd, config, opts.seed)
    raise ValueError(f"attack: unknown attack {name!r} (one of {', '.join(ATTACKS)})")


def attack_model(
    name: str,
    model: str | Path,
    out: str | Path,
    opts: AttackOptions = AttackOptions(),
    *,
    other: str | Path | None = None,
    base: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Writes MODEL after the attack as a Hugging Face folder at OUT (MODEL's other files copied; the
    weights in one model.safetensors whose metadata says it is an attacked model, for evaluation).
    Appears whole or not at all. Returns a summary: the attack, its options, and the relative change."""
    from fpcore.fingerprint.folders import load_config, load_state, write_like

    model, out = Path(model), Path(out)
    if name not in ATTACKS:
        raise ValueError(f"attack: unknown attack {name!r} (one of {', '.join(ATTACKS)})")
    if out.exists() and not overwrite:
        raise FileExistsError(f"attack: {out} already exists (pass --overwrite to replace it)")
    sd = load_state(model, "attack: MODEL")
    extra: dict[str, Any] = {}
    if name == "finetune":
        result, extra = finetune_model(model, sd, opts)
    else:
        o = load_state(other, "attack: --with") if other is not None else None
        b = load_state(base, "attack: --base") if base is not None else None
        result = attack(name, sd, opts, other=o, base=b, config=load_config(model))
    num = sum(float((result[n].double() - t.double()).pow(2).sum()) for n, t in sd.items() if t.is_floating_point())
    den = sum(float(t.double().pow(2).sum()) for t in sd.values() if t.is_floating_point())
    meta = {
        "fpcore_attack": name,
        "fpcore_attack_note": "an attacked model, written for evaluating fingerprints; not a release",
        "fpcore_attack_options": repr(vars(opts)),
    }
    write_like(model, out, result, meta, overwrite=overwrite)
    return {
        "attack": name,
        "model": str(model),
        "output": str(out),
        "with": str(other) if other is not None else None,
        "base": str(base) if base is not None else None,
        "options": dict(vars(opts)),
        "relative_change": (num / den) ** 0.5 if den > 0 else 0.0,
        **extra,
    }


def finetune_model(model: Path, sd: StateDict, opts: AttackOptions) -> tuple[dict[str, torch.Tensor], dict]:
    """The model fine-tuned further (module doc): its tensors in the model's own names and dtypes, and
    {"steps": the steps taken}. Needs a Hugging Face folder with a tokenizer and the `llm` extra."""
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"attack finetune: needs transformers ({exc}); pip install 'fpcore[llm]'") from None
    from fpcore.fingerprint import demo
    from fpcore.fingerprint.lm import load_lm

    if not model.is_dir():
        raise ValueError(f"attack finetune: {model} must be a Hugging Face folder (config, tokenizer, weights)")
    if not 0 < opts.drift < 1 or opts.max_steps < 1 or opts.lr <= 0:
        raise ValueError(
            f"attack finetune: drift must be in (0, 1), max_steps >= 1 and lr > 0 (got {opts.drift}, "
            f"{opts.max_steps}, {opts.lr})"
        )
    torch.manual_seed(opts.seed)
    lm = load_lm(model)
    task = demo.task_by_name(opts.task, lm, opts.seed)
    tuned, steps = demo.finetune(lm, task, demo.Downstream("attack", opts.task, opts.lr, opts.drift, opts.max_steps))
    state = tuned.model.state_dict()
    missing = [n for n in sd if n not in state]
    if missing:
        raise ValueError(f"attack finetune: the loaded model has no tensor {missing[0]!r}")
    return {n: state[n].detach().to(t.dtype).contiguous() for n, t in sd.items()}, {"steps": steps}
