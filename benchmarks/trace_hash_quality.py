"""How random are the licensee code's per-element bits? A statistical check of the window hash.

The code needs each element's 5 bits b (fpcore/backends/reference/code.py) to behave like fair coins:
balanced under every non-zero mask (else a licensee's pattern correlates with another's) and
independent of their neighbours' (else the trace's variance is off). For each hash, over `--trials`
random keys and runs of 2^`--log-groups` consecutive groups (4 elements each):

- lag 0: the Walsh sum of b under each of the 31 non-zero 5-bit masks, as a z-score;
- pairs: the Walsh sums of (b_i, b_i+lag) under every mask that touches both, for lags 1, 2, 3
  (the same 32-bit hash word), 4 and 64.

Under fair coins every z is N(0, 1): the largest |z| of the ~19,000 pair tests should stay near 4.3.
The shipped hash (double fmix32) is checked against cheaper 2-multiply candidates, so docs/performance.md's
reasons for keeping it can be re-measured: `python -m benchmarks.trace_hash_quality`.
"""

from __future__ import annotations

import argparse

import numpy as np

M32 = np.uint64(0xFFFFFFFF)
PARITY = np.array([bin(i).count("1") & 1 for i in range(1024)], dtype=np.int64)


def _fmix32(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x85EBCA6B)) & M32
    x ^= x >> np.uint64(13)
    x = (x * np.uint64(0xC2B2AE35)) & M32
    return x ^ (x >> np.uint64(16))


def shipped(lo: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """fpcore's group hash (hi = 0): fmix32(fmix32(lo ^ k1) ^ k2)."""
    return _fmix32(_fmix32(lo ^ np.uint64(k1)) ^ np.uint64(k2))


def two_multiply(c1: int, c2: int, s1: int = 16, s2: int = 15, s3: int = 15):
    """One keyed round of a 2-multiply integer hash (lowbias32's shape), k2 xored between the multiplies."""

    def h(lo: np.ndarray, k1: int, k2: int) -> np.ndarray:
        x = lo ^ np.uint64(k1)
        x ^= x >> np.uint64(s1)
        x = (x * np.uint64(c1)) & M32
        x ^= x >> np.uint64(s2)
        x ^= np.uint64(k2)
        x = (x * np.uint64(c2)) & M32
        return x ^ (x >> np.uint64(s3))

    return h


CANDIDATES = {
    "shipped: fmix32(fmix32(lo ^ k1) ^ k2)": shipped,
    "2-multiply, lowbias32 constants": two_multiply(0x7FEB352D, 0x846CA68B, 16, 15, 16),
    "2-multiply, 0x21F0AAAD / 0x735A2D97": two_multiply(0x21F0AAAD, 0x735A2D97),
    "2-multiply, fmix32 constants": two_multiply(0x85EBCA6B, 0xC2B2AE35, 16, 13, 16),
}


def _walsh(hist: np.ndarray, nbits: int) -> np.ndarray:
    n = hist.sum()
    v = np.arange(1 << nbits)
    return np.array([(hist * (1 - 2 * PARITY[v & m])).sum() / np.sqrt(n) for m in range(1, 1 << nbits)])


def check(hash_fn, trials: int, log_groups: int, seed: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    n = 1 << log_groups
    both = np.array([(m & 31) != 0 and (m >> 5) != 0 for m in range(1, 1024)])
    lag0, pairs = [], []
    for _ in range(trials):
        k1, k2 = (int(v) for v in rng.integers(0, 2**32, 2))
        start = int(rng.integers(0, 2**32 - n))
        h = hash_fn(np.arange(start, start + n, dtype=np.uint64), k1, k2)
        b = np.stack([(h >> np.uint64(8 * j)) & np.uint64(31) for j in range(4)], 1).astype(np.int64).reshape(-1)
        lag0.append(_walsh(np.bincount(b, minlength=32), 5))
        for lag in (1, 2, 3, 4, 64):
            pairs.append(_walsh(np.bincount(b[:-lag] * 32 + b[lag:], minlength=1024), 10)[both])
    z0, zp = np.concatenate(lag0), np.concatenate(pairs)
    return {
        "lag0_max_abs_z": float(np.abs(z0).max()),
        "lag0_mean_z2": float((z0**2).mean()),
        "lag0_tests": int(z0.size),
        "pairs_max_abs_z": float(np.abs(zp).max()),
        "pairs_mean_z2": float((zp**2).mean()),
        "pairs_tests": int(zp.size),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--log-groups", type=int, default=24)
    args = ap.parse_args(argv)
    print(f"{args.trials} keys x 2^{args.log_groups} groups (4 elements each)")
    print("| hash | lag 0: max abs z (tests) | pairs: max abs z (tests) | pairs: mean z^2 |")
    print("|---|---:|---:|---:|")
    for name, fn in CANDIDATES.items():
        r = check(fn, args.trials, args.log_groups)
        print(
            f"| {name} | {r['lag0_max_abs_z']:.2f} ({r['lag0_tests']}) | {r['pairs_max_abs_z']:.2f} "
            f"({r['pairs_tests']}) | {r['pairs_mean_z2']:.3f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
