"""How likely a forger escapes the replay check, and how many random segments keep that below a target.

The model: a forger fakes F of the record's n segments (a fraction f = F / n: what they saved of the
training cost) and every faked segment, if replayed, lands outside the tolerance. The verifier replays
the top-Q segments (caught for sure, so a forger keeps its fakes out of them) and R segments drawn
uniformly without replacement from the other n' after the record is sealed (the draw uses the
verifier's randomness, which the forger cannot see). The forger is missed only if none of the R lands
on a fake:

    P(miss) = C(n' - F', R) / C(n', R),   F' = min(F, n'),   F = ceil(f n)

(exact hypergeometric; it is below (1 - F'/n')^R, the with-replacement figure).
"""

from __future__ import annotations

import math


def faked_segments(n: int, f: float) -> int:
    if not 0.0 < f <= 1.0:
        raise ValueError(f"soundness: the forged fraction must be in (0, 1], got {f}")
    return max(1, math.ceil(f * n - 1e-9))


def miss_probability(n: int, q_segments: int, r: int, f: float) -> float:
    """P(a forger who faked a fraction f of n segments passes), with q_segments replayed as top-Q and r
    drawn at random from the rest."""
    pool = n - q_segments
    if pool <= 0:
        return 0.0
    fake = min(faked_segments(n, f), pool)
    r = min(r, pool)
    if r > pool - fake:
        return 0.0
    # C(pool - fake, r) / C(pool, r) as a product, stable for large pools
    p = 1.0
    for i in range(r):
        p *= (pool - fake - i) / (pool - i)
    return p


def choose_r(n: int, q_segments: int, f: float, target: float) -> int:
    """The fewest random segments that bring P(miss) to <= target against a forger who faked f."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"soundness: the target miss chance must be in (0, 1), got {target}")
    pool = max(0, n - q_segments)
    for r in range(pool + 1):
        if miss_probability(n, q_segments, r, f) <= target:
            return r
    return pool
