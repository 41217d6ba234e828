"""Fingerprint verification of a model from its outputs, and from its weights when the vector and the
base are given: one channel per kind of access, one combined verdict (fpcore.verdict).

- Black-box (the paper's figure): FSR, the share of keys whose greedy continuation contains the target;
  the sampled rate (`samples` continuations per key at `temperature`); false-trigger rates on look-alike
  keys (the keys' construction, another seed) and ordinary prompts (paragraph openings of the Python
  documentation), >= 200 each by default. p: one-sided binomial test; if the model were not
  fingerprinted each key would fire like a negative does, with p0 = (false hits + 1) / (negatives + 2)
  (never 0): p = P[Binomial(keys, p0) >= keys that fired].
- Gray-box: the target's teacher-forced log-probability after every key and every negative (a
  `Scorer`: the local model, or a server returning prompt log-probs), as the sum over its tokens and
  as the least of them. For each of the two statistics, an exact Wilcoxon-Mann-Whitney test of the keys
  against the look-alike keys and against the ordinary prompts; a statistic's p is the larger of its
  two (the look-alikes are drawn exactly as the keys were, so under the null the keys' ranks among them
  are uniformly random and that p is exact; the ordinary prompts can only make it more conservative),
  and the channel's p is 2 x the smaller statistic's p (Bonferroni).
- White-box (with `vector` and `base`): fpcore.detect's calibrated projection onto tau.

The verdict: Bonferroni over the channels that ran, fingerprinted when that p < significance.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fpcore.fingerprint import data
from fpcore.fingerprint.lm import LM, check_fits, generate, load_lm
from fpcore.fingerprint.scoring import LocalScorer, Scorer
from fpcore.fingerprint.secret import Secret
from fpcore.verdict import SIGNIFICANCE, Channel, binomial_tail, combine, rank_sum_tail

__all__ = ["SIGNIFICANCE", "VerifyResult", "binomial_tail", "black_box", "gray_box", "verify"]


@dataclass
class VerifyResult:
    """Black-box figures (fsr ... p0) at the top level as before; `p_value` and `fingerprinted` are the
    combined verdict's; `channels` holds every channel's statistic and p (Channel.as_dict())."""

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
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    key_hits: list[bool] = field(default_factory=list)
    examples: dict[str, str] = field(default_factory=dict)


def _hits(lm: LM, prompts: list[list[int]], target: str, n_new: int, **kw: object) -> tuple[list[bool], list[str]]:
    texts = [lm.decode(t) for t in generate(lm, prompts, n_new, **kw)]  # type: ignore[arg-type]
    return [target in t for t in texts], texts


def _gray_stat(name: str, keys: list[float], looks: list[float], ords: list[float]) -> dict[str, Any]:
    p_look, w_look = rank_sum_tail(keys, looks)
    p_ord, w_ord = rank_sum_tail(keys, ords)
    m = len(keys)
    auc = lambda w, n: (w - m * (m + 1) / 2) / (m * n)  # noqa: E731 (Mann-Whitney U / (m n))
    finite = [v for v in looks + ords if not math.isnan(v)]
    return {
        "p": max(p_look, p_ord),
        "p_vs_lookalikes": p_look,
        "p_vs_ordinary": p_ord,
        "auc_vs_lookalikes": auc(w_look, len(looks)),
        "auc_vs_ordinary": auc(w_ord, len(ords)),
        "keys_above_every_negative": sum(k > max(finite, default=-math.inf) for k in keys),
        "key_median": statistics.median(keys),
        "negative_max": max(finite, default=float("nan")),
        "statistic": name,
    }


def gray_box(scorer: Scorer, sec: Secret, keys: list[str], lookalikes: list[str], ordinary: list[str]) -> Channel:
    """The gray-box channel (module doc): prompts are the secret's template around each text."""
    prompts = [sec.prompt(t) for t in keys + lookalikes + ordinary]
    logps = scorer.score(prompts, sec.target)
    if len(logps) != len(prompts) or any(not row for row in logps):
        raise ValueError(
            f"gray-box: the scorer returned {len(logps)} rows for {len(prompts)} prompts (or an empty one)"
        )
    m, n = len(keys), len(lookalikes)
    stats = {}
    for name, f in (("sum_logp", sum), ("min_token_logp", min)):
        v = [float(f(row)) for row in logps]
        stats[name] = _gray_stat(name, v[:m], v[m : m + n], v[m + n :])
    best = min(stats.values(), key=lambda d: d["p"])
    p = min(1.0, 2 * best["p"])
    sm = stats["sum_logp"]
    reason = (
        f"target log-prob after the keys vs {n} look-alike keys and {len(ordinary)} ordinary prompts: "
        f"{sm['keys_above_every_negative']}/{m} keys above every negative (sum over tokens), "
        f"AUC {sm['auc_vs_lookalikes']:.3f}; rank-sum p = {p:.3g}"
    )
    return Channel("gray_box", p, sm["auc_vs_lookalikes"], "auc_sum_logp_vs_lookalikes", reason, stats)


def black_box(
    fired: int, keys: int, looks_fired: int, looks: int, ords_fired: int, ords: int, sampled_rate: float
) -> Channel:
    """The black-box channel from the greedy hit counts (module doc)."""
    negatives = looks + ords
    p0 = (looks_fired + ords_fired + 1) / (negatives + 2)
    p = binomial_tail(fired, keys, p0)
    reason = (
        f"{fired}/{keys} keys answer the target greedily (false triggers {looks_fired + ords_fired}/{negatives}); "
        f"binomial p = {p:.3g}"
    )
    figures = {
        "fsr": fired / keys,
        "keys_fired": fired,
        "keys": keys,
        "sampled_rate": sampled_rate,
        "false_trigger_rate": (looks_fired + ords_fired) / max(negatives, 1),
        "lookalike_fired": looks_fired,
        "lookalikes": looks,
        "ordinary_fired": ords_fired,
        "ordinary": ords,
        "p0": p0,
    }
    return Channel("black_box", p, fired / keys, "fsr", reason, figures)


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
    vector: str | Path | None = None,
    base: str | Path | None = None,
    scorer: Scorer | None = None,
) -> VerifyResult:
    """Ask `model` (a folder or a loaded LM) the secret's keys and its negatives, score the target after
    each, and with `vector` and `base` also project its weights onto tau; see the module doc.

    `scorer` replaces the local model for the gray-box channel (e.g. a server's prompt log-probs).

    Raises:
        SecretError (the secret does not belong to `vector`), ModelFolderError, KeyTooLongError,
        CheckpointError (white-box: another architecture) -- ValueErrors naming the file, key or tensor.
    """
    t0 = time.perf_counter()
    sec = secret if isinstance(secret, Secret) else Secret.load(secret)
    if (vector is None) != (base is None):
        raise ValueError("verify: the white-box channel needs both the vector and the base model")
    if vector is not None:
        sec.check_vector(vector, where=secret if isinstance(secret, (str, Path)) else "secret")
        if not isinstance(model, LM):  # another architecture: named by tensor before anything is loaded
            from fpcore.io import Checkpoint
            from fpcore.vector import FingerprintVector

            fv = FingerprintVector(vector)
            fv.check_target(Checkpoint(base), allow_vocab_growth=False)  # type: ignore[arg-type]
            fv.check_target(Checkpoint(model))
    lm = model if isinstance(model, LM) else load_lm(model)
    name = str(lm.path) if lm.path else "model"
    if vector is not None and lm.path is None:
        raise ValueError("verify: the white-box channel needs the model's folder (a loaded LM has no path)")
    n_new = len(lm.encode(sec.target)) + 8
    enc = lambda s: lm.encode(sec.prompt(s))  # noqa: E731
    keys = [enc(k) for k in sec.keys]
    for k, ids in zip(sec.keys, keys, strict=True):
        check_fits(lm, ids, n_new, f"key {k!r}")

    # negatives that do not fit the context are replaced by the next ones of the same stream; each text
    # is encoded once and kept with its ids (the gray-box scorer takes the texts, generation the ids)
    def fitting(texts: list[str], n: int) -> list[tuple[str, list[int]]]:
        return [(t, ids) for t in texts if 1 + len(ids := enc(t)) + n_new <= lm.context][:n]

    look_p = fitting(data.lookalike_keys(2 * lookalikes, sec.seed, sec.keys, style=sec.key_style), lookalikes)
    ord_p = fitting(data.ordinary_prompts().test, ordinary)
    if len(ord_p) < ordinary or len(look_p) < lookalikes:
        raise ValueError(
            f"verify: only {len(look_p)} look-alike keys and {len(ord_p)} ordinary prompts fit the context of "
            f"{lm.context}; {lookalikes} and {ordinary} asked"
        )
    look_t, looks = [t for t, _ in look_p], [i for _, i in look_p]
    ord_t, ords = [t for t, _ in ord_p], [i for _, i in ord_p]
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
    sampled_rate = sum(s_hits) / len(s_hits) if s_hits else float("nan")
    channels = [black_box(fired, len(keys), lf, len(looks), of, len(ords), sampled_rate)]
    channels.append(gray_box(scorer or LocalScorer(lm, batch_size=batch_size), sec, sec.keys, look_t, ord_t))
    if vector is not None:
        from fpcore.detect import detect

        channels.append(detect(vector, lm.path, base).channel)  # type: ignore[arg-type]
    v = combine(channels, significance)
    negatives = len(l_hits) + len(o_hits)
    return VerifyResult(
        model=name,
        fingerprinted=v.fingerprinted,
        verdict=v.reason,
        fsr=fired / len(keys),
        keys_fired=fired,
        keys=len(keys),
        sampled_rate=sampled_rate,
        samples_per_key=samples,
        lookalike_rate=lf / max(len(l_hits), 1),
        lookalike_fired=lf,
        lookalikes=len(l_hits),
        ordinary_rate=of / max(len(o_hits), 1),
        ordinary_fired=of,
        ordinary=len(o_hits),
        false_trigger_rate=(lf + of) / max(negatives, 1),
        p0=channels[0].figures["p0"],
        p_value=v.p,
        significance=significance,
        seconds=time.perf_counter() - t0,
        channels={c.name: c.as_dict() for c in channels},
        key_hits=key_hits,
        examples={"key": key_texts[0], "lookalike": l_texts[0] if l_texts else ""},
    )
