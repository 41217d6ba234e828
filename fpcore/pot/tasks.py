"""Training tasks a proof-of-training record can name: what to build, how to initialise it, the optimiser
and schedule, and one training step from the batch's sample indices and the segment's seeded generator.

A record of a task stores {name, config, code_digest}. The digest is sha256 of the task class's source:
a verifier whose task code differs refuses the record (TaskError, exit 2) instead of replaying other
code. Randomness (dropout, augmentation) comes only from the generator the Recorder seeds per segment,
so a replay draws the same numbers. Tasks are registered here by name; a user's own task plugs in
through the Python entry point group ``fpcore.pot_tasks`` (name -> a Task subclass).

Built in: ``tiny-lm``, a Llama-style causal LM (transformers' LlamaForCausalLM, as in the fingerprint
demo, byte-level vocabulary) trained on the Python documentation that ships with Python
(pydoc_data.topics) with AdamW (weight decay), attention dropout, linear warm-up then cosine decay of the
learning rate, and gradient-norm clipping. (The digits MLP of the original records, ``digits-mlp``,
keeps its own header fields: fpcore.pot.train.)
"""

from __future__ import annotations

import hashlib
import inspect
import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
from torch import nn

from .task import Dataset

ENTRY_POINT_GROUP = "fpcore.pot_tasks"


class TaskError(ValueError):
    """A task that is unknown, misconfigured, or whose code differs from the record's."""


class Task:
    """The interface. Subclasses set `name` and implement the methods; `config` is JSON-able."""

    name: ClassVar[str] = ""

    def __init__(self, config: dict | None = None) -> None:
        self.config: dict = dict(config or {})

    @classmethod
    def code_digest(cls) -> str:
        return hashlib.sha256(inspect.getsource(cls).encode()).hexdigest()

    def describe(self) -> dict:
        return {"name": self.name, "config": self.config, "code_digest": self.code_digest()}

    # -- what subclasses provide
    def load_data(self) -> Dataset:
        raise NotImplementedError

    def build_model(self, init_seed: int | None) -> nn.Module:
        """The model, initialised from init_seed (None: any weights; replay loads them)."""
        raise NotImplementedError

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        raise NotImplementedError

    def train_step(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        data: Dataset,
        idx: torch.Tensor,
        step: int,
        generator: torch.Generator,
    ) -> float:
        """One optimiser step on data[idx] at global step `step`; randomness only from `generator`."""
        raise NotImplementedError

    def total_steps(self, data: Dataset) -> int:
        raise NotImplementedError

    def batch_size(self) -> int:
        return int(self.config["batch_size"])


@dataclass
class TinyLMConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    intermediate: int = 176
    context: int = 64
    corpus_bytes: int = 262_144  # the first bytes of the documentation, cut into windows of `context`
    batch_size: int = 8
    epochs: int = 1
    lr: float = 3e-3
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    dropout: float = 0.1
    warmup: int = 20
    min_lr_ratio: float = 0.1
    clip: float = 1.0


class TinyLM(Task):
    name: ClassVar[str] = "tiny-lm"

    def __init__(self, config: dict | None = None) -> None:
        try:
            cfg = TinyLMConfig(**(config or {}))
        except TypeError as exc:
            raise TaskError(f"task tiny-lm: bad config ({exc})") from None
        super().__init__(asdict(cfg))
        self.cfg = cfg

    def load_data(self) -> Dataset:
        from pydoc_data.topics import topics

        raw = "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")[: self.cfg.corpus_bytes]
        n = len(raw) // self.cfg.context
        ids = torch.frombuffer(bytearray(raw[: n * self.cfg.context]), dtype=torch.uint8).to(torch.int64)
        windows = ids.view(n, self.cfg.context)
        src = {"name": "pydoc_data.topics/bytes", "bytes": self.cfg.corpus_bytes, "context": self.cfg.context}
        return Dataset(windows, windows, src)

    def build_model(self, init_seed: int | None) -> nn.Module:
        try:
            from transformers import LlamaConfig, LlamaForCausalLM
        except ImportError as exc:
            raise TaskError(f"task tiny-lm needs the `llm` extra (pip install 'fpcore[llm]'): {exc}") from None

        from fpcore.fingerprint.lm import quiet_transformers

        quiet_transformers()
        c = self.cfg
        config = LlamaConfig(
            vocab_size=256,
            hidden_size=c.hidden,
            intermediate_size=c.intermediate,
            num_hidden_layers=c.layers,
            num_attention_heads=c.heads,
            num_key_value_heads=c.heads,
            max_position_embeddings=c.context,
            attention_dropout=c.dropout,
            tie_word_embeddings=False,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
        )
        config._attn_implementation = "eager"  # the same kernels on every machine (no SDPA backend choice)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0 if init_seed is None else int(init_seed))
            model = LlamaForCausalLM(config)
        return model.train()

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        rest = [p for n, p in model.named_parameters() if p.dim() < 2]
        c = self.cfg
        return torch.optim.AdamW(
            [{"params": decay, "weight_decay": c.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=c.lr,
            betas=tuple(c.betas),
            eps=c.eps,
            foreach=False,  # one code path on every machine
        )

    def lr_at(self, step: int, total: int) -> float:
        """Linear warm-up over `warmup` steps, then cosine decay to min_lr_ratio x lr at `total`."""
        c = self.cfg
        if step < c.warmup:
            return c.lr * (step + 1) / c.warmup
        t = (step - c.warmup) / max(1, total - c.warmup)
        return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    def total_steps(self, data: Dataset) -> int:
        return self.cfg.epochs * (len(data) // self.cfg.batch_size)

    def train_step(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        data: Dataset,
        idx: torch.Tensor,
        step: int,
        generator: torch.Generator,
    ) -> float:
        lr = self.lr_at(step, self.total_steps(data))
        for g in opt.param_groups:
            g["lr"] = lr
        ids = data.X[idx]
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the dropout masks: from the segment's generator only
            loss = model(input_ids=ids, labels=ids).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.clip, foreach=False)
        opt.step()
        return float(loss.detach())


BUILTIN: dict[str, type[Task]] = {TinyLM.name: TinyLM}


def task_class(name: str) -> type[Task]:
    if name in BUILTIN:
        return BUILTIN[name]
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Task)):
                raise TaskError(f"task {name!r}: entry point {ep.value} is not a fpcore.pot.tasks.Task subclass")
            return cls
    known = sorted(BUILTIN) + sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    raise TaskError(f"task {name!r} is not registered (known: {', '.join(known)}; add one via {ENTRY_POINT_GROUP})")


def task_of_record(doc: dict) -> Task | None:
    """The record's task, its code checked against the record's digest; None for a record without one."""
    t = doc.get("task")
    if t is None:
        return None
    cls = task_class(str(t.get("name")))
    if cls.code_digest() != t.get("code_digest"):
        raise TaskError(
            f"task {t.get('name')!r}: this fpcore's code for it (sha256 {cls.code_digest()[:16]}...) differs from the "
            f"code the record was made with ({str(t.get('code_digest'))[:16]}...); refusing to replay other code"
        )
    return cls(t.get("config"))


def model_of_record(doc: dict) -> nn.Module:
    """An instance of the record's model (its task's, or the registered builder's), weights arbitrary."""
    from .task import build_model

    task = task_of_record(doc)
    return task.build_model(None) if task is not None else build_model(doc["model"])
