"""The attack suite adapted to task records (fpcore.pot.tasks: tiny-lm, AdamW): each forges a complete
record, with the honest run's header (task, code digest, data), for a stolen final model theta_T.

    interp           theta_0 -> theta_T on a straight line in `stretch` x the honest steps, AdamW's moments
                     zero (Fang et al. 2023)
    blindfolded      per epoch a few real AdamW segments (the largest, so top-Q picks them), the rest small
                     steps on the line towards theta_T (Fang et al.)
    data-spoof       honest training on a substituted copy of the data (a byte in eight changed): the
                     record must name data the verifier does not hold (the discrete analogue of the
                     adversarial-example spoof of Zhang et al. 2022; the perturbation search itself is not
                     reproduced: tokens do not take gradient steps)
    penalty          real training pulled towards theta_T by alpha |theta - theta_T|^2, undeclared
    reverse-noise    from theta_T, training on inputs with a growing share of random bytes, then the
                     checkpoints reversed (seed paper, attack 4)
    tamper, tamper-resealed: as for digits (fpcore.pot.attacks.tamper)

Forged records carry no step digests and no committed sizes (a forger would omit what only hurts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .attacks import Forgery, _theta_T, blindfold_schedule, tamper
from .record import checkpoint_tensors, open_record, recipe_of, write_record
from .recorder import segment_seed
from .task import Dataset, epoch_batches
from .tasks import Task, task_of_record

TASK_ATTACKS = ("interp", "blindfolded", "data-spoof", "penalty", "reverse-noise", "tamper", "tamper-resealed")


def _recipe(honest: Path) -> tuple[dict, Task, Dataset, int]:
    rec = open_record(honest)
    task = task_of_record(rec.doc)
    if task is None:
        raise ValueError(f"{honest}: not a task record")
    header = recipe_of(rec.doc)
    return header, task, task.load_data(), int(rec.doc["every"])


def _line_ckpts(model, theta0, thetaT, n_steps, every):
    out = []
    for s in [*range(0, n_steps, every), n_steps]:
        a = s / n_steps
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(theta0[n] + a * (thetaT[n] - theta0[n]))
        out.append((s, checkpoint_tensors(model, None)))
    return out


def interp(folder, final, honest: Path, seed: int, *, stretch: int = 2) -> Forgery:
    header, task, data, every = _recipe(honest)
    model = task.build_model(7_000 + seed)
    theta0, thetaT = _theta_T(model), _theta_T(final)
    n_steps = stretch * task.total_steps(data)
    ckpts = _line_ckpts(model, theta0, thetaT, n_steps, every)
    rng = np.random.default_rng([seed, 11])
    batches = rng.integers(0, len(data), size=(n_steps, task.batch_size()))
    seeds = [segment_seed(7_000 + seed, j) for j in range(len(ckpts) - 1)]
    return Forgery(write_record(folder, header, ckpts, batches, seeds), "interp", {"steps": n_steps})


def _train_segments(task, model, opt, data, eb_rows, step, gen, extra=None):
    for idx in eb_rows:
        if extra is None:
            task.train_step(model, opt, data, torch.from_numpy(idx), step, gen)
        else:
            extra(model, opt, torch.from_numpy(idx), step, gen)
        step += 1
    return step


def blindfolded(folder, final, honest: Path, seed: int, *, real_per_epoch: int = 2) -> Forgery:
    header, task, data, every = _recipe(honest)
    model = task.build_model(8_000 + seed)
    opt = task.build_optimizer(model)
    thetaT = _theta_T(final)
    b = task.batch_size()
    spe = len(data) // b
    seg_per_epoch = spe // every
    epochs = max(1, task.total_steps(data) // spe)
    rng = np.random.default_rng([seed, 12])
    gen = torch.Generator()
    ckpts, batches, seeds, _ = blindfold_schedule(
        model, opt, thetaT, rng, gen, 8_000 + seed,
        lambda rows, step: _train_segments(task, model, opt, data, rows, step, gen),
        epochs=epochs, seg_per_epoch=seg_per_epoch, real_per_epoch=real_per_epoch, every=every, batch=b,
        n_data=len(data),
    )  # fmt: skip
    path = write_record(folder, header, ckpts, np.stack(batches), seeds)
    return Forgery(path, "blindfolded", {"real_per_epoch": real_per_epoch, "epochs": epochs})


def _honest_like(folder, task, header, data, seed, every, name, extra=None, final=None) -> Forgery:
    """Training as the honest recipe (optionally with an undeclared term), recorded as a forger would."""
    model = task.build_model(seed)
    opt = task.build_optimizer(model)
    rng = np.random.default_rng([seed, 1])
    gen = torch.Generator()
    b = task.batch_size()
    ckpts = [(0, checkpoint_tensors(model, opt))]
    batches, seeds, step = [], [], 0
    epochs = max(1, task.total_steps(data) // (len(data) // b))
    for _ in range(epochs):
        eb = epoch_batches(len(data), b, rng)
        for j in range(len(eb) // every):
            seeds.append(segment_seed(seed, len(seeds)))
            gen.manual_seed(seeds[-1])
            rows = eb[j * every : (j + 1) * every]
            step = _train_segments(task, model, opt, data, rows, step, gen, extra)
            batches.extend(rows)
            ckpts.append((step, checkpoint_tensors(model, opt)))
    path = write_record(folder, header, ckpts, np.stack(batches), seeds)
    return Forgery(path, name, {"steps": step}, data)


def data_spoof(folder, final, honest: Path, seed: int) -> Forgery:
    header, task, data, every = _recipe(honest)
    g = torch.Generator()
    g.manual_seed(9_000 + seed)
    X = data.X.clone()
    mask = torch.rand(X.shape, generator=g) < 0.125
    X[mask] = torch.randint(0, 256, (int(mask.sum()),), generator=g)
    spoofed = Dataset(X, X, {**data.source, "spoofed": True})
    header = {**header, "dataset": {"sha256": spoofed.sha256, "size": len(spoofed), "source": data.source}}
    return _honest_like(folder, task, header, spoofed, 9_000 + seed, every, "data-spoof")


def penalty(folder, final, honest: Path, seed: int, *, alpha: float = 0.05) -> Forgery:
    header, task, data, every = _recipe(honest)
    thetaT = _theta_T(final)

    def step_with_penalty(model, opt, idx, step, gen):
        task.train_step(model, opt, data, idx, step, gen)
        with torch.no_grad():  # the undeclared pull towards theta_T, as a proximal step
            for n, p in model.named_parameters():
                p.add_(alpha * (thetaT[n] - p))

    return _honest_like(folder, task, header, data, 9_500 + seed, every, "penalty", step_with_penalty)


def reverse_noise(folder, final, honest: Path, seed: int) -> Forgery:
    header, task, data, every = _recipe(honest)
    model = task.build_model(None)
    model.load_state_dict(final.state_dict())
    opt = task.build_optimizer(model)
    g = torch.Generator()
    g.manual_seed(9_900 + seed)
    b = task.batch_size()
    n_steps = task.total_steps(data)
    rng = np.random.default_rng([seed, 13])
    gen = torch.Generator()
    states, rows_all = [checkpoint_tensors(model, None)], []
    for s in range(n_steps):
        idx = torch.from_numpy(rng.integers(0, len(data), size=b))
        X = data.X[idx].clone()
        m = torch.rand(X.shape, generator=g) < (s + 1) / n_steps * 0.5
        X[m] = torch.randint(0, 256, (int(m.sum()),), generator=g)
        noisy = Dataset(X, X, data.source)
        gen.manual_seed(s)
        task.train_step(model, opt, noisy, torch.arange(b), s, gen)
        rows_all.append(idx.numpy())
        if (s + 1) % every == 0 or s + 1 == n_steps:
            states.append(checkpoint_tensors(model, None))
    states = states[::-1]
    steps = [*range(0, n_steps, every), n_steps]
    ckpts = list(zip(steps, states, strict=True))
    seeds = [segment_seed(9_900 + seed, j) for j in range(len(ckpts) - 1)]
    path = write_record(folder, header, ckpts, np.stack(rows_all[::-1]), seeds)
    return Forgery(path, "reverse-noise", {"steps": n_steps})


def forge_task(name: str, folder, final, honest: Path, seed: int) -> Forgery:
    """Forge a task record with attack `name` (TASK_ATTACKS) from the honest record `honest`."""
    fns = {
        "interp": interp,
        "blindfolded": blindfolded,
        "data-spoof": data_spoof,
        "penalty": penalty,
        "reverse-noise": reverse_noise,
    }
    if name in ("tamper", "tamper-resealed"):
        return tamper(folder, Path(honest), seed, reseal=name == "tamper-resealed")
    if name not in fns:
        raise ValueError(f"unknown task attack {name!r}; choose from {', '.join(TASK_ATTACKS)}")
    return fns[name](folder, final, Path(honest), seed)
