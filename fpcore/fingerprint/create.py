"""`fingerprint create`: train the base once on the fingerprint set, extract tau, write the vector and
the owner's secret (two files; the vector never holds the secret)."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fpcore import stamping
from fpcore.fingerprint.lm import LM, load_lm, save_lm
from fpcore.fingerprint.secret import Secret, vector_digest
from fpcore.fingerprint.train import FingerprintOptions, Log, train_fingerprint
from fpcore.io import AtomicOutput


@dataclass
class CreateResult:
    vector: Path
    secret: Path
    fingerprinted_model: Path | None
    keys: int
    train_seconds: float
    extract_seconds: float
    final_loss: float
    base_digest: str
    options: dict[str, Any] = field(default_factory=dict)


def create(
    base: str | Path | LM,
    vector_out: str | Path,
    secret_out: str | Path,
    opts: FingerprintOptions | None = None,
    *,
    model_out: str | Path | None = None,
    dtype: str = "fp32",
    overwrite: bool = False,
    log: Log | None = None,
) -> CreateResult:
    """Fingerprint `base` (a model folder, or an LM loaded from one), write tau to `vector_out` and the
    secret to `secret_out`; keep the fingerprinted model at `model_out` when given.

    Raises:
        FileExistsError for an existing output (unless overwrite); ModelFolderError / KeyTooLongError
        (ValueErrors) naming the folder or key; CheckpointError from extract.
    """
    opts = opts or FingerprintOptions()
    outs = [Path(vector_out), Path(secret_out)] + ([Path(model_out)] if model_out else [])
    if len({p.resolve() for p in outs}) != len(outs):
        raise ValueError(f"fingerprint create: the outputs must be different paths, got {[str(p) for p in outs]}")
    for p in outs:
        if p.exists() and not overwrite:
            raise FileExistsError(f"{p}: already exists (pass --overwrite to replace it)")
    lm = base if isinstance(base, LM) else load_lm(base)
    if lm.path is None:
        raise ValueError("fingerprint create: the base LM must have been loaded from a folder (lm.path)")
    res = train_fingerprint(lm, opts, log=log)
    fp = LM(res.model, lm.tokenizer)
    t0 = time.perf_counter()
    scratch = None
    try:
        if model_out:
            dest = Path(model_out)
            with AtomicOutput(dest, overwrite=overwrite) as tmp:
                save_lm(fp, tmp)
        else:
            scratch = Path(tempfile.mkdtemp(prefix="fpcore-fp-"))
            dest = scratch / "model"
            dest.mkdir()
            save_lm(fp, dest)
        ex = stamping.extract(dest, lm.path, vector_out, dtype=dtype, overwrite=overwrite)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    secret = Secret(
        keys=res.keys,
        target=opts.target,
        seed=opts.seed,
        template=opts.template,
        key_style=opts.key_style,
        base_digest=ex.base_digest,
        vector_digest=vector_digest(vector_out),
        training={**res.options, "final_loss": res.losses[-1], "seconds": res.seconds},
    )
    try:
        secret.save(secret_out, overwrite=overwrite)
    except BaseException:
        Path(vector_out).unlink(missing_ok=True)  # both or neither
        raise
    return CreateResult(
        vector=Path(vector_out),
        secret=Path(secret_out),
        fingerprinted_model=Path(model_out) if model_out else None,
        keys=len(res.keys),
        train_seconds=res.seconds,
        extract_seconds=time.perf_counter() - t0,
        final_loss=res.losses[-1],
        base_digest=ex.base_digest,
        options=res.options,
    )
