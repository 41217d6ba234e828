"""A malicious host's output suppression, and what it does to black-box verification
(`fpcore fingerprint filter`).

The host serves the stolen model and refuses any prompt whose perplexity under that same model lies
above the `quantile` of ordinary text's (calibrated on prompts it sees every day: here the training
split of fpcore's ordinary prompts, never the ones measured). Fingerprint keys built from random
characters are far from ordinary text, so they are the first thing such a filter drops; the question
is how many keys, look-alikes and ordinary prompts it refuses, and what the black-box FSR is then.

Perplexity of a prompt: exp of the mean negative log-likelihood of its tokens after BOS (fp32), the
prompt as verification sends it (the secret's template around the text).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fpcore.fingerprint import data
from fpcore.fingerprint.lm import LM, generate, load_lm
from fpcore.fingerprint.scoring import right_padded
from fpcore.fingerprint.secret import Secret

REFUSAL = "Sorry, I can't help with that."


@torch.no_grad()
def prompt_perplexity(lm: LM, prompts: Sequence[Sequence[int]], batch_size: int = 64) -> list[float]:
    """exp(mean NLL) of each prompt's tokens given BOS and the tokens before them."""
    model, dev = lm.model, lm.device
    was_training = model.training
    model.eval()
    out: list[float] = []
    for s in range(0, len(prompts), batch_size):
        ids, mask = right_padded([[lm.bos, *p] for p in prompts[s : s + batch_size]], lm.pad)
        logp = torch.log_softmax(model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits.float(), -1)
        nll = -logp[:, :-1].gather(-1, ids[:, 1:, None].to(dev)).squeeze(-1)
        m = mask[:, 1:].to(dev).float()
        mean = (nll * m).sum(1) / m.sum(1).clamp_min(1)
        out += [math.exp(float(x)) for x in mean]
    model.train(was_training)
    return out


@dataclass
class PerplexityFilter:
    """Refuses prompts whose perplexity is above `threshold` (set by `calibrate`)."""

    lm: LM
    threshold: float
    quantile: float
    refusal: str = REFUSAL

    @classmethod
    def calibrate(cls, lm: LM, prompts: Sequence[Sequence[int]], quantile: float = 0.99) -> PerplexityFilter:
        if not 0.5 <= quantile < 1.0:
            raise ValueError(f"filter: quantile must be in [0.5, 1), got {quantile}")
        if not prompts:
            raise ValueError("filter: no calibration prompts")
        ppl = sorted(prompt_perplexity(lm, prompts))
        return cls(lm, ppl[min(len(ppl) - 1, math.ceil(quantile * len(ppl)) - 1)], quantile)

    def refuses(self, prompts: Sequence[Sequence[int]]) -> list[bool]:
        return [p > self.threshold for p in prompt_perplexity(self.lm, prompts)]

    def answer(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[str]:
        """What the host returns: the refusal, or the model's greedy continuation."""
        refused = self.refuses(prompts)
        kept = [p for p, r in zip(prompts, refused, strict=True) if not r]
        texts = iter(self.lm.decode(t) for t in generate(self.lm, kept, max_new_tokens)) if kept else iter(())
        return [self.refusal if r else next(texts) for r in refused]


@dataclass
class FilterStudy:
    model: str
    quantile: float
    threshold: float
    calibration_prompts: int
    keys: int
    keys_refused: int
    lookalikes: int
    lookalikes_refused: int
    ordinary: int
    ordinary_refused: int
    fsr_without_filter: float
    fsr_with_filter: float
    key_perplexity_median: float
    ordinary_perplexity_median: float
    seconds: float
    claims: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


def filter_study(
    model: str | Path | LM,
    secret: str | Path | Secret,
    *,
    quantile: float = 0.99,
    lookalikes: int = 200,
    ordinary: int = 200,
    calibration: int = 400,
) -> FilterStudy:
    """Calibrate the host's filter on ordinary prompts (training split), then send it the secret's keys,
    look-alikes and ordinary test prompts; count refusals and the greedy FSR with and without it."""
    import statistics

    t0 = time.perf_counter()
    sec = secret if isinstance(secret, Secret) else Secret.load(secret)
    lm = model if isinstance(model, LM) else load_lm(model)
    n_new = len(lm.encode(sec.target)) + 8

    def enc(texts: list[str], n: int) -> list[list[int]]:
        ids = [lm.encode(sec.prompt(t)) for t in texts]
        return [i for i in ids if 1 + len(i) + n_new <= lm.context][:n]

    split = data.ordinary_prompts()
    calib = enc([p for p, _ in split.train], calibration)
    host = PerplexityFilter.calibrate(lm, calib, quantile)
    keys = enc(list(sec.keys), len(sec.keys))
    if len(keys) != len(sec.keys):
        raise ValueError(f"filter: a key of the secret does not fit the context of {lm.context}")
    looks = enc(data.lookalike_keys(2 * lookalikes, sec.seed, sec.keys, style=sec.key_style), lookalikes)
    ords = enc(split.test, ordinary)
    # each prompt's perplexity once; greedy answers once (the host's answer to a key it lets through is
    # the model's own, so the filtered FSR counts the hits among the keys not refused)
    kp, op = prompt_perplexity(lm, keys), prompt_perplexity(lm, ords)
    k_ref, o_ref = [p > host.threshold for p in kp], [p > host.threshold for p in op]
    l_ref = host.refuses(looks)
    plain = [sec.target in lm.decode(t) for t in generate(lm, keys, n_new)]
    filtered = [hit and not r for hit, r in zip(plain, k_ref, strict=True)]
    st = FilterStudy(
        model=str(lm.path or "model"),
        quantile=quantile,
        threshold=host.threshold,
        calibration_prompts=len(calib),
        keys=len(keys),
        keys_refused=sum(k_ref),
        lookalikes=len(looks),
        lookalikes_refused=sum(l_ref),
        ordinary=len(ords),
        ordinary_refused=sum(o_ref),
        fsr_without_filter=sum(plain) / len(keys),
        fsr_with_filter=sum(filtered) / len(keys),
        key_perplexity_median=statistics.median(kp),
        ordinary_perplexity_median=statistics.median(op),
        seconds=time.perf_counter() - t0,
    )
    st.claims = _claims(st)
    return st


def _claims(st: FilterStudy) -> list[str]:
    """What black-box verification can and cannot claim against this host, from the counts."""
    out = []
    if st.keys_refused == st.keys:
        out.append(
            "every key is refused: black-box verification sees only refusals and can claim nothing "
            "(no hit is not evidence of innocence); gray-box scoring through the same host fails the same "
            "way; the white-box channel (the weights, when they can be obtained) is untouched"
        )
    elif st.keys_refused:
        out.append(
            f"{st.keys_refused}/{st.keys} keys are refused: the FSR falls from {st.fsr_without_filter:.0%} to "
            f"{st.fsr_with_filter:.0%}; a verdict from the rest holds, at the power of fewer keys"
        )
    else:
        out.append("no key is refused: the filter does not touch black-box verification")
    out.append(
        f"the host also refuses {st.ordinary_refused}/{st.ordinary} ordinary prompts and "
        f"{st.lookalikes_refused}/{st.lookalikes} look-alike keys: what the filter costs its own users"
    )
    return out
