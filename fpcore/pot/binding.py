"""Binding: does a record end at the model in dispute?

A valid record proves that *some* training run happened; it is a proof of ownership for a model M only
when its final checkpoint **is** M. `check_binding` compares M's tensors, by `state_dict` name, with the
record's final checkpoint, bit for bit (dtype, shape and every byte), and names the first tensor that is
missing, extra or different. The names M must hold are those of the record's model as its task builds it:
every parameter and every persistent buffer; of tied parameters (one tensor under several names) M needs
at least one name, as `save_pretrained` and `safetensors.torch.save_model` keep one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from fpcore.io import AtomicOutput, Checkpoint, write_safetensors

from .record import Record
from .result import CheckResult
from .tasks import model_of_record

MAX_LISTED = 20  # problems kept in the figures (the count is always whole)


@dataclass(frozen=True)
class ModelSource:
    """The model in dispute: a safetensors file or model folder (read lazily), or tensors in memory."""

    label: str
    names: tuple[str, ...]  # in the file's (or mapping's) order
    get: Callable[[str], torch.Tensor]


def open_model(model: str | Path | Mapping[str, torch.Tensor]) -> ModelSource:
    """A ModelSource for a path (CheckpointError naming it when it is not a readable model) or a mapping
    of name -> tensor (a state_dict)."""
    if isinstance(model, Mapping):
        bad = [n for n, t in model.items() if not isinstance(t, torch.Tensor)]
        if bad:
            raise TypeError(f"pot verify: model[{bad[0]!r}] is {type(model[bad[0]]).__name__}, expected a tensor")
        return ModelSource("<state_dict>", tuple(model), lambda n: model[n].detach().cpu())
    ck = Checkpoint(model)
    return ModelSource(str(ck.path), tuple(ck.names()), ck.get)


def expected_names(rec: Record) -> list[tuple[str, str, list[str]]]:
    """(checkpoint key, canonical name, every state_dict name of that tensor) in state_dict order, for the
    record's model as built by its task: parameters as `param.<n>`, persistent buffers as `buffer.<n>`,
    where <n> is the first name (the one named_parameters / named_buffers give and the Recorder stores)."""
    model = model_of_record(rec.doc)
    canon: dict[int, tuple[str, str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        canon.setdefault(id(p), (f"param.{n}", n))
    for n, b in model.named_buffers(remove_duplicate=False):
        canon.setdefault(id(b), (f"buffer.{n}", n))
    groups: dict[str, tuple[str, list[str]]] = {}
    for n, t in model.state_dict(keep_vars=True).items():
        key, first = canon[id(t)]
        groups.setdefault(key, (first, []))[1].append(n)
    return [(key, first, names) for key, (first, names) in groups.items()]


def _describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}"


def first_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """(number of elements whose bits differ, flat index of the first one or -1) of two tensors of one
    dtype and shape. Bits, not values: -0.0 differs from 0.0 and a NaN equals only the same NaN."""
    if a.numel() == 0:
        return 0, -1
    size = a.element_size()
    ua = a.detach().contiguous().reshape(-1).view(torch.uint8)
    ub = b.detach().contiguous().reshape(-1).view(torch.uint8)
    if torch.equal(ua, ub):  # the common case, without a mask as large as the tensor
        return 0, -1
    ne = (ua != ub).view(-1, size).any(dim=1)
    return int(ne.sum()), int(ne.to(torch.uint8).argmax())  # argmax: the first of the maxima


def check_binding(rec: Record, model: ModelSource) -> CheckResult:
    """The `binding` CheckResult: passes when every tensor the record's model has equals M's, bit for bit,
    and M holds nothing else. The reason names the first problem in state_dict order."""
    t0 = time.perf_counter()
    last = len(rec.entries) - 1
    step = rec.steps[last]
    final = rec.checkpoint(last)
    where = f"the record's final checkpoint (step {step})"
    problems: list[str] = []
    held_names = set(model.names)
    known: set[str] = set()
    compared = elements = 0
    for key, first, names in expected_names(rec):
        known.update(names)
        held = [n for n in names if n in held_names]
        if key not in final:
            problems.append(f"{where} lacks tensor {first!r} (a damaged or foreign record)")
            continue
        ref = final[key]
        if not held:
            also = f" (or its tied names {', '.join(repr(n) for n in names[1:])})" if len(names) > 1 else ""
            problems.append(f"the model lacks tensor {first!r}{also}, {_describe(ref)} in {where}")
            continue
        for n in held:
            t = model.get(n)
            if t.dtype != ref.dtype or tuple(t.shape) != tuple(ref.shape):
                problems.append(f"tensor {n!r} is {_describe(t)} in the model, {_describe(ref)} in {where}")
                continue
            count, flat = first_difference(t, ref)
            compared += 1
            elements += t.numel()
            if count:
                idx = [int(i) for i in torch.unravel_index(torch.tensor(flat), t.shape)] if t.dim() else []
                problems.append(
                    f"tensor {n!r} differs from {where} in {count} of {t.numel()} elements, first at index "
                    f"{idx}: {t.reshape(-1)[flat].item()!r} in the model, {ref.reshape(-1)[flat].item()!r} "
                    "in the record"
                )
    extra = [n for n in model.names if n not in known]
    problems += [f"the model has tensor {n!r}, which the record's model does not" for n in extra]
    figures = {
        "model": model.label,
        "final_step": step,
        "final_sha256": rec.entries[last]["sha256"],
        "tensors_compared": compared,
        "elements_compared": elements,
        "problems": len(problems),
        "problem_list": problems[:MAX_LISTED],
    }
    if problems:
        more = f" ({len(problems)} problems in all)" if len(problems) > 1 else ""
        reason = f"the record does not end at {model.label}: {problems[0]}{more}"
    else:
        reason = f"{where} equals {model.label} bit for bit ({compared} tensors, {elements:,} elements)"
    return CheckResult("binding", not problems, reason, figures, time.perf_counter() - t0)


def save_model(model: torch.nn.Module, path: str | Path, *, overwrite: bool = False) -> Path:
    """The model's state_dict as one safetensors file (atomically); tied tensors are stored once."""
    seen: set[tuple] = set()
    tensors = {}
    for n, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key not in seen:
            seen.add(key)
            tensors[n] = t.detach().cpu().contiguous()
    path = Path(path)
    with AtomicOutput(path, overwrite=overwrite, is_file=True) as tmp:
        write_safetensors(tmp, tensors)
    return path


NOT_CHECKED = (
    "no model was checked: this verdict says whether the record is valid, not which model it is for "
    "(pass --model M to bind it to the model in dispute)"
)
