"""Alignment: undo the function-preserving transforms a thief may have applied to a Llama-style model
before the white-box projection onto tau or the licensee-code correlation compares it with the
reference element by element (`fpcore align`, and `--align` on `detect` and `trace`).

Recovered, in this order (each on the result of the previous), all against the reference:

1. the residual stream's coordinate order: the embedding's columns matched by correlation (invariant
   to the other transforms: neuron and head orders never touch it, norm rescaling never touches it);
2. per RMSNorm, the per-coordinate scales moved between the norm and the maps that read it: the norm's
   ratio to the reference's and the inverse ratio of its readers' column norms (row orders do not change
   a column's norm) agree for a rescale and not for drift; applied only to a norm whose scales are
   well away from 1 and agree (so a model nobody rescaled keeps its exact bits);
3. per layer, the MLP neurons' order (gate row, up row, down column matched together);
4. per layer, the key/value groups' order and the query heads' order within each group (k and v
   blocks for groups; q block and o columns for query heads).

Matching is the assignment that maximises the summed cosine similarity (the row-wise best when it is
already a permutation, else scipy's linear_sum_assignment, or a greedy assignment without scipy).
Each step reports its quality (the mean cosine of matched pairs, or the agreement of column norms)
and how many items moved. A suspect that is not derived from the reference matches poorly (low mean
cosine): the report says so, and the detectors' nulls stay what they are, because alignment uses only
suspect and reference, never tau or a licensee code.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fpcore.fingerprint import transforms

StateDict = Mapping[str, torch.Tensor]
POOR = 0.5
"""A report whose worst step agrees less than this calls the match poor."""
SCALE_TOLERANCE = 0.02
"""A norm whose scales average within 2 % of 1 (in |log|) is left alone: drift, not a rescale."""


@dataclass
class StepReport:
    step: str
    items: int  # coordinates, neurons, groups or heads matched (summed over layers)
    moved: int  # of those, how many the alignment moved (for scales: coordinates rescaled)
    mean_agreement: float  # matches: the mean cosine of matched pairs; scales: of min(ratio, 1/ratio) of the
    min_agreement: float  # readers' column norms after rescaling (1 = the reference's exactly)


@dataclass
class AlignReport:
    steps: list[StepReport] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(s.moved for s in self.steps)

    @property
    def quality(self) -> float:
        """The worst step's mean agreement: near 1 for a model derived from the reference."""
        return min((s.mean_agreement for s in self.steps), default=1.0)

    def summary(self) -> str:
        moved = ", ".join(f"{s.moved} of {s.items} {s.step}" for s in self.steps if s.moved)
        return f"alignment: {'moved ' + moved if moved else 'nothing to undo'}; quality {self.quality:.3f}" + (
            "" if self.quality >= POOR else " (poor: the suspect may not derive from the reference)"
        )

    def as_json(self) -> dict[str, Any]:
        return {"changed": self.changed, "quality": self.quality, "steps": [asdict(s) for s in self.steps]}


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    x = x.to(torch.float32)
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-30)


IDENTITY_COSINE = 0.8
"""Every item whose own counterpart (same index) agrees at least this well: nothing was moved."""
PROJECTION = 128
"""Features longer than this are compared through a fixed random projection to this many dimensions
(cosines kept to about +-0.09: far below a true match's, far above chance among thousands)."""


def _project(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape[1] <= PROJECTION:
        return a, b
    g = torch.Generator().manual_seed(0x5EED)
    r = torch.randn(a.shape[1], PROJECTION, generator=g) / PROJECTION**0.5
    return a @ r, b @ r


def match(feat_s: torch.Tensor, feat_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, cosines): order[k] = the suspect item matched to reference item k (rows of the features),
    maximising the summed cosine; cosines[k] of each matched pair.

    Fast path: when every item agrees with its own counterpart (IDENTITY_COSINE), the order is the
    identity, at the cost of one pass over the features. Otherwise the features are centred, projected
    (PROJECTION) and matched: the row-wise best when it is a permutation, else linear_sum_assignment."""
    us, ur = _unit_rows(feat_s), _unit_rows(feat_r)
    own = (us * ur).sum(dim=1)
    n = own.numel()
    if float(own.min()) >= IDENTITY_COSINE:
        return torch.arange(n), own
    ps, pr = _project(us, ur)
    sim = _unit_rows(pr) @ _unit_rows(ps).T  # [reference, suspect]
    best = sim.argmax(dim=1)
    if torch.unique(best).numel() == n:
        order = best
    else:
        order = _assign(sim)
    return order, (us[order] * ur).sum(dim=1)  # the matched pairs' cosines, in full


def _assign(sim: torch.Tensor) -> torch.Tensor:
    """The permutation maximising the summed similarity: scipy's linear_sum_assignment where scipy is
    installed, else greedy (the most similar free pair first; exact when the true matches stand out)."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        n = sim.shape[0]
        order = torch.full((n,), -1, dtype=torch.long)
        taken = torch.zeros(n, dtype=torch.bool)
        for flat in sim.reshape(-1).argsort(descending=True).tolist():
            r, c = divmod(flat, n)
            if order[r] < 0 and not taken[c]:
                order[r], taken[c] = c, True
                if bool(taken.all()):
                    break
        return order
    rows, cols = linear_sum_assignment(sim.double().numpy(), maximize=True)
    return torch.as_tensor(cols)[torch.as_tensor(rows).argsort()]


def _merge_step(name: str, parts: list[tuple[torch.Tensor, torch.Tensor]], report: AlignReport) -> None:
    """One report line for a step done per layer."""
    if parts:
        moved = sum(int((o != torch.arange(o.numel())).sum()) for o, _ in parts)
        cos = torch.cat([c for _, c in parts])
        report.steps.append(StepReport(name, int(cos.numel()), moved, float(cos.mean()), float(cos.min())))


def _mlp_features(x: StateDict, L: str) -> torch.Tensor:
    """Per neuron: its gate row, up row and down column."""
    return torch.cat(
        [x[f"{L}.mlp.gate_proj.weight"], x[f"{L}.mlp.up_proj.weight"], x[f"{L}.mlp.down_proj.weight"].T], 1
    )


def _kv_features(x: StateDict, L: str, kv_heads: int) -> torch.Tensor:
    """Per key/value group: its k and v rows."""
    k = x[f"{L}.self_attn.k_proj.weight"].reshape(kv_heads, -1)
    return torch.cat([k, x[f"{L}.self_attn.v_proj.weight"].reshape(kv_heads, -1)], 1)


def _qo_features(x: StateDict, L: str, heads: int) -> torch.Tensor:
    """Per query head: its q rows and o columns."""
    q = x[f"{L}.self_attn.q_proj.weight"].reshape(heads, -1)
    return torch.cat([q, x[f"{L}.self_attn.o_proj.weight"].T.reshape(heads, -1)], 1)


def align(
    suspect: StateDict,
    reference: StateDict,
    heads: int,
    kv_heads: int | None = None,
    *,
    scale_tolerance: float = SCALE_TOLERANCE,
) -> tuple[dict[str, torch.Tensor], AlignReport]:
    """The suspect with its residual order, norm scales, MLP neuron orders and head orders brought back
    to the reference's (module doc), and the report. Tensors nothing moved are the suspect's own.
    Raises ValueError naming the tensor when the two are not the same architecture."""
    kv_heads = kv_heads or heads
    for n, t in reference.items():
        if n not in suspect:
            raise ValueError(f"align: the suspect has no tensor {n!r}")
        if tuple(suspect[n].shape) != tuple(t.shape):
            raise ValueError(
                f"align: tensor {n!r} is {tuple(suspect[n].shape)} in the suspect, {tuple(t.shape)} in the reference"
            )
    layers = transforms._layers(reference)
    report = AlignReport()
    sd: dict[str, torch.Tensor] = dict(suspect)

    # 1. the residual order, from the embedding's columns
    emb = "model.embed_tokens.weight"
    order, cos = match(sd[emb].T, reference[emb].T)
    _merge_step("residual coordinates", [(order, cos)], report)
    if not torch.equal(order, torch.arange(order.numel())):
        sd = transforms.residual_order(sd, order)

    # 2. norm scales: a rescale multiplies the norm's weight by s and divides its readers' columns by s,
    # so both say s; a fine-tune moves them independently. s_a = norm ratio, s_b = readers' column-norm
    # ratio (row orders do not change a column's norm); s = sqrt(s_a s_b). A norm is rescaled when its
    # mean |log s| is above the tolerance and twice the mean |log s_a - log s_b| (pure drift gives about
    # half of it, so drift alone never fires)
    scales, moved, agree = {}, 0, []
    for norm, rs in transforms.readers(reference).items():
        if not rs:
            continue
        la = (sd[norm].float().abs() / reference[norm].float().abs().clamp_min(1e-30)).clamp_min(1e-30).log()
        ns = sum(sd[r].float().pow(2).sum(dim=0) for r in rs)
        nr = sum(reference[r].float().pow(2).sum(dim=0) for r in rs)
        lb = -0.5 * (ns / nr.clamp_min(1e-30)).clamp_min(1e-30).log()
        ls = 0.5 * (la + lb)
        if float(ls.abs().mean()) > max(math.log1p(scale_tolerance), 2.0 * float((la - lb).abs().mean())):
            scales[norm] = torch.exp(-ls)  # the norm times 1/s, its readers times s
            moved += int((ls.abs() > math.log1p(scale_tolerance)).sum())
    if scales:
        sd = transforms.norm_scales(sd, scales)
    for rs in transforms.readers(reference).values():
        if rs:  # how close the readers' column norms now are: min(ratio, 1 / ratio) per coordinate
            ns = sum(sd[r].float().pow(2).sum(dim=0) for r in rs)
            nr = sum(reference[r].float().pow(2).sum(dim=0) for r in rs)
            agree.append(torch.exp(-(ns / nr.clamp_min(1e-30)).sqrt().log().abs()))
    cs = torch.cat(agree) if agree else torch.ones(1)
    report.steps.append(StepReport("norm scales", int(cs.numel()), moved, float(cs.mean()), float(cs.min())))

    # 3. MLP neurons, per layer
    mlp, parts = {}, []
    for L in layers:
        feat = [_mlp_features(x, L) for x in (sd, reference)]
        order, cos = match(feat[0], feat[1])
        parts.append((order, cos))
        if not torch.equal(order, torch.arange(order.numel())):
            mlp[L] = order
    _merge_step("MLP neurons", parts, report)
    if mlp:
        sd = transforms.mlp_order(sd, mlp)

    # 4. key/value groups, then query heads within each group, per layer
    if heads % kv_heads:
        raise ValueError(f"align: {heads} heads are not a multiple of {kv_heads} key/value heads")
    per = heads // kv_heads
    att, gparts, qparts = {}, [], []
    for L in layers:
        groups, gcos = match(_kv_features(sd, L, kv_heads), _kv_features(reference, L, kv_heads))
        gparts.append((groups, gcos))
        qs, qr = _qo_features(sd, L, heads), _qo_features(reference, L, heads)
        q_order, q_cos = [], []
        for k, g in enumerate(groups.tolist()):  # reference group k is the suspect's group g
            o, c = match(qs[g * per : (g + 1) * per], qr[k * per : (k + 1) * per])
            q_order.append(g * per + o)
            q_cos.append(c)
        q_order_t = torch.cat(q_order)
        qparts.append((q_order_t, torch.cat(q_cos)))
        if not (torch.equal(groups, torch.arange(kv_heads)) and torch.equal(q_order_t, torch.arange(heads))):
            att[L] = (groups, q_order_t)
    _merge_step("key/value groups", gparts, report)
    _merge_step("query heads", qparts, report)
    if att:
        sd = transforms.head_order(sd, att, heads)
    return sd, report


def _heads(reference: str | Path) -> tuple[int, int]:
    from fpcore.fingerprint.folders import load_config

    cfg = load_config(reference)
    if cfg is None or not hasattr(cfg, "num_attention_heads"):
        raise ValueError(f"align: {reference} has no config.json with num_attention_heads (the head layout)")
    heads = int(cfg.num_attention_heads)
    return heads, int(getattr(cfg, "num_key_value_heads", None) or heads)


def align_checkpoint(
    suspect: str | Path, reference: str | Path, out: str | Path, *, overwrite: bool = False
) -> tuple[Path | None, AlignReport]:
    """Writes the aligned suspect as a Hugging Face folder at `out` (the suspect's other files copied;
    metadata `fpcore_aligned_to`), unless alignment changed nothing: then nothing is written and the
    path returned is None. Head counts come from the reference's config.json."""
    from fpcore.fingerprint.folders import load_state, write_like

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"align: {out} already exists (pass --overwrite to replace it)")
    heads, kv = _heads(reference)
    sd, report = align(load_state(suspect, "align: SUSPECT"), load_state(reference, "align: --reference"), heads, kv)
    if not report.changed:
        return None, report
    meta = {"fpcore_aligned_to": str(reference), "fpcore_alignment": json.dumps(report.as_json())}
    return write_like(suspect, out, sd, meta, overwrite=overwrite), report


@contextmanager
def aligned(suspect: str | Path, reference: str | Path, enabled: bool) -> Iterator[tuple[Path, AlignReport | None]]:
    """(the path to score, the report): the suspect itself when not enabled or when alignment changed
    nothing, else its aligned copy in a temporary folder removed on exit."""
    if not enabled:
        yield Path(suspect), None
        return
    with tempfile.TemporaryDirectory(prefix="fpcore-align-") as tmp:
        path, report = align_checkpoint(suspect, reference, Path(tmp) / "aligned")
        yield (path or Path(suspect)), report
