"""The language-model side of FP-VEC: load a Hugging Face causal LM folder, turn prompt/answer pairs
into batches, generate (greedy or sampled, batched with a KV cache), and measure perplexity.

transformers is imported here only (the optional extra ``fpcore[llm]``); nothing here downloads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


class ModelFolderError(ValueError):
    """A model folder that cannot serve as a causal LM here (no config, no tokenizer, ...)."""


class KeyTooLongError(ValueError):
    """A prompt (a fingerprint key with its answer) that does not fit the model's context."""


@dataclass
class LM:
    """A causal LM and its tokenizer, with the ids fpcore needs."""

    model: Any
    tokenizer: Any
    path: Path | None = None

    @property
    def bos(self) -> int:
        return _first_id(self.tokenizer, "bos_token_id", "eos_token_id")

    @property
    def eos(self) -> int:
        return _first_id(self.tokenizer, "eos_token_id", "bos_token_id")

    @property
    def pad(self) -> int:
        return _first_id(self.tokenizer, "pad_token_id", "eos_token_id")

    @property
    def context(self) -> int:
        return int(self.model.config.max_position_embeddings)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def _first_id(tok: Any, *attrs: str) -> int:
    for a in attrs:
        v = getattr(tok, a, None)
        if v is not None:
            return int(v)
    raise ModelFolderError(f"tokenizer has none of {', '.join(attrs)}; set them in tokenizer_config.json")


def quiet_transformers() -> None:
    """No transformers warnings or progress bars on the demo's output (fpcore prints its own)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_lm(folder: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LM:
    """Load a Hugging Face causal LM folder (config.json, safetensors weights, tokenizer files).

    Raises:
        FileNotFoundError if the folder does not exist; ModelFolderError (a ValueError) naming the
        folder when it has no config.json or no tokenizer.
    """
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model folder")
    if not (path / "config.json").is_file():
        raise ModelFolderError(f"{path}: no config.json (expected a Hugging Face model folder)")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelFolderError(
            f"{path}: no tokenizer in the model folder (expected one of {', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer beside the weights (tokenizer.save_pretrained)"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    tok = AutoTokenizer.from_pretrained(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    except (RuntimeError, OSError) as exc:  # weights that do not fit config.json, unreadable files
        raise ModelFolderError(f"{path}: cannot load the model ({str(exc).splitlines()[0]})") from exc
    model.eval()
    return LM(model, tok, path)


def save_lm(lm: LM, folder: str | Path) -> None:
    """model.save_pretrained (safetensors) and the tokenizer into `folder` (which must exist)."""
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)


def check_fits(lm: LM, prompt: Sequence[int], answer_len: int, what: str) -> None:
    """Raise KeyTooLongError unless BOS + prompt + answer + EOS fits the model's context."""
    need = 1 + len(prompt) + answer_len + 1
    if need > lm.context:
        raise KeyTooLongError(
            f"{what}: {len(prompt)} prompt tokens + {answer_len} answer tokens + BOS/EOS = {need} tokens, "
            f"longer than the model's context of {lm.context} (max_position_embeddings)"
        )


def answer_batch(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]], bos: int, eos: int, pad: int
) -> dict[str, torch.Tensor]:
    """[BOS] prompt answer [EOS], right-padded; labels only on the answer and EOS (-100 elsewhere)."""
    rows = [([bos, *p, *a, eos], [-100] * (1 + len(p)) + [*a, eos]) for p, a in pairs]
    n = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def next_token_logits(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass over answer_batch's dict: fp32 logits [B, T-1, V] and the labels they predict
    [B, T-1] (-100 where unlabelled), on the model's device."""
    dev = next(model.parameters()).device
    out = model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev))
    return out.logits[:, :-1].float(), batch["labels"][:, 1:].to(dev)


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled positions (labels -100 are ignored)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def lm_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the labelled tokens (labels -100 are ignored)."""
    return token_cross_entropy(*next_token_logits(model, batch))


def kl_to_reference(
    model: Any, reference: Any, windows: torch.Tensor, *, batch: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """Mean KL(p_reference || p_model) over next-token predictions: on token windows [B, T] (no
    padding), or with `batch` (answer_batch's dict) only where a label is set (the answers)."""
    dev = next(model.parameters()).device
    ids = (batch["input_ids"] if batch is not None else windows).to(dev)
    kw = {"attention_mask": batch["attention_mask"].to(dev)} if batch is not None else {}
    with torch.no_grad():
        ref = F.log_softmax(reference(input_ids=ids, **kw).logits[:, :-1].float(), dim=-1)
    cur = F.log_softmax(model(input_ids=ids, **kw).logits[:, :-1].float(), dim=-1)
    kl = F.kl_div(cur, ref, log_target=True, reduction="none").sum(-1)
    if batch is None:
        return kl.mean()
    where = batch["labels"][:, 1:].to(dev) != -100
    return kl[where].mean()


@torch.no_grad()
def generate(
    lm: LM,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    batch_size: int = 64,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Continue each prompt (BOS is prepended) by up to max_new_tokens; greedy when temperature is
    0, else sampled at that temperature. Batched with left padding and a KV cache; stops a row at
    EOS. Returns the new tokens of each prompt (without EOS)."""
    from transformers import DynamicCache

    model, dev = lm.model, lm.device
    was_training = model.training
    model.eval()
    out: list[list[int]] = []
    for s in range(0, len(prompts), batch_size):
        chunk = [[lm.bos, *p] for p in prompts[s : s + batch_size]]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), lm.pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, p in enumerate(chunk):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        done = torch.zeros(len(chunk), dtype=torch.bool, device=dev)
        new = torch.empty((len(chunk), 0), dtype=torch.long, device=dev)
        step_ids, step_pos = ids, pos
        for _ in range(max_new_tokens):
            logits = (
                model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=step_pos,
                    past_key_values=cache,
                    use_cache=True,
                )
                .logits[:, -1]
                .float()
            )
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, lm.eos), nxt)
            new = torch.cat([new, nxt[:, None]], dim=1)
            done |= nxt == lm.eos
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(nxt)[:, None]], dim=1)
            step_pos = step_pos[:, -1:] + 1
            step_ids = nxt[:, None]
        for row in new.tolist():
            out.append(row[: row.index(lm.eos)] if lm.eos in row else row)
    model.train(was_training)
    return out


@torch.no_grad()
def perplexity(model: Any, windows: torch.Tensor, *, batch_size: int = 32) -> float:
    """exp(mean next-token cross-entropy) over token windows [N, T] (every position after the first)."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    for s in range(0, windows.shape[0], batch_size):
        w = windows[s : s + batch_size].to(dev)
        logits = model(input_ids=w).logits[:, :-1].float()
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum"))
        count += w[:, 1:].numel()
    model.train(was_training)
    return math.exp(total / max(count, 1))


def windows_of(
    docs: Sequence[Sequence[int]], length: int, bos: int, eos: int, *, stride: int | None = None
) -> torch.Tensor:
    """Documents wrapped in BOS/EOS, concatenated, cut into windows [N, length] (the tail is dropped)."""
    flat: list[int] = []
    for d in docs:
        flat += [bos, *d, eos]
    stride = stride or length
    starts = range(0, max(len(flat) - length + 1, 0), stride)
    if not starts:
        raise ValueError(f"windows_of: {len(flat)} tokens are fewer than one window of {length}")
    return torch.tensor([flat[s : s + length] for s in starts], dtype=torch.long)
