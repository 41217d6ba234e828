"""Black-box verification: ask a model the secret keys and count how many answer with the target.

- FSR: share of keys whose greedy continuation contains the target.
- Sampled rate: share of `samples` continuations per key at `temperature` that contain it.
- False-trigger rates: the same check on look-alike keys (the keys' construction, another seed) and
  on ordinary prompts (paragraph openings of the Python documentation), >= 200 each by default.
- A one-sided binomial test: if the model were not fingerprinted, each key would fire like a
  negative does, with p0 = (false hits + 1) / (negatives + 2) (never 0); the p-value is
  P[Binomial(keys, p0) >= keys that fired]. Fingerprinted when p < significance.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fpcore.fingerprint import data
from fpcore.fingerprint.lm import LM, check_fits, generate, load_lm
from fpcore.fingerprint.secret import Secret

SIGNIFICANCE = 1e-6


@dataclass
class VerifyResult:
    model: str
    fingerprinted: bool
    verdict: str
    fsr: float
    keys_fired: int
    keys: int
    sampled_rate: float
    samples_per_key: int
    lookalike_rate: float
    lookalike_fired: int
    lookalikes: int
    ordinary_rate: float
    ordinary_fired: int
    ordinary: int
    false_trigger_rate: float
    p0: float
    p_value: float
    significance: float
    seconds: float
    key_hits: list[bool] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P[X >= k] for X ~ Binomial(n, p), exact."""
    if k <= 0:
        return 1.0
    return min(1.0, sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def _hits(lm: LM, prompts: list[list[int]], target: str, n_new: int, **kw: object) -> tuple[list[bool], list[str]]:
    texts = [lm.decode(t) for t in generate(lm, prompts, n_new, **kw)]  # type: ignore[arg-type]
    return [target in t for t in texts], texts


def verify(
    model: str | Path | LM,
    secret: Secret | str | Path,
    *,
    samples: int = 5,
    temperature: float = 0.7,
    lookalikes: int = 200,
    ordinary: int = 200,
    significance: float = SIGNIFICANCE,
    seed: int = 0,
    batch_size: int = 64,
) -> VerifyResult:
    """Ask `model` (a folder or a loaded LM) the secret's keys and its negatives; see the module doc.

    Raises:
        SecretError / ModelFolderError / KeyTooLongError (ValueErrors) naming the file or key.
    """
    t0 = time.perf_counter()
    sec = secret if isinstance(secret, Secret) else Secret.load(secret)
    lm = model if isinstance(model, LM) else load_lm(model)
    name = str(lm.path) if lm.path else "model"
    n_new = len(lm.encode(sec.target)) + 8
    enc = lambda s: lm.encode(sec.prompt(s))  # noqa: E731
    keys = [enc(k) for k in sec.keys]
    for k, ids in zip(sec.keys, keys, strict=True):
        check_fits(lm, ids, n_new, f"key {k!r}")
    fits = lambda p: 1 + len(p) + n_new <= lm.context  # noqa: E731
    # negatives that do not fit the context are replaced by the next ones of the same stream
    looks = [
        p for p in map(enc, data.lookalike_keys(2 * lookalikes, sec.seed, sec.keys, style=sec.key_style)) if fits(p)
    ][:lookalikes]
    ords = [p for p in map(enc, data.ordinary_prompts().test) if fits(p)][:ordinary]
    if len(ords) < ordinary or len(looks) < lookalikes:
        raise ValueError(
            f"verify: only {len(looks)} look-alike keys and {len(ords)} ordinary prompts fit the context of "
            f"{lm.context}; {lookalikes} and {ordinary} asked"
        )
    key_hits, key_texts = _hits(lm, keys, sec.target, n_new, batch_size=batch_size)
    g = torch.Generator().manual_seed(seed)
    sampled = [p for p in keys for _ in range(samples)]
    s_hits, _ = (
        _hits(lm, sampled, sec.target, n_new, batch_size=batch_size, temperature=temperature, generator=g)
        if samples
        else ([], [])
    )
    l_hits, l_texts = _hits(lm, looks, sec.target, n_new, batch_size=batch_size)
    o_hits, _ = _hits(lm, ords, sec.target, n_new, batch_size=batch_size)
    fired, lf, of = sum(key_hits), sum(l_hits), sum(o_hits)
    negatives = len(l_hits) + len(o_hits)
    p0 = (lf + of + 1) / (negatives + 2)
    p_value = binomial_tail(fired, len(keys), p0)
    found = p_value < significance
    verdict = (
        f"{'fingerprinted' if found else 'not fingerprinted'}: {fired}/{len(keys)} keys answer the target "
        f"(false triggers {lf + of}/{negatives}; binomial p = {p_value:.3g} vs {significance:g})"
    )
    return VerifyResult(
        model=name,
        fingerprinted=found,
        verdict=verdict,
        fsr=fired / len(keys),
        keys_fired=fired,
        keys=len(keys),
        sampled_rate=sum(s_hits) / len(s_hits) if s_hits else float("nan"),
        samples_per_key=samples,
        lookalike_rate=lf / max(len(l_hits), 1),
        lookalike_fired=lf,
        lookalikes=len(l_hits),
        ordinary_rate=of / max(len(o_hits), 1),
        ordinary_fired=of,
        ordinary=len(o_hits),
        false_trigger_rate=(lf + of) / max(negatives, 1),
        p0=p0,
        p_value=p_value,
        significance=significance,
        seconds=time.perf_counter() - t0,
        key_hits=key_hits,
        examples={"key": key_texts[0], "lookalike": l_texts[0] if l_texts else ""},
    )
