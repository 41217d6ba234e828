"""What a record's training means: registered model builders, the initialiser, datasets, the optimiser
and one training step. The Recorder's caller, replay and the attacks all train through `train_step`, so
a recorded step and its replay run the same code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# ---------------------------------------------------------------------------------------------- models

BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_builder(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: make a model builder nameable in a record (`model.builder`)."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        BUILDERS[name] = fn
        return fn

    return deco


@register_builder("mlp")
def mlp(in_features: int, hidden: int, out_features: int) -> nn.Module:
    """in_features -> hidden -> ReLU -> out_features."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))


INITIALISERS = ("torch_default",)


def build_model(spec: dict, init: dict | None = None) -> nn.Module:
    """The model a record's `model` entry names; with `init`, its initial weights drawn from init['seed']
    (torch's default Linear initialiser, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias)."""
    name = spec.get("builder")
    if name not in BUILDERS:
        raise ValueError(f"model builder {name!r} is not registered (known: {', '.join(sorted(BUILDERS))})")
    args = spec.get("args", {})
    if init is None:
        return BUILDERS[name](**args)
    if init.get("scheme") not in INITIALISERS:
        raise ValueError(f"initialiser {init.get('scheme')!r} unknown (known: {', '.join(INITIALISERS)})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(init["seed"]))
        return BUILDERS[name](**args)


def init_bounds(model: nn.Module) -> dict[str, float]:
    """Per parameter: b of the declared initialiser's U(-b, b) (torch default: 1/sqrt(fan_in))."""
    out: dict[str, float] = {}
    for mname, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            b = 1.0 / float(mod.in_features) ** 0.5
            out[f"{mname}.weight"] = b
            if mod.bias is not None:
                out[f"{mname}.bias"] = b
    return out


# ---------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Dataset:
    """Training inputs X (float32, [n, d]) and labels y (int64, [n]); `source` names how to load it."""

    X: torch.Tensor
    y: torch.Tensor
    source: dict

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def sha256(self) -> str:
        return dataset_sha256(self.X, self.y)


def dataset_sha256(X: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 over the data as used: X (float32, C order) then y (int64)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(X.detach().cpu().numpy(), dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(y.detach().cpu().numpy(), dtype=np.int64).tobytes())
    return h.hexdigest()


def load_digits_split(split_seed: int = 0, train_fraction: float = 0.75) -> tuple[Dataset, Dataset]:
    """scikit-learn's bundled digits (1,797 8x8 images, pixel/16), split by a seeded permutation."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.from_numpy(np.random.default_rng(split_seed).permutation(len(y)))
    n_train = int(round(train_fraction * len(y)))
    src = {"name": "sklearn.load_digits", "split_seed": split_seed, "train_fraction": train_fraction}
    tr, te = perm[:n_train], perm[n_train:]
    return Dataset(X[tr], y[tr], {**src, "split": "train"}), Dataset(X[te], y[te], {**src, "split": "test"})


def load_dataset(source: dict) -> Dataset:
    """The dataset a record's `dataset.source` names (only scikit-learn's digits is registered)."""
    if source.get("name") != "sklearn.load_digits":
        raise ValueError(f"dataset source {source.get('name')!r} unknown; pass the data explicitly")
    train, test = load_digits_split(int(source.get("split_seed", 0)), float(source.get("train_fraction", 0.75)))
    return test if source.get("split") == "test" else train


# ---------------------------------------------------------------------------------------------- training

OPTIMIZERS = ("sgd",)
SCHEDULES = ("constant",)


def build_optimizer(spec: dict, params) -> torch.optim.Optimizer:
    """SGD from a record's `optimizer` entry {name, lr, momentum, weight_decay}."""
    if spec.get("name") not in OPTIMIZERS:
        raise ValueError(f"optimizer {spec.get('name')!r} unknown (known: {', '.join(OPTIMIZERS)})")
    return torch.optim.SGD(
        params,
        lr=float(spec["lr"]),
        momentum=float(spec.get("momentum", 0.0)),
        weight_decay=float(spec.get("weight_decay", 0.0)),
    )


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: Dataset,
    idx: torch.Tensor,
    *,
    aug_std: float = 0.0,
    generator: torch.Generator | None = None,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
) -> float:
    """One SGD step on data[idx]: inputs plus N(0, aug_std^2) noise drawn from `generator`, cross-entropy.

    `extra_loss` exists for the attack suite (a penalty the record does not declare); honest training and
    replay never pass it.
    """
    p = next(model.parameters())
    xb = data.X[idx].to(p.dtype)
    if aug_std:
        xb = xb + aug_std * torch.randn(xb.shape, generator=generator, dtype=torch.float32).to(p.dtype)
    loss = F.cross_entropy(model(xb), data.y[idx])
    if extra_loss is not None:
        loss = loss + extra_loss(model)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """One epoch's batches: a shuffled permutation cut into full batches (the ragged tail dropped)."""
    perm = rng.permutation(n)
    m = n // batch_size
    return perm[: m * batch_size].reshape(m, batch_size)


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset) -> float:
    p = next(model.parameters())
    return float((model(data.X.to(p.dtype)).argmax(1) == data.y).float().mean())
