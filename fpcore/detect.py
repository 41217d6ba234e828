"""White-box fingerprint detection: is `suspect` = (some model derived from `base`) + alpha*tau?

One streaming pass over the vector's tensors: each tau tensor and the matching suspect and base
tensors are read once, chunk by chunk from memory maps (pages dropped as soon as a chunk is done,
so memory stays flat whatever the model's size; no torch), and reduced with the `triple_stats`
primitive (d = suspect - base, z = tau: <d,z>, |d|^2, |z|^2). The sums are aggregated across
tensors for the overall figures

    alpha_hat = sum <s-b, tau> / sum |tau|^2          (the stamping strength read back)
    cosine    = sum <s-b, tau> / sqrt(sum |s-b|^2 * sum |tau|^2)

and kept per tensor. A fingerprint is reported when both reach the thresholds below.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fpcore import _stream as streaming
from fpcore import rawops
from fpcore._stream import streaming_threads
from fpcore.io import Checkpoint, CheckpointError
from fpcore.vector import FingerprintVector

Progress = Callable[[int], None]  # called with bytes processed

# Thresholds, calibrated by benchmarks/calibrate_detect.py; the measured distributions are in
# docs/perf/detect_calibration.json. Those are SYNTHETIC families, not trained LMs: random
# Llama-shaped bf16 bases of 8.65M parameters; fingerprint fine-tune = base + a structured delta
# (rank-8 + sparse + noise, Adam-like per-element scale) of 0.2 % or 1 % of |theta_base|; downstream
# models = base + independent structured deltas of 1-40 % drift, stamped with alpha 0.5 or 1; the
# negatives are those downstream models unstamped, stamped with another fingerprint, or independent
# fine-tunes. Measured over 5 seeds (100 stamped, 130 negatives): stamped alpha_hat >= 0.385 and
# cosine >= 0.00197 (worst case alpha 0.5, drift 40 %, tau 0.2 %); negatives |alpha_hat| <= 0.134,
# |cosine| <= 0.00083 (sd 0.00036, about 1/sqrt(parameters)). The null cosine shrinks like
# 1/sqrt(parameters), so for full-size models cosine_min is conservative, while a stamped model's
# cosine is about alpha*|tau|/|suspect - base| at any size. Real independent fine-tunes (same data,
# same recipe) can share directions with tau in ways random deltas do not: treat verdicts near the
# thresholds with care.
ALPHA_MIN = 0.25
"""alpha_hat at or above this: about 1.9x the largest negative (0.134), 0.65x the weakest stamped (0.385)."""
COSINE_MIN = 0.0015
"""cosine at or above this: about 1.8x the largest negative (0.00083, 4 null sd), 0.76x the weakest stamped."""


@dataclass
class TensorScore:
    name: str
    alpha_hat: float
    cosine: float
    elements: int
    note: str = ""


@dataclass
class DetectResult:
    detected: bool
    verdict: str
    alpha_hat: float
    cosine: float
    tensors: int
    elements: int
    thresholds: dict[str, float]
    vector: Path
    suspect: Path
    base: Path
    notes: list[str] = field(default_factory=list)
    per_tensor: list[TensorScore] = field(default_factory=list)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def _triple_sums(
    name: str, sck: Checkpoint, bck: Checkpoint, zck: Checkpoint, n: int, chunk: int
) -> tuple[float, float, float]:
    """<s - b, z>, |s - b|^2, |z|^2 over the first n elements of tensor `name`, chunk by chunk."""
    ins = [(ck, ck.address(name), ck.info(name)) for ck in (sck, bck, zck)]
    dz = dd = zz = 0.0
    for off in range(0, n, chunk):
        e = min(chunk, n - off)
        a, b, c, _, _ = rawops.triple_stats_raw(*[(addr + off * i.itemsize, i.format_dtype) for _, addr, i in ins], e)
        dz, dd, zz = dz + a, dd + b, zz + c
        for ck, _, i in ins:
            ck.release_range(name, off * i.itemsize, e * i.itemsize)
    return dz, dd, zz


def detect(
    vector: str | Path,
    suspect: str | Path,
    base: str | Path,
    *,
    alpha_min: float = ALPHA_MIN,
    cosine_min: float = COSINE_MIN,
    progress: Progress | None = None,
) -> DetectResult:
    """Project suspect - base onto the fingerprint vector, tensor by tensor, in one pass.

    Lineage: `base` must have the vector's base architecture exactly and `suspect` must share it
    (FingerprintVector.check_target); a suspect with a grown vocabulary is scored on the shared
    rows; an output head missing from a tied-embedding suspect is left out. Each is noted.

    Returns:
        DetectResult: overall and per-tensor alpha_hat and cosine, and detected = alpha_hat >=
        alpha_min and cosine >= cosine_min.

    Raises:
        CheckpointError naming the file and tensor (missing tensor, other shape, non-float tensor,
        unreadable file); ValueError when tau is all zeros.
    """
    vec = FingerprintVector(vector)
    sck, bck = Checkpoint(suspect), Checkpoint(base)
    vec.check_target(bck, allow_vocab_growth=False)
    notes = [f"{sck.path}: {n}" for n in vec.check_target(sck)]
    dz_t = dd_t = zz_t = 0.0
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
            dz, dd, zz = _triple_sums(name, sck, bck, vec.ckpt, n_z, streaming.STREAM_ELEMS)
            dz_t, dd_t, zz_t, n_t = dz_t + dz, dd_t + dd, zz_t + zz, n_t + n_z
            scores.append(TensorScore(name, _ratio(dz, zz), _ratio(dz, math.sqrt(dd * zz)), n_z, note))
            if progress:
                progress(n_z * sum(ck.info(name).itemsize for ck in (sck, bck, vec.ckpt)))
    if zz_t == 0.0:
        raise ValueError(f"{vec.path}: the fingerprint vector is all zeros over the suspect's tensors")
    alpha_hat = dz_t / zz_t
    cosine = _ratio(dz_t, math.sqrt(dd_t * zz_t))
    detected = alpha_hat >= alpha_min and cosine >= cosine_min  # NaN compares False: not detected
    if detected:
        verdict = f"fingerprint found: alpha_hat {alpha_hat:.3f}, cosine {cosine:.4f}"
    else:
        why = []
        if not alpha_hat >= alpha_min:
            why.append(f"alpha_hat {alpha_hat:.3f} < {alpha_min}")
        if not cosine >= cosine_min:
            why.append(f"cosine {cosine:.4f} < {cosine_min}")
        verdict = "no fingerprint: " + ", ".join(why)
    return DetectResult(
        detected=detected,
        verdict=verdict,
        alpha_hat=alpha_hat,
        cosine=cosine,
        tensors=len(scores),
        elements=n_t,
        thresholds={"alpha_min": alpha_min, "cosine_min": cosine_min},
        vector=vec.path,
        suspect=sck.path,
        base=bck.path,
        notes=notes,
        per_tensor=scores,
    )
