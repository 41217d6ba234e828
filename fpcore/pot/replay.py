"""Segment replay: a record's model, optimiser and batches rebuilt once, segments re-trained from
their checkpoints (used by the serial verifier, fpcore.pot.verify, and by its Dask workers,
fpcore.pot.parallel; neither imports the other's verdict code through here)."""

from __future__ import annotations

import torch

from .record import STEP_DIGEST, ParamsDigest, Record, load_state
from .task import Dataset, build_model, build_optimizer, train_step
from .tasks import task_of_record

__all__ = ["Replayer"]


class Replayer:
    """Replays segments of one record: the model, optimiser and batches are built once and reused."""

    def __init__(self, rec: Record, data: Dataset, dtype: torch.dtype = torch.float32) -> None:
        doc = rec.doc
        self.rec, self.data = rec, data
        self.task = task_of_record(doc)  # TaskError when this fpcore's code for it differs from the record's
        if self.task is not None:
            self.model = self.task.build_model(None).to(dtype)
            self.opt = self.task.build_optimizer(self.model)
        else:
            self.model = build_model(doc["model"]).to(dtype)
            self.opt = build_optimizer(doc["optimizer"], self.model.parameters())
        self.batches = torch.from_numpy(rec.batches().copy())
        self.aug = float(doc["augment"].get("std", 0.0))
        self.seeds = [int(s) for s in doc["segment_seeds"]]
        self.gen = torch.Generator()
        self.names = [k.removeprefix("param.") for k in sorted(rec.checkpoint(0)) if k.startswith("param.")]
        self.digests = rec.step_digests() if dtype == torch.float32 else None  # the record's dtype: float32
        self._digest = ParamsDigest(self.model)  # its plan is made once and follows any change itself
        self.first_mismatch: dict[int, int | None] = {}  # segment -> first step whose digest differs (None: all equal)

    def __call__(self, j: int) -> list[torch.Tensor]:
        """Replay segment j (checkpoint j to j+1) on its recorded batches and augmentation seed; the
        parameters reached as one flat float32 vector (sorted by name, as _params), in a list."""
        self.opt.state.clear()
        load_state(self.model, self.opt, self.rec.checkpoint(j))
        self.gen.manual_seed(self.seeds[j])
        steps = self.rec.steps
        first = None
        w = STEP_DIGEST["bytes_per_step"]
        for s in range(steps[j], steps[j + 1]):
            if self.task is not None:
                self.task.train_step(self.model, self.opt, self.data, self.batches[s], s, self.gen)
            else:
                train_step(self.model, self.opt, self.data, self.batches[s], aug_std=self.aug, generator=self.gen)
            if self.digests is not None and first is None:
                if self._digest() != self.digests[s * w : (s + 1) * w]:
                    first = s
        if self.digests is not None:
            self.first_mismatch[j] = first
        named = dict(self.model.named_parameters())
        return [torch.cat([named[n].detach().float().flatten() for n in self.names])]
