"""The attack suite: each function forges a complete record for a stolen final model theta_T.

    a  interp            linear interpolation from a fresh initialisation in many tiny steps (Fang et al.
                         2023, "infinitesimal update")
    a' interp-perm       the same from a rank-permuted initialisation that passes the KS test (Zhang et al.
                         2022): fresh initial values re-ordered to follow theta_T's ranks
    b  blindfolded       a few real SGD segments per epoch (the largest, so top-Q picks them), the rest tiny
                         interpolation steps towards theta_T (Fang et al.)
    c  adv-spoof         each step's batch perturbed so its gradient step follows the interpolation
                         (Zhang et al.); the record must name the perturbed data, which the verifier does
                         not hold
    d  penalty           real-data training pulled towards theta_T by alpha |theta - theta_T|^2, which the
                         record does not declare (seed paper, attack 1)
    e  reverse-noise     training from theta_T with growing label noise, then reversed (seed paper, attack 4)
    f  tamper            an honest record edited afterwards: a checkpoint byte or a batch index changed
    f' tamper-resealed   a checkpoint replaced and the hash chain re-sealed (an editor who re-hashes)

Every forger knows the recipe (RunConfig), the training data and theta_T, as a thief would.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fpcore import pair_stats

from .record import (
    checkpoint_tensors,
    make_header,
    open_record,
    seal,
    sha256_file,
    write_checkpoint,
    write_record,
)
from .recorder import segment_seed
from .task import Dataset, build_model, build_optimizer, epoch_batches, train_step
from .train import RunConfig, fresh


@dataclass
class Forgery:
    path: Path
    attack: str
    notes: dict = field(default_factory=dict)
    data: Dataset | None = None  # the data a spoofed record's batches index (attack c)


def _header(cfg: RunConfig, data: Dataset, init: dict, *, aug_std: float | None = None) -> dict:
    return make_header(
        model_spec=cfg.model_spec(data),
        init=init,
        optimizer=cfg.optimizer_spec(),
        dataset=data,
        batch_size=cfg.batch_size,
        every=cfg.every,
        aug_std=cfg.aug_std if aug_std is None else aug_std,
    )


def _theta_T(final: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in final.named_parameters()}


def _random_batches(n_steps: int, data: Dataset, cfg: RunConfig, rng: np.random.Generator) -> np.ndarray:
    spe = len(data) // cfg.batch_size
    epochs = -(-n_steps // spe)
    return np.concatenate([epoch_batches(len(data), cfg.batch_size, rng) for _ in range(epochs)])[:n_steps]


def _as_ckpt(theta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"param.{n}": t.detach().float().contiguous().clone() for n, t in theta.items()}


def _interpolation(theta0: dict, thetaT: dict, n_steps: int, every: int) -> list[tuple[int, dict]]:
    steps = list(range(0, n_steps, every)) + [n_steps]
    out = []
    for s in steps:
        a = s / n_steps
        out.append((s, _as_ckpt({n: theta0[n] + a * (thetaT[n] - theta0[n]) for n in theta0})))
    out[-1] = (n_steps, _as_ckpt(thetaT))
    return out


def _seeds(master: int, n: int) -> list[int]:
    return [segment_seed(master, j) for j in range(n)]


def interp(folder, final, data: Dataset, cfg: RunConfig, seed: int, *, stretch: int = 4, permuted: bool = False):
    """(a) theta_0 -> theta_T in `stretch` x the honest number of steps, every checkpoint on the line."""
    init = {"scheme": "torch_default", "seed": 7_000 + seed}
    model0 = build_model(cfg.model_spec(data), init)
    theta0 = {n: p.detach().clone() for n, p in model0.named_parameters()}
    thetaT = _theta_T(final)
    if permuted:  # fresh values, placed in the order of theta_T's values: same distribution, aligned ranks
        for n in theta0:
            vals = theta0[n].flatten().sort().values
            order = thetaT[n].flatten().argsort()
            t = torch.empty_like(vals)
            t[order] = vals
            theta0[n] = t.view_as(theta0[n])
    rng = np.random.default_rng([seed, 11])
    n_steps = stretch * cfg.epochs * (len(data) // cfg.batch_size)
    ckpts = _interpolation(theta0, thetaT, n_steps, cfg.every)
    batches = _random_batches(n_steps, data, cfg, rng)
    path = write_record(folder, _header(cfg, data, init), ckpts, batches, _seeds(seed + 7_000, len(ckpts) - 1))
    return Forgery(path, "interp-perm" if permuted else "interp", {"steps": n_steps, "stretch": stretch})


def interp_perm(folder, final, data, cfg, seed):
    return interp(folder, final, data, cfg, seed, permuted=True)


def blindfold_schedule(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    thetaT: dict[str, torch.Tensor],
    rng: np.random.Generator,
    gen: torch.Generator,
    master: int,
    real: Callable[[list[np.ndarray], int], None],
    *,
    epochs: int,
    seg_per_epoch: int,
    real_per_epoch: int,
    every: int,
    batch: int,
    n_data: int,
) -> tuple[list, list[np.ndarray], list[int], int]:
    """The blindfolded forger's trajectory (shared by the SGD and the task forgeries): per epoch the first
    `real_per_epoch` segments are `real(rows, step)` on recorded batches, the rest move theta an equal
    share of the way left to theta_T. Returns (checkpoints, batches, segment seeds, last step)."""
    ckpts = [(0, checkpoint_tensors(model, opt))]
    batches: list[np.ndarray] = []
    seeds: list[int] = []
    step, left = 0, epochs * (seg_per_epoch - real_per_epoch)
    for _ in range(epochs):
        eb = epoch_batches(n_data, batch, rng)
        for j in range(seg_per_epoch):
            seeds.append(segment_seed(master, len(seeds)))
            gen.manual_seed(seeds[-1])
            rows = eb[j * every : (j + 1) * every]
            if j < real_per_epoch:
                real(rows, step)
            else:
                with torch.no_grad():
                    for n, p in model.named_parameters():
                        p.add_((thetaT[n] - p) / left)
                left -= 1
            batches.extend(rows)
            step += every
            ckpts.append((step, checkpoint_tensors(model, opt)))
    return ckpts, batches, seeds, step


def blindfolded(
    folder, final, data: Dataset, cfg: RunConfig, seed: int, *, real_per_epoch: int = 2, margin: float = 4.0
):
    """(b) Per epoch, the first `real_per_epoch` segments are real SGD on recorded batches (they replay);
    the rest move theta a small step towards theta_T, each `margin` x smaller (l2) than a real segment, so
    top-Q (which picks the largest) picks the real ones."""
    model, opt, init = fresh(cfg, data, 8_000 + seed)
    thetaT = _theta_T(final)
    spe = len(data) // cfg.batch_size
    seg_per_epoch = spe // cfg.every
    rng = np.random.default_rng([seed, 12])
    gen = torch.Generator()
    master = 8_000 + seed

    # the forger's probe: how large is one real segment here?
    probe, popt, _ = fresh(cfg, data, 8_000 + seed)
    before = [p.detach().clone() for p in probe.parameters()]
    for idx in epoch_batches(len(data), cfg.batch_size, np.random.default_rng([seed, 99]))[: cfg.every]:
        train_step(probe, popt, data, torch.from_numpy(idx), aug_std=cfg.aug_std, generator=gen)
    real_l2 = pair_stats(before, [p.detach() for p in probe.parameters()]).l2
    dist = pair_stats(list(thetaT.values()), [p.detach() for p in model.parameters()]).l2
    n_interp = int(np.ceil(margin * dist / real_l2 * 1.5))  # the real segments also move theta
    epochs = max(1, int(np.ceil(n_interp / (seg_per_epoch - real_per_epoch))))
    n_interp = epochs * (seg_per_epoch - real_per_epoch)

    def real(rows: list[np.ndarray], step: int) -> None:
        for idx in rows:
            train_step(model, opt, data, torch.from_numpy(idx), aug_std=cfg.aug_std, generator=gen)

    ckpts, batches, seeds, step = blindfold_schedule(
        model, opt, thetaT, rng, gen, master, real,
        epochs=epochs, seg_per_epoch=seg_per_epoch, real_per_epoch=real_per_epoch, every=cfg.every,
        batch=cfg.batch_size, n_data=len(data),
    )  # fmt: skip
    ckpts[-1] = (step, _as_ckpt(thetaT))
    path = write_record(folder, _header(cfg, data, init), ckpts, np.stack(batches), seeds)
    return Forgery(path, "blindfolded", {"epochs": epochs, "real_per_epoch": real_per_epoch, "real_l2": real_l2})


def adv_spoof(folder, final, data: Dataset, cfg: RunConfig, seed: int, *, iters: int = 10, eps: float = 0.25):
    """(c) From a fresh initialisation, each step's batch (real samples + delta, |delta| <= eps) is optimised
    so that the SGD step it causes follows the straight line to theta_T. The record's batches index the
    perturbed samples, so its dataset hash is theirs: a verifier holding the real data refuses it; the
    returned Forgery carries the spoofed data to show what replay would say if it were accepted."""
    model, opt, init = fresh(cfg, data, 9_000 + seed)
    thetaT = _theta_T(final)
    names = [n for n, _ in model.named_parameters()]
    lr = cfg.lr
    n_steps = cfg.epochs * (len(data) // cfg.batch_size)
    rng = np.random.default_rng([seed, 13])
    src = _random_batches(n_steps, data, cfg, rng)
    Xs, ys = [], []
    start_gap = pair_stats([p.detach() for p in model.parameters()], [thetaT[n] for n in names]).l2
    for t in range(n_steps):
        idx = torch.from_numpy(src[t])
        x0, y = data.X[idx], data.y[idx]
        params = dict(model.named_parameters())
        want = {n: (thetaT[n] - params[n].detach()) / (n_steps - t) for n in names}  # the step the line takes
        delta = torch.zeros_like(x0, requires_grad=True)
        dopt = torch.optim.Adam([delta], lr=0.02)
        for _ in range(iters):
            loss = F.cross_entropy(model(x0 + delta), y)
            g = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True)
            miss = sum(((-lr * gi - want[n]) ** 2).sum() for gi, n in zip(g, names, strict=True))
            dopt.zero_grad()
            miss.backward()
            dopt.step()
            with torch.no_grad():
                delta.clamp_(-eps, eps)
        xs = (x0 + delta).detach()
        Xs.append(xs)
        ys.append(y)
        step_data = Dataset(xs, y, data.source)
        train_step(model, opt, step_data, torch.arange(len(y)))
    spoof = Dataset(torch.cat(Xs), torch.cat(ys), data.source)
    batches = np.arange(n_steps * cfg.batch_size).reshape(n_steps, cfg.batch_size)
    # re-run on the spoofed dataset with checkpoints (the same arithmetic as above, in record order)
    model, opt, _ = fresh(cfg, data, 9_000 + seed)
    ckpts = [(0, checkpoint_tensors(model, opt))]
    for t in range(n_steps):
        train_step(model, opt, spoof, torch.from_numpy(batches[t]))
        if (t + 1) % cfg.every == 0 or t + 1 == n_steps:
            ckpts.append((t + 1, checkpoint_tensors(model, opt)))
    gap = pair_stats([ckpts[-1][1][f"param.{n}"] for n in names], [thetaT[n] for n in names]).l2
    ckpts[-1] = (n_steps, _as_ckpt(thetaT))
    header = _header(cfg, spoof, init, aug_std=0.0)
    path = write_record(folder, header, ckpts, batches, _seeds(9_000 + seed, len(ckpts) - 1))
    return Forgery(path, "adv-spoof", {"final_gap_l2": gap, "start_gap_l2": start_gap}, data=spoof)


def penalty(folder, final, data: Dataset, cfg: RunConfig, seed: int, *, alpha: float = 0.05):
    """(d) Real training on the recorded batches with the undeclared loss term alpha |theta - theta_T|^2; the
    last checkpoint is theta_T itself."""
    model, opt, init = fresh(cfg, data, 10_000 + seed)
    thetaT = _theta_T(final)

    def pull(m: torch.nn.Module) -> torch.Tensor:
        return alpha * sum(((p - thetaT[n]) ** 2).sum() for n, p in m.named_parameters())

    rng = np.random.default_rng([seed, 14])
    gen = torch.Generator()
    ckpts = [(0, checkpoint_tensors(model, opt))]
    batches, seeds, step = [], [segment_seed(10_000 + seed, 0)], 0
    gen.manual_seed(seeds[0])
    for _ in range(cfg.epochs):
        for idx in epoch_batches(len(data), cfg.batch_size, rng):
            train_step(model, opt, data, torch.from_numpy(idx), aug_std=cfg.aug_std, generator=gen, extra_loss=pull)
            batches.append(idx)
            step += 1
            if step % cfg.every == 0:
                ckpts.append((step, checkpoint_tensors(model, opt)))
                seeds.append(segment_seed(10_000 + seed, len(seeds)))
                gen.manual_seed(seeds[-1])
    if step % cfg.every:
        ckpts.append((step, checkpoint_tensors(model, opt)))
    else:
        seeds.pop()
    gap = pair_stats([ckpts[-1][1][f"param.{n}"] for n in thetaT], list(thetaT.values())).l2
    ckpts[-1] = (step, _as_ckpt(thetaT))
    path = write_record(folder, _header(cfg, data, init), ckpts, np.stack(batches), seeds)
    return Forgery(path, "penalty", {"alpha": alpha, "final_gap_l2": gap})


def reverse_noise(folder, final, data: Dataset, cfg: RunConfig, seed: int):
    """(e) From theta_T, SGD on real batches whose labels are replaced at random with a probability growing
    from 0 to 1; the path is then written backwards, so it ends at theta_T, on the true-label batches."""
    model = build_model(cfg.model_spec(data))
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(final.get_parameter(n))
    opt = build_optimizer(cfg.optimizer_spec(), model.parameters())
    n_steps = cfg.epochs * (len(data) // cfg.batch_size)
    n_steps -= n_steps % cfg.every
    rng = np.random.default_rng([seed, 15])
    batches = _random_batches(n_steps, data, cfg, rng)
    path_ckpts = [checkpoint_tensors(model, None)]
    classes = int(data.y.max()) + 1
    for t in range(n_steps):
        idx = torch.from_numpy(batches[t])
        y = data.y[idx].clone()
        flip = torch.from_numpy(rng.random(len(y)) < (t + 1) / n_steps)
        y[flip] = torch.from_numpy(rng.integers(0, classes, int(flip.sum())))
        train_step(model, opt, Dataset(data.X[idx], y, data.source), torch.arange(len(y)), aug_std=0.0)
        if (t + 1) % cfg.every == 0:
            path_ckpts.append(checkpoint_tensors(model, None))
    rev = path_ckpts[::-1]
    ckpts = [(i * cfg.every, rev[i]) for i in range(len(rev))]
    ckpts[-1] = (n_steps, _as_ckpt(_theta_T(final)))
    init = {"scheme": "torch_default", "seed": 11_000 + seed}
    header = _header(cfg, data, init)
    path = write_record(folder, header, ckpts, batches[::-1].copy(), _seeds(11_000 + seed, len(ckpts) - 1))
    return Forgery(path, "reverse-noise", {"steps": n_steps})


def tamper(folder, honest: Path, seed: int, *, reseal: bool = False):
    """(f) Copy an honest record and edit it. Without `reseal`: flip one byte in a middle checkpoint's
    tensor data (even seeds) or change one batch index (odd seeds), leaving record.json as it was. With
    `reseal`: replace a middle checkpoint by itself plus noise the size of a median update, then re-hash
    the file and re-seal the whole chain (record.json then describes the edited files)."""
    folder = Path(folder)
    shutil.copytree(honest, folder)
    rec = open_record(folder)
    i = len(rec.entries) // 2
    f = folder / rec.entries[i]["file"]
    notes: dict = {"entry": i}
    if not reseal:
        if seed % 2 == 0:
            raw = bytearray(f.read_bytes())
            pos = len(raw) - 5  # inside the last tensor's data
            raw[pos] ^= 0x01
            f.write_bytes(bytes(raw))
            notes["edit"] = f"flipped one bit of byte {pos} of {rec.entries[i]['file']}"
        else:
            b = rec.batches().copy()
            b[b.shape[0] // 2, 0] = (b[b.shape[0] // 2, 0] + 1) % int(rec.doc["dataset"]["size"])
            (folder / rec.doc["batches"]["file"]).write_bytes(_npy(b))
            notes["edit"] = f"changed batch index at step {b.shape[0] // 2}"
        return Forgery(folder, "tamper", notes)
    ck = dict(rec.checkpoint(i))
    prev = rec.checkpoint(i - 1)
    names = [k for k in sorted(ck) if k.startswith("param.")]
    upd = pair_stats([ck[k] for k in names], [prev[k] for k in names]).l2
    g = torch.Generator()
    g.manual_seed(seed)
    noise = {k: torch.randn(ck[k].shape, generator=g) for k in names}
    scale = upd / pair_stats(list(noise.values()), [torch.zeros_like(v) for v in noise.values()]).l2
    for k in names:
        ck[k] = ck[k] + scale * noise[k]
    f.unlink()
    entry = write_checkpoint(folder, rec.steps[i], ck)
    entries = [dict(e) for e in rec.entries]
    entries[i] = {**entries[i], **entry}
    doc = seal(rec.doc, entries)
    (folder / "record.json").write_text(json.dumps(doc, indent=1) + "\n")
    notes["edit"] = f"checkpoint {i} moved by {upd:.3g} (l2, one update's size), chain re-sealed"
    assert sha256_file(folder / entries[i]["file"]) == doc["checkpoints"][i]["sha256"]
    return Forgery(folder, "tamper-resealed", notes)


def _npy(arr: np.ndarray) -> bytes:
    from .record import npy_bytes

    return npy_bytes(arr)


ATTACKS: dict[str, tuple[str, Callable]] = {
    "interp": ("a", interp),
    "interp-perm": ("a'", interp_perm),
    "blindfolded": ("b", blindfolded),
    "adv-spoof": ("c", adv_spoof),
    "penalty": ("d", penalty),
    "reverse-noise": ("e", reverse_noise),
    "tamper": ("f", lambda folder, honest, seed: tamper(folder, honest, seed)),
    "tamper-resealed": ("f'", lambda folder, honest, seed: tamper(folder, honest, seed, reseal=True)),
}
NEEDS_HONEST_RECORD = ("tamper", "tamper-resealed")


def forge(
    name: str,
    folder,
    *,
    final: torch.nn.Module | None = None,
    honest: Path | None = None,
    data: Dataset,
    cfg: RunConfig,
    seed: int,
) -> Forgery:
    """Forge a record with attack `name` (see ATTACKS) into `folder`."""
    if name not in ATTACKS:
        raise ValueError(f"pot forge: unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    fn = ATTACKS[name][1]
    if name in NEEDS_HONEST_RECORD:
        if honest is None:
            raise ValueError(f"pot forge: attack {name!r} edits an honest record; pass one")
        return fn(folder, honest, seed)
    if final is None:
        raise ValueError(f"pot forge: attack {name!r} needs the stolen final model")
    return fn(folder, final, data, cfg, seed)
