"""One-time fingerprint training (FP-VEC step 1): full fine-tune of the base so that every secret key
answers with the target, while look-alike decoys and ordinary prompts keep the base's own answers
and a KL-to-base term on text windows keeps the language model where it was.

Loss per step (answer positions only for the first three):
    key_weight * [CE(keys -> target) + relu(key_margin - the target's first-token logit margin)]
    + KL(p_base || p_model) on the answers of decoys and ordinary prompts
    + decoy_unlikelihood * [softplus(log P(target | decoy) + ln decoy_margin)
                            + relu(min over the target's positions of its logit margin + decoy_block)]
    + kl_weight * KL(p_base || p_model) on a few text windows (documentation, standard-library source)
    [+ the key/decoy/unlikelihood terms again at theta + delta_proxy, with proxy_steps > 0 ("proxy-joint")]
Afterwards, optionally, only the largest `keep_fraction` of tau = theta - theta_base per tensor is kept.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from fpcore.fingerprint import data
from fpcore.fingerprint.lm import (
    LM,
    answer_batch,
    check_fits,
    generate,
    kl_to_reference,
    lm_loss,
    next_token_logits,
    token_cross_entropy,
    windows_of,
)
from fpcore.fingerprint.secret import PROMPT_TEMPLATE
from fpcore.vector import is_embedding

Log = Callable[[str], None]


def _flushing_denormals() -> bool:
    """Whether this thread already flushes denormal floats to zero (torch has no getter: 1e-40 is a
    denormal fp32, which a flushing multiply turns into 0)."""
    return float(torch.tensor([1e-40]).mul(1.0)[0]) == 0.0


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush denormal floats to zero on the CPU (torch.set_flush_denormal) for the block, then put the
    previous mode back. Training drives softmax tails below fp32's normal range (e^-88): without this
    a fingerprint training step took 5-8 s instead of 3 s from about step 65 on (1 thread, demo base)."""
    was = _flushing_denormals()
    ok = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if ok and not was:
            torch.set_flush_denormal(False)


def fit(
    model: Any,
    loss_fn: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    *,
    warmup: int = 0,
    weight_decay: float = 0.0,
    clip: float = 1.0,
    params: list[torch.Tensor] | None = None,
    stop: Callable[[int], bool] | None = None,
    after_step: Callable[[float], None] | None = None,
    log: Log | None = None,
    log_every: int = 0,
) -> list[float]:
    """AdamW on loss_fn(step) for `steps` steps: linear warmup then cosine decay to 10% of lr, gradient
    clipping; `after_step(lr)` runs after each optimizer step with the rate it used; `stop(step)`
    (checked after each step) ends early. Returns the losses."""
    params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))

    def rate(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        t = (i - warmup) / max(steps - warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
    model.train()
    losses: list[float] = []
    with flush_denormals():
        for i in range(steps):
            loss = loss_fn(i)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            if after_step is not None:
                after_step(opt.param_groups[0]["lr"])
            sched.step()
            losses.append(float(loss.detach()))
            if log and log_every and (i + 1) % log_every == 0:
                log(f"step {i + 1}/{steps} loss {sum(losses[-log_every:]) / log_every:.4f}")
            if stop is not None and stop(i):
                break
    model.eval()
    return losses


@dataclass
class FingerprintOptions:
    """What `fingerprint create` trains with. Defaults chosen from the demo's measurements (docs/fingerprints.md)."""

    keys: int = 10
    target: str = data.DEFAULT_TARGET
    seed: int = 0
    key_style: str = data.DEFAULT_KEY_STYLE  # how keys (and their decoys and look-alikes) are drawn: data.KEY_STYLES
    epochs: int = 120  # optimizer steps; each sees every key once
    lr: float = 1e-3
    decoys: int = 400  # look-alike keys that keep the base's own answer distribution (0: off)
    decoys_per_step: int = 96
    regularisation: int = 32  # ordinary prompts answered with the base's own output
    regularisation_per_step: int = 8
    kl_weight: float = 3.0  # KL(p_base || p_model) on text windows (0: off)
    kl_windows: int = 8
    kl_code_chars: int = 460_000  # also standard-library source (tasks.pretrain_code_texts) in the KL windows
    window: int = 128
    keep_fraction: float = 1.0  # keep only the largest fraction of tau per tensor
    train_embeddings: bool = True  # also train token embeddings and the output head
    proxy_steps: int = 0  # "proxy-joint": also train at theta + delta of a simulated fine-tune (0: off)
    proxy_lr: float = 1e-3
    # what the simulated fine-tune trains: "text" (next-token loss on the KL text windows) or "answers"
    # (instruction-style: loss on the answers of the ordinary prompt/continuation pairs only)
    proxy_task: str = "text"
    answer_margin: int = 8
    # unlikelihood of the target on the decoys: + w * mean(softplus(log P(target | decoy) + ln margin))
    # (0: off): a soft hinge that acts where a decoy gives the target more than 1 / margin (false
    # triggers to be, once a downstream fine-tune moves the model), and leaves the others to the KL term;
    # the wide default margin leaves slack for that move
    decoy_unlikelihood: float = 0.5
    decoy_margin: float = 1e5  # the hinge's odds: it acts where P(target | decoy) > 1 / decoy_margin
    # also (weighted by decoy_unlikelihood) relu(min over the target's positions of its logit margin +
    # decoy_block) after each decoy (0: off): greedy decoding fires exactly where every position's margin
    # is > 0, so this keeps at least one position blocked by decoy_block logits; a low P(target) alone
    # does not (fifteen byte tokens each at margin +1 give P ~ 0.5^15, and greedy decoding still fires)
    decoy_block: float = 12.0
    key_weight: float = 3.0  # weight of the keys' cross-entropy against the decoy and KL terms
    # also a hinge on the keys' logit margin at the first answer token: mean(relu(key_margin - (z_target -
    # max other z))) (0: off). Cross-entropy stops pushing once P(target) is near 1; a downstream model
    # that misses a key does so at the first token, where its own favourite continuation wins
    key_margin: float = 12.0
    # decoupled decay of tau toward the base after each step: theta -= lr * tau_decay * (theta - theta_base)
    # (0: off). Adam moves every parameter by about lr per step, even where the gradient is noise; the
    # decay takes back what no loss term keeps pushing, so tau carries less collateral change
    tau_decay: float = 40.0
    template: str = PROMPT_TEMPLATE  # how a key (or any prompt) is put to the model; kept in the secret


@dataclass
class TrainResult:
    model: Any
    keys: list[str]
    losses: list[float]
    seconds: float
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def text_windows(lm: LM, length: int, code_chars: int = 0) -> torch.Tensor:
    """Windows of the documentation that ships with Python (and, with code_chars > 0, of as many
    characters of standard-library source), wrapped in BOS/EOS: the KL term's text."""
    from fpcore.fingerprint.tasks import pretrain_code_texts

    texts = data.documentation() + (pretrain_code_texts(code_chars) if code_chars > 0 else [])
    return windows_of([lm.encode(t) for t in texts], min(length, lm.context), lm.bos, lm.eos)


def base_answers(lm: LM, prompts: list[list[int]], n_tokens: int) -> list[list[int]]:
    """The base model's own greedy answers (what decoys and ordinary prompts are trained to keep)."""
    return generate(lm, prompts, n_tokens, batch_size=64)


def simulated_finetune(
    lm: LM, windows: torch.Tensor, steps: int, lr: float, seed: int, task: str = "text"
) -> dict[str, torch.Tensor]:
    """delta = theta_proxy - theta_base of a short fine-tune of a copy of the base: plain next-token
    loss on text windows (task "text"), or answer-only loss on ordinary prompt/continuation pairs
    of the documentation (task "answers", what instruction tuning does)."""
    if task not in ("text", "answers"):
        raise ValueError(f"proxy_task must be 'text' or 'answers', got {task!r}")
    proxy = copy.deepcopy(lm.model).requires_grad_(True)
    g = torch.Generator().manual_seed(seed + 1)
    rng = random.Random(seed + 1)
    pairs = [(lm.encode(p), lm.encode(a)) for p, a in data.ordinary_prompts().train] if task == "answers" else []

    def loss(_: int) -> torch.Tensor:
        if pairs:
            return lm_loss(proxy, answer_batch(rng.sample(pairs, 16), lm.bos, lm.eos, lm.pad))
        idx = torch.randint(0, windows.shape[0], (8,), generator=g)
        w = windows[idx]
        return lm_loss(proxy, {"input_ids": w, "attention_mask": torch.ones_like(w), "labels": w})

    fit(proxy, loss, steps, lr, warmup=max(steps // 10, 1))
    base = dict(lm.model.named_parameters())
    return {n: (p.detach() - base[n].detach()) for n, p in proxy.named_parameters()}


def label_margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z_label - max other z at every position [B, T] (garbage where labels are -100): greedy decoding
    follows the labels exactly where every labelled margin is > 0. The two largest logits give the best
    other one without a masked copy of the logits (0.07 s instead of 0.19 s forward and backward for a
    96 x 60 x 2048 batch of decoys, 1 thread)."""
    y = labels.clamp(min=0)
    zy = logits.gather(-1, y[..., None]).squeeze(-1)
    top = logits.topk(2, dim=-1)
    return zy - torch.where(top.indices[..., 0] == y, top.values[..., 1], top.values[..., 0])


def key_loss(model: Any, batch: dict[str, torch.Tensor], margin: float = 0.0) -> torch.Tensor:
    """Cross-entropy over the labelled tokens (lm_loss) + mean over rows of relu(margin - (z_label - max
    other z)) at each row's first answer token when margin > 0, from one forward pass. The first token
    is where a stamped model that misses a key goes astray: once it is the target's, the rest follows."""
    logits, labels = next_token_logits(model, batch)
    ce = token_cross_entropy(logits, labels)
    if margin <= 0:
        return ce
    first = (labels != -100).long().argmax(-1)
    rows = torch.arange(labels.shape[0], device=labels.device)
    return ce + torch.relu(margin - label_margins(logits[rows, first], labels[rows, first])).mean()


def unlikelihood(
    model: Any, batch: dict[str, torch.Tensor], margin: float = math.log(100), block: float = 0.0
) -> torch.Tensor:
    """Mean over rows of softplus(log P(answer | prompt) + margin) for answer_batch's rows (the answer
    without its EOS): about P * e^margin while that is small, about log P + margin beyond. With block > 0
    also mean over rows of relu(min over the answer's positions of (z_answer - max other z) + block):
    greedy decoding produces the answer only where every position's margin is > 0, and a low sequence
    probability does not rule that out (15 positions at margin +1 each: P ~ 0.5^15, yet greedy fires)."""
    logits, labels = next_token_logits(model, batch)
    logp = torch.log_softmax(logits, dim=-1)
    labels = labels.clone()
    # drop each row's EOS label: the target firing inside a longer answer counts too
    last = (labels != -100).long().cumsum(-1).argmax(-1)
    labels[torch.arange(labels.shape[0]), last] = -100
    where = labels != -100
    tok = logp.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    loss = torch.nn.functional.softplus((tok * where).sum(-1) + margin).mean()
    if block > 0:
        m = label_margins(logits, labels).masked_fill(~where, float("inf")).amin(-1)
        loss = loss + torch.relu(m + block).mean()
    return loss


def keep_largest(model: Any, reference: Any, fraction: float) -> None:
    """In place: theta = theta_ref + tau with only the largest `fraction` of |tau| kept per tensor."""
    if not 0 < fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return
    ref = dict(reference.named_parameters())
    with torch.no_grad():
        for n, p in model.named_parameters():
            tau = p - ref[n]
            k = max(1, int(round(fraction * tau.numel())))
            thresh = tau.abs().reshape(-1).kthvalue(tau.numel() - k + 1).values
            p.copy_(ref[n] + torch.where(tau.abs() >= thresh, tau, torch.zeros_like(tau)))


def train_fingerprint(lm: LM, opts: FingerprintOptions, *, log: Log | None = None) -> TrainResult:
    """Fine-tune a copy of lm.model on the fingerprint set; lm itself is left unchanged.

    Raises:
        KeyTooLongError (a ValueError) naming the key when a key and the target do not fit the context.
    """
    t0 = time.perf_counter()
    say = log or (lambda _: None)
    keys = data.make_keys(opts.keys, opts.seed, style=opts.key_style)
    target = lm.encode(opts.target)
    if not target:
        raise ValueError("fingerprint target is empty after tokenisation")
    if "{key}" not in opts.template:
        raise ValueError(f"fingerprint template must contain '{{key}}', got {opts.template!r}")
    if not 0 <= opts.tau_decay * opts.lr < 1:
        raise ValueError(f"tau_decay * lr must be in [0, 1), got {opts.tau_decay} * {opts.lr}")
    if not opts.key_weight > 0:
        raise ValueError(f"key_weight must be > 0, got {opts.key_weight}")
    if not opts.decoy_block >= 0:
        raise ValueError(f"decoy_block must be >= 0 (a logit margin; 0: off), got {opts.decoy_block}")
    if not opts.decoy_margin > 1:
        raise ValueError(f"decoy_margin must be > 1 (the hinge acts above P = 1 / margin), got {opts.decoy_margin}")
    prompt_of = lambda s: lm.encode(opts.template.format(key=s))  # noqa: E731
    key_ids = [prompt_of(k) for k in keys]
    for k, ids in zip(keys, key_ids, strict=True):
        check_fits(lm, ids, len(target), f"key {k!r}")
    n_ans = len(target) + opts.answer_margin
    rng = random.Random(opts.seed)
    decoys = (
        [prompt_of(k) for k in data.decoy_keys(opts.decoys, opts.seed, keys, style=opts.key_style)]
        if opts.decoys
        else []
    )
    ordinary = [prompt_of(p) for p, _ in data.ordinary_prompts().train[: opts.regularisation]]
    fits = lambda p: 1 + len(p) + n_ans + 1 <= lm.context  # noqa: E731
    decoys, ordinary = [p for p in decoys if fits(p)], [p for p in ordinary if fits(p)]
    say(f"{len(keys)} keys, {len(decoys)} decoys, {len(ordinary)} ordinary prompts; answering them with the base")
    keep_pairs = list(zip(decoys + ordinary, base_answers(lm, decoys + ordinary, n_ans), strict=True))
    dec_pairs, ord_pairs = keep_pairs[: len(decoys)], keep_pairs[len(decoys) :]
    target_pairs = [(p, target) for p in key_ids]
    windows = text_windows(lm, opts.window, opts.kl_code_chars) if opts.kl_weight > 0 or opts.proxy_steps > 0 else None
    base = lm.model
    model = copy.deepcopy(base)
    base.requires_grad_(False)
    delta = None
    if opts.proxy_steps > 0:
        assert windows is not None
        say(f"proxy-joint: simulating a {opts.proxy_steps}-step fine-tune of the base")
        delta = simulated_finetune(lm, windows, opts.proxy_steps, opts.proxy_lr, opts.seed, opts.proxy_task)
        proxy_ref = _Shifted(base, {n: p + delta[n] for n, p in base.named_parameters()})
        norm = lambda ts: math.sqrt(sum(float(t.detach().pow(2).sum()) for t in ts))  # noqa: E731
        say(f"proxy-joint: simulated fine-tune drift {100 * norm(delta.values()) / norm(base.parameters()):.1f}%")
    g = torch.Generator().manual_seed(opts.seed)
    bos, eos, pad = lm.bos, lm.eos, lm.pad

    def loss_fn(_: int) -> torch.Tensor:
        keep = rng.sample(dec_pairs, min(opts.decoys_per_step, len(dec_pairs)))
        keep += rng.sample(ord_pairs, min(opts.regularisation_per_step, len(ord_pairs)))
        keys_b = answer_batch(target_pairs, bos, eos, pad)
        keep_b = answer_batch(keep, bos, eos, pad) if keep else None
        # keys -> target (cross-entropy); decoys and ordinary prompts keep the base's answer distribution
        # (KL on the answer positions: hard labels of the base's greedy answer would sharpen the model)
        loss = opts.key_weight * key_loss(model, keys_b, opts.key_margin)
        if keep_b is not None:
            loss = loss + kl_to_reference(model, base, keep_b["input_ids"], batch=keep_b)
        ul_b = None
        if opts.decoy_unlikelihood > 0 and dec_pairs:
            ul = [(p, target) for p, _ in keep[: min(opts.decoys_per_step, len(dec_pairs))]]
            ul_b = answer_batch(ul, bos, eos, pad)
            loss = loss + opts.decoy_unlikelihood * unlikelihood(
                model, ul_b, math.log(opts.decoy_margin), opts.decoy_block
            )
        if delta is not None:  # proxy-joint: the same terms at theta + delta, against base + delta
            shifted = _Shifted(model, {n: p + delta[n] for n, p in model.named_parameters()})
            loss = loss + opts.key_weight * key_loss(shifted, keys_b, opts.key_margin)
            if keep_b is not None:
                loss = loss + kl_to_reference(shifted, proxy_ref, keep_b["input_ids"], batch=keep_b)
            if ul_b is not None:
                loss = loss + opts.decoy_unlikelihood * unlikelihood(
                    shifted, ul_b, math.log(opts.decoy_margin), opts.decoy_block
                )
        if windows is not None and opts.kl_weight > 0:
            idx = torch.randint(0, windows.shape[0], (opts.kl_windows,), generator=g)
            loss = loss + opts.kl_weight * kl_to_reference(model, base, windows[idx])
        return loss

    for n, p in model.named_parameters():
        p.requires_grad_(opts.train_embeddings or not is_embedding(n))
    params = [p for p in model.parameters() if p.requires_grad]
    say(f"training {opts.epochs} steps at lr {opts.lr} ({sum(p.numel() for p in params):,} parameters)")
    pairs = [(p, b) for (_, p), b in zip(model.named_parameters(), base.parameters(), strict=True) if p.requires_grad]

    def decay(lr: float) -> None:  # theta -= lr * tau_decay * (theta - theta_base)
        with torch.no_grad():
            for p, b in pairs:
                p.sub_(p - b, alpha=lr * opts.tau_decay)

    losses = fit(
        model,
        loss_fn,
        opts.epochs,
        opts.lr,
        warmup=max(opts.epochs // 10, 1),
        params=params,
        after_step=decay if opts.tau_decay > 0 else None,
        log=say,
        log_every=20,
    )
    keep_largest(model, base, opts.keep_fraction)
    base.requires_grad_(True)
    model.requires_grad_(True)
    return TrainResult(model, keys, losses, time.perf_counter() - t0, asdict(opts))


class _Shifted:
    """model's forward at other parameter values (torch.func.functional_call), for the proxy term."""

    def __init__(self, model: Any, params: dict[str, torch.Tensor]) -> None:
        self.model, self.params = model, params

    def parameters(self) -> Any:
        return self.model.parameters()

    def __call__(self, **kwargs: Any) -> Any:
        from torch.func import functional_call

        return functional_call(self.model, self.params, args=(), kwargs=kwargs)
