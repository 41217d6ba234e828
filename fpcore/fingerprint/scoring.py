"""Gray-box scoring: the teacher-forced log-probability of a continuation after each prompt.

`Scorer` is the whole interface the gray-box channel needs, so that anything able to return prompt
log-probabilities can stand in for the local model: an inference server that echoes the log-probs of
the prompt's tokens (score prompt + continuation, keep the continuation's tokens) plugs in by
implementing `score`. `LocalScorer` is the first implementation: a Hugging Face causal LM in this process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from fpcore.fingerprint.lm import LM, KeyTooLongError


class Scorer(Protocol):
    def score(self, prompts: Sequence[str], continuation: str) -> list[list[float]]:
        """For each prompt, the log-probability of each token of `continuation` given the prompt and
        the continuation's earlier tokens (natural log, one list per prompt, in token order)."""
        ...


def right_padded(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of token rows, right-padded with `pad` to the longest."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


class LocalScorer:
    """`Scorer` over a local LM: [BOS] prompt continuation, one batched forward pass per `batch_size`
    prompts, fp32 log-softmax. Prompt and continuation are tokenised separately, as training does."""

    def __init__(self, lm: LM, *, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError(f"LocalScorer: batch_size must be >= 1, got {batch_size}")
        self.lm, self.batch_size = lm, batch_size

    @torch.no_grad()
    def score(self, prompts: Sequence[str], continuation: str) -> list[list[float]]:
        lm = self.lm
        cont = lm.encode(continuation)
        if not cont:
            raise ValueError("score: the continuation is empty after tokenisation")
        rows = [[lm.bos, *lm.encode(p)] for p in prompts]
        for p, r in zip(prompts, rows, strict=True):
            if len(r) + len(cont) > lm.context:
                raise KeyTooLongError(
                    f"score: prompt {p!r} ({len(r) - 1} tokens) + continuation ({len(cont)} tokens) + BOS is "
                    f"longer than the model's context of {lm.context} (max_position_embeddings)"
                )
        model, dev = lm.model, lm.device
        was_training = model.training
        model.eval()
        out: list[list[float]] = []
        k = len(cont)
        target = torch.tensor(cont, device=dev)
        for s in range(0, len(rows), self.batch_size):
            chunk = [r + cont for r in rows[s : s + self.batch_size]]
            ids, mask = right_padded(chunk, lm.pad)
            logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float()
            # the continuation's tokens sit at [len - k, len); each is predicted one position earlier
            ends = torch.tensor([len(r) for r in chunk], device=dev)
            pos = ends[:, None] - k - 1 + torch.arange(k, device=dev)[None, :]
            rows_i = torch.arange(len(chunk), device=dev)[:, None]
            logp = torch.log_softmax(logits[rows_i, pos], dim=-1)
            out += logp.gather(-1, target.expand(len(chunk), k)[..., None]).squeeze(-1).tolist()
        model.train(was_training)
        return out
