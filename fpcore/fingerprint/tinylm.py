"""A small Llama-style causal LM and a byte-level BPE tokenizer, both built here from text that ships
with Python (no downloads), and its pretraining. Used by the demo and the tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fpcore.fingerprint.lm import LM, lm_loss, quiet_transformers
from fpcore.fingerprint.train import Log, fit

SPECIALS = ("<pad>", "<s>", "</s>")


@dataclass
class TinyConfig:
    vocab: int = 2048
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 352
    context: int = 128


def train_tokenizer(texts: Sequence[str], vocab: int) -> Any:
    """A byte-level BPE (tokenizers) trained on `texts`, wrapped for transformers; ids 0/1/2 are
    <pad>/<s>/</s>. Any string encodes (bytes fall back to the 256 base symbols)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build(cfg: TinyConfig, tokenizer: Any, seed: int = 0) -> LM:
    """A freshly initialised LlamaForCausalLM (untied output head) for `tokenizer`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    quiet_transformers()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.context,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LM(model, tokenizer)


def window_loss(model: Any, windows: torch.Tensor, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Next-token loss on `batch` random windows."""
    w = windows[torch.randint(0, windows.shape[0], (batch,), generator=generator)]
    return lm_loss(model, {"input_ids": w, "attention_mask": torch.ones_like(w), "labels": w})


def pretrain(
    lm: LM, windows: torch.Tensor, steps: int, lr: float, *, batch: int = 16, seed: int = 0, log: Log | None = None
) -> list[float]:
    """Plain next-token pretraining on token windows [N, T] (weight decay 0.01, 5% warmup)."""
    g = torch.Generator().manual_seed(seed)
    return fit(
        lm.model,
        lambda _: window_loss(lm.model, windows, batch, g),
        steps,
        lr,
        warmup=max(steps // 20, 1),
        weight_decay=0.01,
        log=log,
        log_every=max(steps // 8, 1),
    )
