"""Verifiers of a proof-of-training record, each a CheckResult with its figures, and the combined verdict.

Checks, in order: integrity (files, sizes, sha256s, the hash chain), data (the verifier's dataset hashes
to the record's), init (per-layer Kolmogorov-Smirnov of theta_0 against the declared initialiser),
replay (top-Q per epoch + R random segments replayed, update-size profile) and matching (trajectory
matching, see matching.py). With a model, `binding` (see binding.py) runs right after integrity: the
record must end at that model, bit for bit. A record is accepted when every check that ran passed. When
integrity fails the rest are skipped: nothing in a broken record can be trusted; when binding fails the
rest are skipped too: whatever the record proves, it is not about this model.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fpcore import extract_tensors, trajectory_stats

from .binding import NOT_CHECKED, check_binding, open_model
from .record import (
    STEP_DIGEST,
    Record,
    RecordError,
    canonical,
    header_of,
    open_record,
    sha256_bytes,
    sha256_file,
)
from .replay import Replayer
from .result import CheckResult, Verdict
from .soundness import choose_r, miss_probability
from .task import Dataset, build_model, init_bounds, load_dataset
from .tasks import task_of_record

CHECKS = ("integrity", "data", "init", "replay", "matching")
METRICS = ("l1", "l2", "linf", "cosine")

# Replay thresholds. A replayed segment passes when, for every metric, its distance to the recorded
# checkpoint (l1/l2/linf divided by the record's median update size of that metric; cosine: the cosine
# distance between the replayed and the recorded update) is <= delta = CAL_FACTOR x the noise measured
# by replaying calibration segments in float64 against float32 (never below DELTA_FLOOR).
CAL_FACTOR = 100.0
DELTA_FLOOR = {"l1": 1e-6, "l2": 1e-6, "linf": 1e-6, "cosine": 1e-9}
# Update-size profile: within an epoch, the largest segment update (l2) over the median one. Honest SGD
# on digits stays below ~3 (docs/perf/pot_eval.json); a trajectory built of tiny steps with a few real
# ones shows spikes.
PROFILE_MAX = 8.0
SIZE_RTOL = 1e-6  # committed update size against the one its checkpoints give (summation order only)
SOUNDNESS_F = 0.5  # the forged fraction --soundness is stated against: a forger who saved half the training
KS_ALPHA = 0.01  # family-wise, Bonferroni-split over the tensors


# ---------------------------------------------------------------------------------------------- integrity


def check_integrity(rec: Record) -> CheckResult:
    """Every file present with its recorded size and sha256; prev hashes chain from the header to head;
    steps 0 < ... = steps on multiples of k; batches shaped (steps, B) with indices inside the dataset."""
    doc, problems = rec.doc, []
    bfile = rec.path / doc["batches"]["file"]
    if not bfile.is_file():
        problems.append(f"batches file {bfile.name} is missing")
    elif sha256_file(bfile) != doc["batches"]["sha256"]:
        problems.append(f"batches file {bfile.name}: sha256 mismatch")
    else:
        b = rec.batches()
        want = (int(doc["steps"]), int(doc["batch_size"]))
        if b.shape != want:
            problems.append(f"batches file {bfile.name}: shape {b.shape}, expected {want}")
        elif b.size and (b.min() < 0 or b.max() >= int(doc["dataset"]["size"])):
            problems.append(f"batches file {bfile.name}: indices outside 0..{int(doc['dataset']['size']) - 1}")
    sd = doc.get("step_digests")
    if sd is not None:
        f = rec.path / str(sd.get("file", ""))
        want = int(doc["steps"]) * int(sd.get("bytes_per_step", 0))
        if sd.get("algorithm") != STEP_DIGEST["algorithm"] or sd.get("bytes_per_step") != STEP_DIGEST["bytes_per_step"]:
            problems.append(f"step digests: scheme {sd.get('algorithm')!r} unknown")
        elif not f.is_file():
            problems.append(f"step digests file {f.name} is missing")
        elif f.stat().st_size != want:
            problems.append(f"step digests file {f.name}: {f.stat().st_size} bytes, expected {want}")
        elif sha256_file(f) != sd.get("sha256"):
            problems.append(f"step digests file {f.name}: sha256 mismatch")
    sizes = doc.get("update_sizes")
    if sizes is not None:
        nseg = len(rec.entries) - 1
        bad = [m for m in METRICS if not isinstance(sizes.get(m), list) or len(sizes[m]) != nseg]
        if bad:
            problems.append(f"update sizes: {', '.join(bad)} must list one number per segment ({nseg})")
        else:  # sizes are >= 0 and finite; cosine may be nan (a zero update has no direction)
            bad = [
                m
                for m in METRICS
                if not all(
                    type(x) in (int, float) and (m == "cosine" or (math.isfinite(x) and x >= 0)) for x in sizes[m]
                )
            ]
            if bad:
                problems.append(f"update sizes: {', '.join(bad)} must be finite numbers >= 0 (cosine: numbers)")
    in_store = 0
    missing: list[int] = []
    prev = sha256_bytes(canonical(header_of(doc)))
    steps = rec.steps
    k = int(doc["every"])
    for i, e in enumerate(rec.entries):
        name = f"checkpoint entry {i} ({e['file']})"
        if e["prev"] != prev:
            problems.append(f"{name}: hash chain broken (prev does not match the previous entry)")
        prev = sha256_bytes(canonical(e))
        f = rec.checkpoint_file(i)
        if not f.is_file():
            missing.append(i)
            continue
        size = f.stat().st_size
        if size != int(e["bytes"]):
            problems.append(f"{name}: {size} bytes, the record says {e['bytes']} (truncated or replaced)")
            continue
        if f != rec.path / e["file"]:
            in_store += 1  # its sha256 is checked when a check reads it (the verifier fetches only those)
            continue
        if sha256_bytes(rec.raw(i)) != e["sha256"]:
            problems.append(f"{name}: sha256 mismatch (the file was changed after recording)")
    if missing:
        where = "in the record folder" + (f" or the store {rec.store}" if rec.store else "")
        hint = "" if rec.store else " (a light record? pass its checkpoint store: --store DIR)"
        names = [rec.entry_name(i).split(": ", 1)[1] for i in missing]
        if len(missing) <= 3:
            problems += [f"{n}: file is missing {where}{hint}" for n in names]
        else:
            listed = ", ".join(names[:3]) + f" and {len(missing) - 3} more"
            problems.append(f"{len(missing)} checkpoint files missing {where}: {listed}{hint}")
    if doc["head"] != prev:
        problems.append("head does not match the last checkpoint entry's hash")
    want_steps = list(range(0, int(doc["steps"]), k)) + [int(doc["steps"])]
    if steps != want_steps:
        problems.append(f"checkpoint steps {steps[:4]}... do not follow every={k} up to steps={doc['steps']}")
    figs = {"files": len(rec.entries) + 1, "head": doc["head"], "problems": problems, "held_by_store": in_store}
    return CheckResult("integrity", not problems, "; ".join(problems) or "files, sizes, sha256s and chain intact", figs)


def check_data(rec: Record, data: Dataset) -> CheckResult:
    want = rec.doc["dataset"]
    got = {"sha256": data.sha256, "size": len(data)}
    ok = got["sha256"] == want["sha256"] and got["size"] == int(want["size"])
    reason = (
        "the verifier's dataset hashes to the record's"
        if ok
        else f"record's dataset sha256 {str(want['sha256'])[:16]}… (size {want['size']}) is not the verifier's "
        f"{got['sha256'][:16]}… (size {got['size']}): its batches index data the verifier does not hold"
    )
    return CheckResult("data", ok, reason, {"record_sha256": want["sha256"], "verifier_sha256": got["sha256"]})


# ---------------------------------------------------------------------------------------------- init


def check_init(rec: Record) -> CheckResult:
    """Per-layer one-sample KS test of theta_0 against the declared U(-b, b); passes when every p-value is
    >= KS_ALPHA / number of tensors. Also reports whether theta_0 is exactly what the declared seed draws
    (informative: a forger can declare any seed, a rank-permuted theta_0 reproduces none)."""
    from scipy.stats import kstest

    doc = rec.doc
    model = build_model(doc["model"])
    bounds = init_bounds(model)
    theta0 = rec.checkpoint(0)
    per, alpha = {}, KS_ALPHA / max(1, len(bounds))
    for n, b in bounds.items():
        v = theta0[f"param.{n}"].double().flatten().numpy()
        res = kstest(v, "uniform", args=(-b, 2 * b))
        per[n] = {"ks": float(res.statistic), "p": float(res.pvalue), "n": int(v.size)}
    fresh = build_model(doc["model"], doc["init"])
    reproduces = all(torch.equal(p, theta0[f"param.{n}"]) for n, p in fresh.named_parameters())
    worst = min(per, key=lambda n: per[n]["p"])
    ok = per[worst]["p"] >= alpha
    reason = (
        f"every layer fits the declared initialiser (lowest p {per[worst]['p']:.3g} at {worst}, threshold {alpha:.2g})"
        if ok
        else f"{worst} does not fit the declared initialiser: KS {per[worst]['ks']:.3f}, p {per[worst]['p']:.3g} "
        f"< {alpha:.2g}"
    )
    return CheckResult("init", ok, reason, {"layers": per, "p_min": per[worst]["p"], "seed_reproduces": reproduces})


# ---------------------------------------------------------------------------------------------- replay


def _all_local(rec: Record) -> bool:
    return all((rec.path / e["file"]).exists() for e in rec.entries)


def committed_sizes(rec: Record) -> dict[str, np.ndarray]:
    sizes = rec.doc["update_sizes"]
    return {m: np.asarray(sizes[m], dtype=np.float64) for m in METRICS}


def _size_mismatch(actual: float, claimed: float) -> bool:
    return not abs(actual - claimed) <= SIZE_RTOL * max(abs(actual), abs(claimed), 1e-30)


def checkpoint_profile(rec: Record, chunk: int = 32) -> dict[str, np.ndarray]:
    """Update size of every segment (theta_j -> theta_j+1) from the checkpoints themselves: paired
    trajectory_stats passes over `chunk` consecutive pairs at a time (the Recorder's own measure, bit for
    bit), each chunk's parameter vectors read into the memory of the previous chunk's (a 384-segment
    tiny-lm record: 0.23 s reading all into new memory, most of it page faults)."""
    from fpcore._stream import streaming_threads

    n = len(rec.entries)
    parts: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    prev = rec.flat_params(0)
    spare: list[torch.Tensor] = []
    # one native thread fewer: check_replay runs this while segments replay (a parallel region with a
    # thread preempted by the replay stalls: 2.2 s instead of 0.1 s beside two busy Dask workers)
    with streaming_threads():
        for i in range(1, n, chunk):
            cur = [rec.flat_params(k, out=spare.pop() if spare else None) for k in range(i, min(n, i + chunk))]
            ts = trajectory_stats([[v] for v in [prev, *cur[:-1]]], mode="paired", other=[[v] for v in cur])
            for m in METRICS:
                parts[m].append(np.asarray(getattr(ts, m), dtype=np.float64))
            spare = [prev, *cur[:-1]]
            prev = cur[-1]
    return {m: np.concatenate(v) if v else np.empty(0) for m, v in parts.items()}


def update_profile(rec: Record) -> dict[str, np.ndarray]:
    """Update size of every segment: the sizes the record commits to, when it does (check_replay holds
    them to the checkpoints: every segment's when the checkpoints are at hand, the replayed ones' for a
    light record), else the checkpoints' own (checkpoint_profile)."""
    if rec.doc.get("update_sizes") is not None:
        return committed_sizes(rec)
    return checkpoint_profile(rec)


def top_q(profile: dict[str, np.ndarray], epochs: np.ndarray, q: int) -> list[int]:
    """The union over metrics of the q largest updates of each epoch."""
    out: set[int] = set()
    for e in np.unique(epochs):
        seg = np.flatnonzero(epochs == e)
        for m in METRICS:
            vals = np.nan_to_num(profile[m][seg], nan=np.inf)
            out.update(int(s) for s in seg[np.argsort(-vals, kind="stable")[:q]])
    return sorted(out)


def _distances(rec: Record, segs: list[int], reached: list[list[torch.Tensor]], typical: dict) -> dict[str, np.ndarray]:
    """Normalised distances of replayed vs recorded checkpoints j+1 (one paired trajectory_stats pass), and
    the cosine distance between the replayed and the recorded update directions."""
    recorded = [[rec.flat_params(j + 1)] for j in segs]
    ts = trajectory_stats(reached, mode="paired", other=recorded)
    starts = [[rec.flat_params(j)] for j in segs]
    du_rep = [extract_tensors(r, s) for r, s in zip(reached, starts, strict=True)]
    du_rec = [extract_tensors(r, s) for r, s in zip(recorded, starts, strict=True)]
    cos = trajectory_stats(du_rep, mode="paired", other=du_rec).cosine
    return {
        "l1": ts.l1 / typical["l1"],
        "l2": ts.l2 / typical["l2"],
        "linf": ts.linf / typical["linf"],
        "cosine": np.nan_to_num(cos, nan=1.0),
    }


def check_replay(
    rec: Record,
    data: Dataset,
    *,
    q: int = 1,
    r: int = 2,
    seed: int | None = None,
    soundness: float | None = None,
    forged_fraction: float = SOUNDNESS_F,
    cluster: tuple[Any, int | None] | None = None,
) -> CheckResult:
    """Replay the top-Q segments of each epoch and R random ones (with `soundness`, R chosen so that a
    forger who faked `forged_fraction` of the segments is missed with chance <= soundness; see
    soundness.py). `cluster`: (Dask client, threads per worker) to replay the segments there."""
    t0 = time.perf_counter()
    # top-Q is chosen from the committed sizes where the record has them: the replays start without
    # reading every checkpoint, and the committed sizes are held to the checkpoints below (a lie rejects)
    profile = update_profile(rec)
    committed = rec.doc.get("update_sizes") is not None
    check_all = committed and _all_local(rec)  # every segment's committed size against its checkpoints
    epochs = rec.segment_epochs()
    nseg = len(epochs)
    typical = {m: float(np.median(profile[m])) for m in ("l1", "l2", "linf")}
    for m, v in typical.items():
        if not v > 0:
            return CheckResult("replay", False, f"median {m} update size is {v}: the record does not train", {})
    chosen = top_q(profile, epochs, q)
    if soundness is not None:
        r = choose_r(nseg, len(chosen), forged_fraction, soundness)
    rng = np.random.default_rng(secrets.randbits(63) if seed is None else seed)
    rest = np.setdiff1d(np.arange(nseg), chosen)
    rand = sorted(int(x) for x in rng.choice(rest, size=min(r, len(rest)), replace=False)) if r > 0 else []
    segs = sorted(set(chosen) | set(rand))
    # calibration: the largest update (the first top-Q segment) replayed in float64 against float32
    cal = [chosen[0]]
    if cluster is None:
        # every checkpoint's update sizes are read and measured on a helper thread (file reads and the
        # native pass release the GIL) while this one replays: 2.02 -> 1.97 s on a 384-segment tiny-lm record
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fpcore-pot-profile") as ex:
            sizes = ex.submit(checkpoint_profile, rec) if check_all else None
            replay = Replayer(rec, data)
            reached = [replay(j) for j in segs]
            firsts = replay.first_mismatch
            replay64 = Replayer(rec, data, torch.float64)
            cal_reached = [replay64(j) for j in cal]
            actual = sizes.result() if sizes is not None else None
    else:  # the float64 replay is one more task there, shared out with the others
        from .parallel import submit_segments

        collect = submit_segments(cluster[0], cluster[1], rec, data, segs, float64=cal)
        actual = checkpoint_profile(rec) if check_all else None  # while the workers replay
        reached, firsts, cal_reached = collect()
    dist = _distances(rec, segs, reached, typical)
    cal_f32 = [reached[segs.index(j)] for j in cal]
    ts = trajectory_stats(cal_reached, mode="paired", other=cal_f32)
    starts = [[rec.flat_params(j)] for j in cal]
    cos = trajectory_stats(
        [extract_tensors(a, s) for a, s in zip(cal_reached, starts, strict=True)],
        mode="paired",
        other=[extract_tensors(b, s) for b, s in zip(cal_f32, starts, strict=True)],
    ).cosine
    noise = {
        "l1": float(np.max(ts.l1)) / typical["l1"],
        "l2": float(np.max(ts.l2)) / typical["l2"],
        "linf": float(np.max(ts.linf)) / typical["linf"],
        "cosine": float(np.max(np.abs(np.nan_to_num(cos, nan=0.0)))),
    }
    delta = {m: max(CAL_FACTOR * noise[m], DELTA_FLOOR[m]) for m in METRICS}
    ratio = np.max(np.stack([dist[m] / delta[m] for m in METRICS]), axis=0)  # per segment, worst metric
    # committed update sizes (top-Q was chosen from them): each replayed segment's must be its checkpoints',
    # and every segment's when the checkpoints are at hand
    lied: dict[int, str] = {}
    if committed:
        if actual is not None:
            check = list(range(nseg))
        else:
            check = segs
            ts = trajectory_stats(
                [[rec.flat_params(j)] for j in segs], mode="paired", other=[[rec.flat_params(j + 1)] for j in segs]
            )
            actual = {m: dict(zip(segs, getattr(ts, m), strict=True)) for m in METRICS}
        for j in check:
            for m in METRICS:
                a, c = float(actual[m][j]), float(profile[m][j])
                if _size_mismatch(a, c):
                    lied[j] = f"claimed {m} {c:.6g}, its checkpoints give {a:.6g}"
                    break
    bad = sorted({segs[i] for i in np.flatnonzero(ratio > 1.0)} | set(lied))
    topq_ok = all(ratio[segs.index(j)] <= 1.0 for j in chosen) and not lied
    rand_ok = all(ratio[segs.index(j)] <= 1.0 for j in rand) and not lied
    spik = []
    for e in np.unique(epochs):
        v = profile["l2"][epochs == e]
        if v.size >= 3:
            spik.append(float(v.max() / np.median(v)))
    spikiness = max(spik) if spik else 1.0
    profile_ok = spikiness <= PROFILE_MAX
    worst = segs[int(np.argmax(ratio))]
    figs = {
        "segments": nseg,
        "replayed": len(segs),
        "top_q": chosen,
        "random": rand,
        "typical_update": typical,
        "noise": noise,
        "delta": delta,
        "max_distance": {m: float(np.max(dist[m])) for m in METRICS},
        "worst_segment": worst,
        "worst_over_delta": float(np.max(ratio)),
        "failed_segments": bad,
        "committed_sizes": {"recorded": rec.doc.get("update_sizes") is not None, "mismatched": sorted(lied)},
        "top_q_passed": topq_ok,
        "random_passed": rand_ok,
        "profile_spikiness": spikiness,
        "profile_max": PROFILE_MAX,
        "profile_passed": profile_ok,
        "replayed_steps": int(sum(rec.steps[j + 1] - rec.steps[j] for j in segs)),
        "calibration_steps": int(sum(rec.steps[j + 1] - rec.steps[j] for j in cal)),
        "step_digests": {
            "recorded": rec.step_digests() is not None,
            "bit_exact_segments": sum(firsts.get(j, 0) is None for j in segs) if firsts else 0,
            "first_differing_step": {str(j): firsts[j] for j in segs if firsts.get(j) is not None},
        },
        "soundness": {
            "model": "a forger faked a fraction f of the segments; each faked one replayed is caught; the R "
            "random segments are drawn after the record is sealed",
            "target": soundness,
            "r": len(rand),
            "forged_fraction": forged_fraction,
            "miss_at_forged_fraction": miss_probability(nseg, len(chosen), len(rand), forged_fraction),
            "miss_f50": miss_probability(nseg, len(chosen), len(rand), 0.5),
            "miss_f05": miss_probability(nseg, len(chosen), len(rand), 0.05),
        },
    }
    ok = topq_ok and rand_ok and profile_ok
    snd = figs["soundness"]
    miss = (
        f"a forger who faked 50 % of the segments is missed with chance {snd['miss_f50']:.2g}, "
        f"5 %: {snd['miss_f05']:.2g} (R = {len(rand)})"
    )
    if ok:
        reason = (
            f"{len(segs)}/{nseg} segments replayed within delta (worst {figs['worst_over_delta']:.3g} x delta); "
            f"profile spikiness {spikiness:.2f} <= {PROFILE_MAX}; {miss}"
        )
    else:
        parts = [f"segment {j}'s committed update size is not its checkpoints' ({why})" for j, why in lied.items()]
        if set(bad) - set(lied):
            which = "top-Q" if not topq_ok else "random"
            if not topq_ok and not rand_ok:
                which = "top-Q and random"
            j = worst
            where = (
                f"; its replay first differs from the record's step digest at step {firsts[j]}"
                if firsts.get(j) is not None
                else ""
            )
            parts.append(
                f"{len(bad)}/{len(segs)} replayed segments ({which}) miss the record: segment {j} "
                f"(steps {rec.steps[j]}-{rec.steps[j + 1]}) lands {figs['worst_over_delta']:.3g} x delta away "
                f"(l2 {dist['l2'][segs.index(j)]:.3g} typical updates, delta {delta['l2']:.3g}){where}"
            )
        if not profile_ok:
            parts.append(f"update-size profile spikiness {spikiness:.1f} > {PROFILE_MAX}")
        reason = "; ".join(parts)
    return CheckResult("replay", ok, reason, figs, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- verdict


def verify(
    record: str | Path | Record,
    data: Dataset | None = None,
    *,
    test_data: Dataset | None = None,
    checks: tuple[str, ...] = CHECKS,
    q: int = 1,
    r: int = 2,
    seed: int | None = None,
    matching: dict | None = None,
    model: str | Path | Mapping[str, torch.Tensor] | None = None,
    soundness: float | None = None,
    forged_fraction: float = SOUNDNESS_F,
    scheduler: str | None = None,
    workers: int | None = None,
    store: str | Path | None = None,
) -> Verdict:
    """Run `checks` on a record and combine them: accepted iff every check that ran passed.

    data: the training set the record's batches index (default: loaded from the record's dataset source);
    test_data: held-out real data for trajectory matching (default: the source's test split);
    model: the model in dispute (a safetensors file or model folder, or a state_dict): the record is
    accepted only if it also ends at that model (`binding`). Without it the verdict's `binding` entry is
    skipped and says that no model was checked.
    soundness: choose R so that a forger who faked `forged_fraction` of the segments is missed with at
    most this chance (overrides r). scheduler / workers: replay the segments on Dask (an existing
    cluster, or an embedded LocalCluster of `workers` processes); the verdict is the serial one.
    store: the folder holding a light record's checkpoints (fpcore.pot.record.split_record); only those
    the checks use are read, each checked against the sha256 the record sealed.
    Raises RecordError when record.json is missing or malformed (integrity problems are a failed check),
    CheckpointError when `model` is not a readable model.
    """
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"pot verify: unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    source = open_model(model) if model is not None else None
    rec = record if isinstance(record, Record) else open_record(record, store)
    src = rec.doc["dataset"].get("source", {})
    out: dict[str, CheckResult] = {}
    label = source.label if source is not None else None

    def run(name: str, fn) -> None:
        if name not in checks:
            return
        t0 = time.perf_counter()
        res = fn()
        res.seconds = time.perf_counter() - t0
        out[name] = res

    run("integrity", lambda: check_integrity(rec))
    if "integrity" in out and not out["integrity"].passed:
        for c in (*checks, "binding"):
            out.setdefault(c, CheckResult(c, None, "skipped: integrity failed"))
        return Verdict(str(rec.path), False, out, label)
    if source is None:
        out["binding"] = CheckResult("binding", None, NOT_CHECKED)
    else:
        out["binding"] = check_binding(rec, source)
        if not out["binding"].passed:
            for c in checks:
                out.setdefault(c, CheckResult(c, None, "skipped: the record does not end at the model"))
            return Verdict(str(rec.path), False, out, label)
    task = task_of_record(rec.doc)  # TaskError (exit 2) when the task's code differs from the record's
    if data is None and any(c in checks for c in ("data", "replay")):
        data = task.load_data() if task is not None else load_dataset({**src, "split": "train"})
    run("data", lambda: check_data(rec, data))
    if task is None:
        run("init", lambda: check_init(rec))
    elif "init" in checks:
        out["init"] = CheckResult("init", None, f"skipped: task {task.name} declares no initialiser test")
    if "data" in out and not out["data"].passed:
        if "replay" in checks:
            out["replay"] = CheckResult("replay", None, "skipped: the record's batches index other data")
    else:
        kw = {"q": q, "r": r, "seed": seed, "soundness": soundness, "forged_fraction": forged_fraction}
        if scheduler is None and workers is None:
            run("replay", lambda: check_replay(rec, data, **kw))
        else:
            from fpcore._dask import cluster_client, require_dask

            require_dask("pot verify --workers/--scheduler")
            with cluster_client(scheduler, workers) as (client, _, _, threads, _):
                run("replay", lambda: check_replay(rec, data, cluster=(client, threads), **kw))
    if "matching" in checks and task is not None:
        out["matching"] = CheckResult("matching", None, "skipped: trajectory matching is built for digits-mlp only")
    elif "matching" in checks:
        from .matching import check_matching

        if test_data is None:
            test_data = load_dataset({**src, "split": "test"})
        run("matching", lambda: check_matching(rec, test_data, seed=seed, **(matching or {})))
    accepted = all(c.passed is not False for c in out.values()) and any(c.passed for c in out.values())
    return Verdict(str(rec.path), accepted, out, label)


def require_intact(v: Verdict) -> None:
    """Raise RecordError naming the broken entries when integrity failed (the CLI maps it to exit 2)."""
    c = v.checks.get("integrity")
    if c is not None and c.passed is False:
        raise RecordError(f"{v.record}: damaged record: {c.reason}")
