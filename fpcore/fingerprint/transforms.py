"""Transformations that keep a Llama-style model's function (up to float rounding) while moving its
weights: what an innocent owner's tooling, or an adversary, can do to a model without changing it.
The white-box verdict must never call an unstamped model fingerprinted after any of them.

Each takes a state_dict (name -> tensor, Hugging Face Llama names) and returns a new one; inputs are
never modified. `seed` keys the permutation or the scales.

- `permute_mlp`: reorder each layer's MLP neurons (gate/up rows, down columns);
- `permute_heads`: reorder each layer's attention heads (q/k/v rows by head, o columns; with grouped
  key/value heads, the groups and the query heads within each group);
- `permute_residual`: reorder the residual stream's coordinates everywhere (embedding columns, every
  map reading the stream, every map writing it, the norm weights, the output head's columns);
- `rescale_norms`: multiply every RMSNorm weight by positive per-coordinate scales in [1/4, 4] and
  divide the columns of the maps that read the norm's output by the same scales.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

StateDict = Mapping[str, torch.Tensor]


def _head_rows(order: torch.Tensor, d: int) -> torch.Tensor:
    """Row indices of heads `order` (each `d` rows) in a q/k/v weight."""
    return (order[:, None] * d + torch.arange(d)[None, :]).reshape(-1)


def _layers(sd: StateDict) -> list[str]:
    pre = sorted(
        {n.rsplit(".mlp.", 1)[0] for n in sd if ".mlp.gate_proj.weight" in n},
        key=lambda s: int(s.rsplit(".", 1)[1]),
    )
    if not pre:
        raise ValueError("transforms: no Llama-style layers (…layers.N.mlp.gate_proj.weight) in the state_dict")
    return pre


def _perm(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=g)


def mlp_order(sd: StateDict, orders: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Layer L's MLP neurons reordered by orders[L]: neuron k of the result is neuron orders[L][k]."""
    out = dict(sd)
    for L, p in orders.items():
        for n in ("gate_proj", "up_proj"):
            out[f"{L}.mlp.{n}.weight"] = sd[f"{L}.mlp.{n}.weight"][p].clone()
        out[f"{L}.mlp.down_proj.weight"] = sd[f"{L}.mlp.down_proj.weight"][:, p].clone()
    return out


def permute_mlp(sd: StateDict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return mlp_order(sd, {L: _perm(sd[f"{L}.mlp.gate_proj.weight"].shape[0], g) for L in _layers(sd)})


def head_order(
    sd: StateDict, orders: Mapping[str, tuple[torch.Tensor, torch.Tensor]], heads: int
) -> dict[str, torch.Tensor]:
    """Layer L's attention reordered by orders[L] = (key/value group order, query head order): group k
    of the result is group groups[k], query head k is query head q_order[k]."""
    out = dict(sd)
    for L, (groups, q_order) in orders.items():
        q = sd[f"{L}.self_attn.q_proj.weight"]
        d = q.shape[0] // heads
        out[f"{L}.self_attn.q_proj.weight"] = q[_head_rows(q_order, d)].clone()
        for n in ("k_proj", "v_proj"):
            out[f"{L}.self_attn.{n}.weight"] = sd[f"{L}.self_attn.{n}.weight"][_head_rows(groups, d)].clone()
        out[f"{L}.self_attn.o_proj.weight"] = sd[f"{L}.self_attn.o_proj.weight"][:, _head_rows(q_order, d)].clone()
    return out


def permute_heads(sd: StateDict, heads: int, kv_heads: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    kv_heads = kv_heads or heads
    if heads % kv_heads:
        raise ValueError(f"permute_heads: {heads} heads are not a multiple of {kv_heads} key/value heads")
    g = torch.Generator().manual_seed(seed)
    per = heads // kv_heads
    orders = {}
    for L in _layers(sd):
        groups = _perm(kv_heads, g)
        orders[L] = (groups, torch.cat([grp * per + _perm(per, g) for grp in groups.tolist()]))
    return head_order(sd, orders, heads)


def readers(sd: StateDict) -> dict[str, list[str]]:
    """Each RMSNorm weight -> the weights that read its output (their columns index its coordinates)."""
    out: dict[str, list[str]] = {}
    for L in _layers(sd):
        out[f"{L}.input_layernorm.weight"] = [f"{L}.self_attn.{n}.weight" for n in ("q_proj", "k_proj", "v_proj")]
        out[f"{L}.post_attention_layernorm.weight"] = [f"{L}.mlp.{n}.weight" for n in ("gate_proj", "up_proj")]
    if "model.norm.weight" in sd:
        out["model.norm.weight"] = [n for n in ("lm_head.weight",) if n in sd]
    return out


def residual_order(sd: StateDict, p: torch.Tensor) -> dict[str, torch.Tensor]:
    """The residual stream's coordinates reordered everywhere: coordinate k of the result is p[k]."""
    out = dict(sd)
    out["model.embed_tokens.weight"] = sd["model.embed_tokens.weight"][:, p].clone()
    if "lm_head.weight" in sd:
        out["lm_head.weight"] = sd["lm_head.weight"][:, p].clone()
    for norm, rs in readers(sd).items():
        out[norm] = sd[norm][p].clone()
        for r in rs:
            if r != "lm_head.weight":
                out[r] = sd[r][:, p].clone()
    for L in _layers(sd):
        for n in ("self_attn.o_proj", "mlp.down_proj"):
            out[f"{L}.{n}.weight"] = sd[f"{L}.{n}.weight"][p].clone()
    return out


def permute_residual(sd: StateDict, seed: int = 0) -> dict[str, torch.Tensor]:
    hidden = sd["model.embed_tokens.weight"].shape[1]
    return residual_order(sd, _perm(hidden, torch.Generator().manual_seed(seed)))


def norm_scales(sd: StateDict, scales: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each RMSNorm weight times scales[norm] (per coordinate), its readers' columns divided by them
    (float32, one rounding)."""
    out = dict(sd)
    rs = readers(sd)
    for norm, c in scales.items():
        w = sd[norm]
        out[norm] = (w.float() * c).to(w.dtype)
        for r in rs[norm]:
            out[r] = (sd[r].float() / c[None, :]).to(sd[r].dtype)
    return out


def rescale_norms(sd: StateDict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scales = {}
    for norm in readers(sd):
        w = sd[norm]
        scales[norm] = torch.exp((torch.rand(w.shape, generator=g) * 2 - 1) * torch.log(torch.tensor(4.0)))
    return norm_scales(sd, scales)


TRANSFORMS: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
    "permute_mlp": permute_mlp,
    "permute_heads": permute_heads,
    "permute_residual": permute_residual,
    "rescale_norms": rescale_norms,
}


def apply(name: str, sd: StateDict, config: object, seed: int = 0) -> dict[str, torch.Tensor]:
    """TRANSFORMS[name] on `sd`, with the head counts from a transformers config where needed."""
    if name not in TRANSFORMS:
        raise ValueError(f"transforms: unknown transform {name!r} (one of {', '.join(TRANSFORMS)})")
    if name == "permute_heads":
        heads = int(config.num_attention_heads)  # type: ignore[attr-defined]
        kv = int(getattr(config, "num_key_value_heads", None) or heads)
        return permute_heads(sd, heads, kv, seed)
    return TRANSFORMS[name](sd, seed)
