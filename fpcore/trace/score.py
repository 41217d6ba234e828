"""From the trace sums to named licensees, with p-values that hold whatever the suspect carries.

1. Pattern scores. Each tensor's sums are weighted by 1/sigma_t^2, its noise level (sigma_t^2 = Q_t /
   U_t: the mean squared difference per unit of move), so that a tensor a fine-tune moved a lot does
   not drown the rest; then, per segment s and pattern p,
       Y[s, p] = sum_t (2 A_t[s,p] - W_t[s]) / sigma_t^2  /  sqrt(sum_t Q_t[s] / sigma_t^4),
   the suspect's correlation with the pattern (about N(0, 1) where the pattern is absent).
2. A candidate's statistic T = sum_s Y[s, m_s] over its own symbols m_s.
3. The null for a candidate whose code is NOT in the suspect. Its symbols come from a keyed hash of
   its id, independent of the suspect, so each m_s is uniform on the 16 patterns: T is a sum of
   independent draws, one uniform from each row of Y. This holds exactly, whatever else the suspect
   carries (other licensees' codes included: they only make some entries of Y large, which the
   innocent draws with probability 1/16 per segment). The Chernoff bound on that sum,
       P(T >= t) <= min over lambda >= 0 of exp(sum_s log mean_p exp(lambda Y[s,p]) - lambda t),
   is a valid p-value (any lambda gives an upper bound; a grid of them is searched). Bonferroni over
   the candidates: p_corrected = min(1, N * p).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

LAMBDAS = np.concatenate([[0.0], np.geomspace(1e-4, 50.0, 600)])
EXACT_TOP = 64  # candidates (by T) whose bound is minimised exactly; the rest get a conservative grid bound


@dataclass
class TensorSums:
    """Accumulated trace sums of one tensor: A [S, 16], W [S], Q [S], U [S] (float64)."""

    A: np.ndarray
    W: np.ndarray
    Q: np.ndarray
    U: np.ndarray

    def __iadd__(self, other: TensorSums) -> TensorSums:
        self.A += other.A
        self.W += other.W
        self.Q += other.Q
        self.U += other.U
        return self


def pattern_scores(tensors: list[TensorSums]) -> tuple[np.ndarray, dict]:
    """Y [S, 16] (module doc) and figures (tensors used, coded elements' move energy)."""
    num = None
    den = None
    used = 0
    for t in tensors:
        q, uu = float(t.Q.sum()), float(t.U.sum())
        if q <= 0.0 or uu <= 0.0 or not math.isfinite(q):
            continue
        wt = uu / q  # 1 / sigma_t^2
        part = (2.0 * t.A - t.W[:, None]) * wt
        var = t.Q * wt * wt
        num = part if num is None else num + part
        den = var if den is None else den + var
        used += 1
    if num is None or den is None:  # the suspect equals the reference on every coded element: no code at all
        S = tensors[0].W.shape[0] if tensors else 64
        return np.zeros((S, 16)), {"tensors_scored": 0}
    with np.errstate(invalid="ignore", divide="ignore"):
        Y = np.where(den[:, None] > 0, num / np.sqrt(den)[:, None], 0.0)
    return Y, {"tensors_scored": used}


@dataclass
class Candidate:
    licensee: str
    z: float
    p: float
    statistic: float
    p_single: float = field(repr=False, default=1.0)


def _log_mgf(Y: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
    """K(lambda) = sum_s log mean_p exp(lambda Y[s,p]) for every lambda (stable log-sum-exp)."""
    x = lambdas[:, None, None] * Y[None, :, :]
    m = x.max(axis=2, keepdims=True)
    return (m[:, :, 0] + np.log(np.exp(x - m).mean(axis=2))).sum(axis=1)


def chernoff_log_p(Y: np.ndarray, t: np.ndarray, lambdas: np.ndarray = LAMBDAS) -> np.ndarray:
    """log of the Chernoff bound on P(T >= t) (module doc), <= 0, for every t."""
    K = _log_mgf(Y, lambdas)
    return np.minimum(0.0, (K[None, :] - lambdas[None, :] * np.asarray(t, dtype=np.float64)[:, None]).min(axis=1))


def score_candidates(
    Y: np.ndarray, symbols: np.ndarray, ids: list[str], significance: float
) -> tuple[list[Candidate], list[Candidate], dict]:
    """(identified, runners-up, figures). Identified: p_corrected < significance, best first."""
    n = len(ids)
    S = Y.shape[0]
    rows = np.arange(S)[None, :]
    T = np.zeros(n)
    for a in range(0, n, 65536):  # gather in slices: (N, S) float64 would be 0.5 GB at 10^6 candidates
        T[a : a + 65536] = Y[rows, symbols[a : a + 65536].astype(np.int64)].sum(axis=1)
    mu = float(Y.mean(axis=1).sum())
    sd = float(math.sqrt(Y.var(axis=1).sum())) or 1.0
    order = np.argsort(-T, kind="stable")
    top = order[: min(EXACT_TOP, n)]
    fine = np.concatenate([[0.0], np.geomspace(1e-5, 200.0, 4000)])
    logp_top = chernoff_log_p(Y, T[top], fine)
    cands: list[Candidate] = []
    for j, i in enumerate(top):
        p1 = math.exp(float(logp_top[j]))
        cands.append(Candidate(ids[i], (float(T[i]) - mu) / sd, min(1.0, n * p1), float(T[i]), p1))
    identified = [c for c in cands if c.p < significance]
    runners = [c for c in cands if c.p >= significance][:5]
    # Every candidate below the exact top has T <= the smallest exact T, so its p is at least that one's.
    figures = {
        "candidates": n,
        "segments": S,
        "patterns": int(Y.shape[1]),
        "null_mean": mu,
        "null_sd": sd,
        "max_pattern_score": float(Y.max()),
    }
    return identified, runners, figures
