"""A fleet plan: a YAML file of stamping jobs, validated whole before any work starts.

    vector: fp.safetensors            # optional; a list for several ([a, b] or [{path: a, alpha: 0.5}, ...])
    alpha: 1.0                        # default strength of every vector
    trace_key: trace.key              # needed when any job names a licensee
    out: stamped                      # output root
    jobs:
      - model: models/acme-ft         # a safetensors file or a model folder
        licensee: acme                # optional: this copy's licensee code
        output: acme                  # optional: relative to `out`, or absolute (default: the model's
                                      # file or folder name)
        alpha: 0.8                    # optional overrides of the defaults
        vector: other.safetensors

Relative paths are taken from the plan file's folder. Errors name the job (its index and model) and
raise PlanError; nothing here starts Dask or reads a model's tensors (a damaged model fails its own
job, not the plan).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEDGER_NAME = "fleet-ledger.jsonl"
TOP_KEYS = {"vector", "alpha", "trace_key", "out", "jobs"}
JOB_KEYS = {"model", "licensee", "output", "alpha", "vector"}


class PlanError(ValueError):
    """The plan is malformed; the message names the plan file and, where one is at fault, the job."""


@dataclass(frozen=True)
class Job:
    index: int
    model: Path
    output: Path
    vectors: tuple[tuple[Path, float], ...]
    licensee: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "model": str(self.model),
            "output": str(self.output),
            "vectors": [{"path": str(p), "alpha": a} for p, a in self.vectors],
            "licensee": self.licensee,
        }

    def job_id(self, key_id: str | None) -> str:
        """What this job is (model, output, vectors and strengths, licensee, the trace key's id),
        not where it sits in the plan: the identity a rerun matches the ledger against."""
        d = self.describe()
        d.pop("index")
        d["trace_key"] = key_id if self.licensee is not None else None
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:32]

    @property
    def batch_key(self) -> tuple[tuple[tuple[str, float], ...], bool]:
        """Jobs with the same key share one stamp call (each vector tensor read once for all of them)."""
        return tuple((str(p), a) for p, a in self.vectors), self.licensee is not None

    def where(self) -> str:
        return f"job {self.index} (model {self.model})"


@dataclass
class Plan:
    path: Path
    out: Path
    jobs: list[Job]
    trace_key: Path | None = None
    vectors: list[Path] = field(default_factory=list)  # every vector any job uses, in first-use order
    key_id: str | None = None

    @property
    def ledger(self) -> Path:
        return self.out / LEDGER_NAME


def _alpha(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise PlanError(f"{where}: alpha must be a finite number, got {value!r}")
    return float(value)


def _path(value: Any, root: Path, where: str, what: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise PlanError(f"{where}: {what} must be a non-empty path string, got {value!r}")
    p = Path(value).expanduser()
    return (p if p.is_absolute() else root / p).resolve()


def _vectors(value: Any, alpha: float, root: Path, where: str) -> tuple[tuple[Path, float], ...]:
    """`vector:` as a path, a list of paths, or a list of {path, alpha}."""
    items = value if isinstance(value, list) else [value]
    out: list[tuple[Path, float]] = []
    for k, item in enumerate(items):
        w = f"{where}: vector {k}" if isinstance(value, list) else f"{where}: vector"
        if isinstance(item, dict):
            unknown = set(item) - {"path", "alpha"}
            if unknown or "path" not in item:
                raise PlanError(f"{w}: expected {{path, alpha}}, got keys {sorted(item)}")
            out.append((_path(item["path"], root, w, "path"), _alpha(item.get("alpha", alpha), w)))
        else:
            out.append((_path(item, root, w, "vector"), alpha))
    return tuple(out)


def load_plan(path: str | Path) -> Plan:
    """Reads and validates the whole plan: every field's type, every file it names exists, vectors
    and the trace key load, licensee ids are valid, no two jobs write the same output and none
    writes over an input. Raises PlanError (or FileNotFoundError for the plan file itself)."""
    from fpcore._extras import require

    require("yaml", extra="fleet", what="fleet plans")
    import yaml

    from fpcore.trace.key import TraceKey, TraceKeyError, check_licensee
    from fpcore.vector import FingerprintVector

    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no such plan file")
    try:
        doc = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: not a YAML plan ({exc})") from None
    if not isinstance(doc, dict):
        raise PlanError(f"{path}: a plan is a mapping with `jobs:`, got {type(doc).__name__}")
    unknown = set(doc) - TOP_KEYS
    if unknown:
        raise PlanError(f"{path}: unknown top-level keys {sorted(unknown)} (expected some of {sorted(TOP_KEYS)})")
    root = p.parent
    if "out" not in doc:
        raise PlanError(f"{path}: `out:` (the output root) is required")
    out = _path(doc["out"], root, str(path), "out")
    alpha = _alpha(doc.get("alpha", 1.0), str(path))
    default_vecs = _vectors(doc["vector"], alpha, root, str(path)) if doc.get("vector") is not None else ()
    key_path = _path(doc["trace_key"], root, str(path), "trace_key") if doc.get("trace_key") is not None else None
    jobs_doc = doc.get("jobs")
    if not isinstance(jobs_doc, list) or not jobs_doc:
        raise PlanError(f"{path}: `jobs:` must be a non-empty list")

    key_id = None
    if key_path is not None:
        try:
            key_id = TraceKey.load(key_path).key_id
        except (TraceKeyError, FileNotFoundError) as exc:
            raise PlanError(f"{path}: trace_key: {exc}") from None

    jobs: list[Job] = []
    for i, j in enumerate(jobs_doc):
        if not isinstance(j, dict) or "model" not in j:
            raise PlanError(f"{path}: job {i}: a job is a mapping with at least `model:`, got {j!r}")
        model = _path(j["model"], root, f"{path}: job {i}", "model")
        where = f"{path}: job {i} (model {j['model']})"
        unknown = set(j) - JOB_KEYS
        if unknown:
            raise PlanError(f"{where}: unknown keys {sorted(unknown)} (expected some of {sorted(JOB_KEYS)})")
        if not model.exists():
            raise PlanError(f"{where}: no such model file or folder {model}")
        a = _alpha(j["alpha"], where) if "alpha" in j else alpha
        if j.get("vector") is not None:
            vecs = _vectors(j["vector"], a, root, where)
        else:
            vecs = tuple((vp, a if "alpha" in j else va) for vp, va in default_vecs)
        lic = j.get("licensee")
        if lic is not None:
            if not isinstance(lic, str):
                raise PlanError(f"{where}: licensee must be a string, got {lic!r}")
            try:
                check_licensee(lic, where)
            except ValueError as exc:
                raise PlanError(str(exc)) from None
            if key_path is None:
                raise PlanError(f"{where}: a licensee needs the plan's `trace_key:`")
        if not vecs and lic is None:
            raise PlanError(f"{where}: nothing to stamp (no vector, no licensee)")
        output = _path(j.get("output", model.name), out, where, "output")
        jobs.append(Job(i, model, output, vecs, lic))

    vec_paths = list(dict.fromkeys(vp for job in jobs for vp, _ in job.vectors))
    for vp in vec_paths:
        user = next(job for job in jobs if any(v == vp for v, _ in job.vectors))
        try:
            FingerprintVector(vp)
        except (OSError, ValueError) as exc:
            raise PlanError(f"{path}: {user.where()}: vector {vp}: {exc}") from None
    inputs = {job.model for job in jobs} | set(vec_paths) | ({key_path} if key_path else set())
    seen: dict[Path, Job] = {}
    for job in jobs:
        if job.output in seen:
            raise PlanError(f"{path}: {job.where()} and {seen[job.output].where()} both write {job.output}")
        if job.output in inputs or any(job.output in x.parents for x in inputs):
            raise PlanError(f"{path}: {job.where()}: output {job.output} would overwrite an input")
        if job.output == out / LEDGER_NAME:
            raise PlanError(f"{path}: {job.where()}: output {job.output} is the ledger")
        seen[job.output] = job
    for job in jobs:
        if any(job.output != o and job.output in o.parents for o in seen):
            raise PlanError(f"{path}: {job.where()}: output {job.output} holds another job's output")
    return Plan(p, out, jobs, key_path, vec_paths, key_id)
