"""White-box fingerprint detection: is `suspect` = (some model derived from `base`) + alpha*tau?

One read of each of the vector's tensors and the matching suspect and base tensors, two results.

1. The raw projection (d = suspect - base, z = tau: <d,z>, |d|^2, |z|^2), overall and per tensor:

       alpha_hat = sum <s-b, tau> / sum |tau|^2          (the stamping strength read back)
       cosine    = sum <s-b, tau> / sqrt(sum |s-b|^2 * sum |tau|^2)

2. The calibrated test, tensor by tensor (float32 projections, float64 sums): alpha* = <d, tau*> /
   |tau*|^2 where tau* is the part of tau that neither a function-preserving transformation nor an
   honest fine-tune of the same base can line up with: each tensor's best rank-`rank` approximation is
   removed (honest fine-tunes share tau's dominant directions), then the tensor's base scaled per row
   and per column (what rescaling a norm and the maps that read it moves along; a permutation moves d
   onto -base, which this removes too). Its standard error from the suspect itself: flip the sign of
   every coordinate of tau* at random (keyed random directions with tau*'s magnitude at every element);
   <d, tau*> then has mean 0 and variance sum d^2 tau*^2, so se = sqrt(sum d^2 tau*^2) / |tau*|^2.

   The null is composite, H0: alpha <= ALPHA_NULL (the suspect carries at most a quarter of tau), and
   z = (alpha* - ALPHA_NULL) / se, p = P[N(0,1) >= z]. Why not H0: alpha = 0: an honest fine-tune of the
   same base does line up with tau beyond coordinate noise (measured on the demo's unstamped
   downstream models: sign-flip z of 16 to 46 on raw tau, 3 to 15 on tau*, with alpha* <= 0.10), so a
   p-value against alpha = 0 would accuse innocent models; how much of tau is there is what tells a
   stamp (alpha* ~ 1) from an incidental alignment (|alpha*| <= 0.13 on every unstamped and transformed
   model measured; the tables of docs/fingerprints.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fpcore import rawops
from fpcore._stream import streaming_threads
from fpcore.io import Checkpoint, CheckpointError
from fpcore.vector import FingerprintVector
from fpcore.verdict import SIGNIFICANCE, Channel, normal_tail

Progress = Callable[[int], None]  # called with bytes processed

ALPHA_NULL = 0.25
"""H0: the suspect carries at most this share of tau. Unstamped and function-preserving transformed
models measured |alpha*| <= 0.13 (demo models, drift up to 35 %); a stamp at alpha = 1 reads ~1."""
RANK = 16
"""tau's dominant directions removed per matrix before the test (see the module doc)."""


@dataclass
class TensorScore:
    name: str
    alpha_hat: float
    cosine: float
    elements: int
    note: str = ""


@dataclass
class DetectResult:
    """`detected`, `p`: the white-box channel's verdict (p < significance); alpha_hat and cosine: the raw
    projection; alpha_star, se, z: the calibrated test (module doc); `channel`: it as a verdict Channel."""

    detected: bool
    verdict: str
    p: float
    alpha_hat: float
    cosine: float
    alpha_star: float
    se: float
    z: float
    tensors: int
    elements: int
    null: dict[str, float]
    vector: Path
    suspect: Path
    base: Path
    channel: Channel
    notes: list[str] = field(default_factory=list)
    per_tensor: list[TensorScore] = field(default_factory=list)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def idiosyncratic(tau: torch.Tensor, base: torch.Tensor, rank: int = RANK) -> torch.Tensor:
    """tau* (module doc), float32: tau less its best rank-r approximation (matrices; r = `rank`, at most
    an eighth of the smaller side), then less its
    projections onto the base scaled per column and per row (two alternating sweeps; a 1-D tensor: onto
    the base as a whole). Deterministic (the randomised SVD is seeded). float32 keeps a large
    embedding's working set to a few copies of it; torch's sums are pairwise, so the projections
    lose nothing that matters to a z-score."""
    t, b = tau.float(), base.float()
    r = min(rank, min(t.shape) // 8) if t.dim() == 2 else 0  # at most an eighth of a small matrix's spectrum
    if r > 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            u, sv, v = torch.svd_lowrank(t, q=min(r + 8, min(t.shape)), niter=4)
        t = t - (u[:, :r] * sv[:r]) @ v[:, :r].T
    if t.dim() == 2:
        b2 = b * b
        cols, rows = b2.sum(0, keepdim=True).clamp_min(1e-30), b2.sum(1, keepdim=True).clamp_min(1e-30)
        del b2
        for _ in range(2):
            t = t - b * ((t * b).sum(0, keepdim=True) / cols)
            t = t - b * ((t * b).sum(1, keepdim=True) / rows)
    else:
        t = t - b * ((t * b).sum() / (b * b).sum().clamp_min(1e-30))
    return t


CHUNK_ROWS_ELEMS = 1 << 20  # elements per float64 slice of the final sums


def _tensor_sums(name: str, sck: Checkpoint, bck: Checkpoint, zck: Checkpoint, rank: int) -> tuple[float, ...]:
    """One read of tensor `name` (the shared leading rows) from each file: the raw sums <d, tau>,
    |d|^2, |tau|^2 and the calibrated ones <d, tau*>, |tau*|^2, sum d^2 tau*^2 (d = suspect - base),
    accumulated in float64 over slices of rows, so no full-size float64 copy is ever made."""
    z = zck.get(name)
    rows = z.shape[0] if z.dim() else 1
    s, b = sck.get(name)[:rows], bck.get(name)[:rows]
    t = idiosyncratic(z, b, rank)
    if z.dim() == 0:
        z, s, b, t = z.reshape(1), s.reshape(1), b.reshape(1), t.reshape(1)
    step = max(1, CHUNK_ROWS_ELEMS // max(1, z[0].numel()))
    sums = [0.0] * 6
    for r0 in range(0, rows, step):
        d = s[r0 : r0 + step].double() - b[r0 : r0 + step].double()
        zc, tc = z[r0 : r0 + step].double(), t[r0 : r0 + step].double()
        dt = d * tc
        for k, x in enumerate(
            ((d * zc).sum(), (d * d).sum(), (zc * zc).sum(), dt.sum(), (tc * tc).sum(), (dt * dt).sum())
        ):
            sums[k] += float(x)
    for ck in (sck, bck, zck):  # done with it: hand its pages back (the shared rows)
        ck.release_range(name, 0, zck.info(name).numel * ck.info(name).itemsize)
    return tuple(sums)


def detect(
    vector: str | Path,
    suspect: str | Path,
    base: str | Path,
    *,
    alpha_null: float = ALPHA_NULL,
    rank: int = RANK,
    significance: float = SIGNIFICANCE,
    progress: Progress | None = None,
) -> DetectResult:
    """Project suspect - base onto the fingerprint vector, tensor by tensor, in one pass.

    Lineage: `base` must have the vector's base architecture exactly and `suspect` must share it
    (FingerprintVector.check_target); a suspect with a grown vocabulary is scored on the shared
    rows; an output head missing from a tied-embedding suspect is left out. Each is noted.

    Returns:
        DetectResult: overall and per-tensor alpha_hat and cosine; the calibrated alpha*, its standard
        error, z and p (module doc); detected = p < significance.

    Raises:
        CheckpointError naming the file and tensor (missing tensor, other shape, non-float tensor,
        unreadable file); ValueError when tau is all zeros.
    """
    vec = FingerprintVector(vector)
    sck, bck = Checkpoint(suspect), Checkpoint(base)
    vec.check_target(bck, allow_vocab_growth=False)
    notes = [f"{sck.path}: {n}" for n in vec.check_target(sck)]
    dz_t = dd_t = zz_t = 0.0
    num = den = var = 0.0
    n_t = 0
    scores: list[TensorScore] = []
    with streaming_threads():
        for name in vec.names():
            if name not in sck:  # tied embeddings (check_target noted it)
                continue
            for ck in (sck, bck, vec.ckpt):
                info = ck.info(name)
                if not info.is_float:
                    raise CheckpointError(f"{ck.path}: tensor {name!r} is {info.dtype_name}, not a float tensor")
                if info.format_dtype not in rawops.CODES:
                    raise CheckpointError(
                        f"{ck.path}: tensor {name!r} is {info.dtype_name}; detect takes float32, bfloat16 or float16"
                    )
            n_z = vec.ckpt.info(name).numel
            note = ""
            if sck.info(name).numel != n_z:  # vocabulary growth: the shared (leading) rows
                note = f"shared {vec.ckpt.info(name).shape[0]} of {sck.info(name).shape[0]} rows"
            dz, dd, zz, a, b, c = _tensor_sums(name, sck, bck, vec.ckpt, rank)
            dz_t, dd_t, zz_t, n_t = dz_t + dz, dd_t + dd, zz_t + zz, n_t + n_z
            scores.append(TensorScore(name, _ratio(dz, zz), _ratio(dz, math.sqrt(dd * zz)), n_z, note))
            num, den, var = num + a, den + b, var + c
            if progress:
                progress(n_z * sum(ck.info(name).itemsize for ck in (sck, bck, vec.ckpt)))
    if zz_t == 0.0:
        raise ValueError(f"{vec.path}: the fingerprint vector is all zeros over the suspect's tensors")
    alpha_hat = dz_t / zz_t
    cosine = _ratio(dz_t, math.sqrt(dd_t * zz_t))
    if den == 0.0:
        raise ValueError(f"{vec.path}: nothing of tau is left once its rank-{rank} part and the base are removed")
    alpha_star = num / den
    se = math.sqrt(var) / den
    z = (alpha_star - alpha_null) / se if se > 0 else (math.inf if alpha_star > alpha_null else -math.inf)
    p = normal_tail(z)
    detected = p < significance  # NaN gives p = 1: not detected
    reason = (
        f"{'fingerprint found' if detected else 'no fingerprint'}: alpha* {alpha_star:.3f} +- {se:.3g} "
        f"(H0: alpha <= {alpha_null}; z = {z:.1f}, p = {p:.3g}); raw alpha_hat {alpha_hat:.3f}, cosine {cosine:.4f}"
    )
    figures = {
        "alpha_star": alpha_star,
        "se": se,
        "z": z,
        "alpha_hat": alpha_hat,
        "cosine": cosine,
        "alpha_null": alpha_null,
        "rank_removed": rank,
        "tau_star_energy": den / zz_t,
    }
    return DetectResult(
        detected=detected,
        verdict=reason,
        p=p,
        alpha_hat=alpha_hat,
        cosine=cosine,
        alpha_star=alpha_star,
        se=se,
        z=z,
        tensors=len(scores),
        elements=n_t,
        null={"alpha_null": alpha_null, "rank_removed": rank, "significance": significance},
        vector=vec.path,
        suspect=sck.path,
        base=bck.path,
        channel=Channel("white_box", p, z, "z_alpha_star_over_null", reason, figures),
        notes=notes,
        per_tensor=scores,
    )
