"""Fingerprint verdicts: one entry per channel (black-, gray-, white-box), each with its statistic and a
p-value, and one combined verdict per model.

A channel's p-value is P[a statistic at least this extreme | the model does not carry the fingerprint].
The channels are combined by Bonferroni over the channels that ran: p = min(1, k * min_i p_i), valid
whatever the dependence between them (they all look at the same model). The model is called
fingerprinted when the combined p is below the significance level (1e-6 by default: a verdict that
accuses an innocent model must be rarer than one in a million).

The tests here are exact where they can be:
- `rank_sum_tail`: Wilcoxon-Mann-Whitney, exact (the null distribution of the rank sum counted by
  dynamic programming), ties counted against the keys (conservative);
- `binomial_tail`: exact;
- `normal_tail`: the upper tail of N(0, 1), for the white-box z-score (a sum over ~1e6 coordinates).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SIGNIFICANCE = 1e-6


@dataclass
class Channel:
    """One channel's evidence: `statistic` (its headline number, named by `statistic_name`), `p`, and
    the figures behind it; `ran` False (with `reason`) when it could not run for this model."""

    name: str
    p: float
    statistic: float
    statistic_name: str
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)
    ran: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    """The combined verdict: fingerprinted when p (Bonferroni over the channels that ran) < significance."""

    fingerprinted: bool
    p: float
    significance: float
    channels: dict[str, Channel]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "fingerprinted": self.fingerprinted,
            "p": self.p,
            "significance": self.significance,
            "combination": "bonferroni",
            "reason": self.reason,
            "channels": {k: c.as_dict() for k, c in self.channels.items()},
        }


def combine(channels: Sequence[Channel], significance: float = SIGNIFICANCE) -> Verdict:
    """Bonferroni over the channels that ran: p = min(1, k * min p). Raises ValueError if none ran."""
    if not 0 < significance < 1:
        raise ValueError(f"verdict: significance must be in (0, 1), got {significance}")
    ran = [c for c in channels if c.ran]
    if not ran:
        raise ValueError("verdict: no channel ran")
    best = min(ran, key=lambda c: c.p)
    p = min(1.0, len(ran) * best.p)
    found = p < significance
    reason = (
        f"{'fingerprinted' if found else 'not fingerprinted'}: combined p = {p:.3g} "
        f"({len(ran)} x the smallest channel p, {best.name} {best.p:.3g}) vs {significance:g}"
    )
    return Verdict(found, p, significance, {c.name: c for c in channels}, reason)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P[X >= k] for X ~ Binomial(n, p), exact."""
    if k <= 0:
        return 1.0
    return min(1.0, sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def normal_tail(z: float) -> float:
    """P[Z >= z] for Z ~ N(0, 1) (erfc keeps precision far out in the tail; NaN gives 1)."""
    if math.isnan(z):
        return 1.0
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def ranks_against(keys: Sequence[float], negatives: Sequence[float]) -> list[int]:
    """1-based ranks of the keys among keys + negatives, ascending; a key tied with a negative ranks
    below it (counted against the keys), ties among keys broken by order. NaN scores rank lowest."""
    tagged = [(_finite(v), 1, i) for i, v in enumerate(keys)] + [(_finite(v), 0, -1) for v in negatives]
    # at equal scores a key sorts before the negatives (-1 < 0), so a tie never helps the keys
    order = sorted(tagged, key=lambda t: (t[0], -t[1]))
    ranks = [0] * len(keys)
    for r, (_, is_key, i) in enumerate(order, start=1):
        if is_key:
            ranks[i] = r
    return ranks


def _finite(v: float) -> float:
    return -math.inf if math.isnan(v) else float(v)


def rank_sum_tail(keys: Sequence[float], negatives: Sequence[float]) -> tuple[float, int]:
    """Exact one-sided Wilcoxon-Mann-Whitney test that the keys score higher than the negatives.

    Under the null the keys are a uniformly random m-subset of the N = m + n scores (they are drawn
    exactly like the negatives); the p-value is P[rank sum of a random m-subset of 1..N >= W], the
    subsets counted by dynamic programming (float64 counts: exact up to about 1e15, then relative
    error 1e-16). Returns (p, W).

    Raises:
        ValueError when there are no keys or no negatives.
    """
    m, n = len(keys), len(negatives)
    if m == 0 or n == 0:
        raise ValueError(f"rank_sum_tail: needs keys and negatives, got {m} and {n}")
    w = sum(ranks_against(keys, negatives))
    big = m * (m + 1) // 2 + m * n  # the largest possible rank sum
    # counts[j, s]: subsets of size j of the ranks seen so far with sum s
    counts = np.zeros((m + 1, big + 1), dtype=np.float64)
    counts[0, 0] = 1.0
    for r in range(1, m + n + 1):
        top = min(r, m)
        counts[1 : top + 1, r:] += counts[0:top, : big + 1 - r]
    total = counts[m].sum()
    return float(min(1.0, counts[m, w:].sum() / total)), w
