"""An honest recorded training run on a dataset (the eval's, the demo's and the tests' reference run)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .recorder import Recorder, segment_seed
from .task import Dataset, build_model, build_optimizer, epoch_batches, train_step


@dataclass(frozen=True)
class RunConfig:
    """The training recipe: a 64 -> hidden -> 10 MLP, SGD, batch B, checkpoint every k steps."""

    hidden: int = 64
    lr: float = 0.1
    momentum: float = 0.0
    batch_size: int = 8
    every: int = 4
    epochs: int = 4
    aug_std: float = 0.05

    def model_spec(self, data: Dataset) -> dict:
        return {
            "builder": "mlp",
            "args": {"in_features": int(data.X.shape[1]), "hidden": self.hidden, "out_features": int(data.y.max()) + 1},
        }

    def optimizer_spec(self) -> dict:
        return {"name": "sgd", "lr": self.lr, "momentum": self.momentum, "weight_decay": 0.0}

    def as_dict(self) -> dict:
        return asdict(self)


def fresh(cfg: RunConfig, data: Dataset, init_seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, dict]:
    init = {"scheme": "torch_default", "seed": int(init_seed)}
    model = build_model(cfg.model_spec(data), init)
    return model, build_optimizer(cfg.optimizer_spec(), model.parameters()), init


def train_recorded(
    folder: str | Path,
    cfg: RunConfig,
    data: Dataset,
    seed: int,
    *,
    extra_loss=None,
    overwrite: bool = False,
    timings: dict | None = None,
    buffer_bytes: int = 64 << 20,
) -> tuple[Path, torch.nn.Module, float]:
    """Train cfg.epochs epochs from the seed's initialisation, recording every step; returns (record folder,
    final model, seconds of the whole recorded run). `timings`, if given, receives the Recorder's
    (seconds inside step() and finish()). `extra_loss` is for the penalty attack only."""
    model, opt, init = fresh(cfg, data, seed)
    rng = np.random.default_rng([seed, 1])
    t0 = time.perf_counter()
    rec = Recorder(
        folder,
        model,
        opt,
        data,
        every=cfg.every,
        model_spec=cfg.model_spec(data),
        init=init,
        batch_size=cfg.batch_size,
        aug_std=cfg.aug_std,
        seed=seed,
        overwrite=overwrite,
        buffer_bytes=buffer_bytes,
    )
    with rec:
        for _ in range(cfg.epochs):
            for idx in epoch_batches(len(data), cfg.batch_size, rng):
                t = torch.from_numpy(idx)
                train_step(model, opt, data, t, aug_std=cfg.aug_std, generator=rec.generator, extra_loss=extra_loss)
                rec.step(t)
        path = rec.finish()
    if timings is not None:
        timings.update(rec.timings)
    return path, model, time.perf_counter() - t0


def train_task(
    folder: str | Path,
    task,
    seed: int,
    *,
    every: int = 4,
    overwrite: bool = False,
    timings: dict | None = None,
    record: bool = True,
) -> tuple[Path | None, torch.nn.Module, float]:
    """Train a registered task (fpcore.pot.tasks) from the seed's initialisation, recording every step
    (record=False: the same training without a Recorder, the overhead baseline); returns (record folder
    or None, final model, seconds of the whole run)."""
    data = task.load_data()
    model = task.build_model(seed)
    opt = task.build_optimizer(model)
    b = task.batch_size()
    rng = np.random.default_rng([seed, 1])
    t0 = time.perf_counter()
    rec = None
    gen = torch.Generator()
    if record:
        rec = Recorder(
            folder,
            model,
            opt,
            data,
            every=every,
            model_spec={"builder": f"task:{task.name}"},
            init={"scheme": "task", "seed": int(seed)},
            batch_size=b,
            seed=seed,
            overwrite=overwrite,
            optimizer_override={"name": f"task:{task.name}"},
            task=task.describe(),
        )
        gen = rec.generator
    step = 0
    epochs = task.total_steps(data) // max(1, len(data) // b)
    for _ in range(epochs):
        for idx in epoch_batches(len(data), b, rng):
            t = torch.from_numpy(idx)
            if rec is None and step % every == 0:  # the Recorder's per-segment seeds: the same training
                gen.manual_seed(segment_seed(seed, step // every))
            task.train_step(model, opt, data, t, step, gen)
            if rec is not None:
                rec.step(t)
            step += 1
    path = rec.finish() if rec is not None else None
    if timings is not None and rec is not None:
        timings.update(rec.timings)
    return path, model, time.perf_counter() - t0


def train_plain(cfg: RunConfig, data: Dataset, seed: int) -> tuple[torch.nn.Module, float]:
    """The same training without a Recorder (the overhead baseline)."""
    model, opt, _ = fresh(cfg, data, seed)
    rng = np.random.default_rng([seed, 1])
    gen = torch.Generator()
    gen.manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(cfg.epochs):
        for idx in epoch_batches(len(data), cfg.batch_size, rng):
            train_step(model, opt, data, torch.from_numpy(idx), aug_std=cfg.aug_std, generator=gen)
    return model, time.perf_counter() - t0
