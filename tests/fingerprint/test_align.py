"""Alignment recovers the function-preserving transforms exactly, leaves an untouched model's bits
alone, and says when a suspect is not derived from the reference."""

import pytest
import torch

from fpcore.fingerprint import transforms
from fpcore.fingerprint.align import align

HEADS, KV = 4, 2


def _llama(seed: int, layers: int = 2, hidden: int = 32, ff: int = 48, vocab: int = 80, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    d = hidden // HEADS

    def w(*shape):
        return (torch.randn(*shape, generator=g) / shape[-1] ** 0.5).to(dtype)

    sd = {"model.embed_tokens.weight": w(vocab, hidden), "model.norm.weight": (1 + 0.1 * w(hidden)).to(dtype)}
    for i in range(layers):
        L = f"model.layers.{i}"
        sd |= {
            f"{L}.self_attn.q_proj.weight": w(HEADS * d, hidden),
            f"{L}.self_attn.k_proj.weight": w(KV * d, hidden),
            f"{L}.self_attn.v_proj.weight": w(KV * d, hidden),
            f"{L}.self_attn.o_proj.weight": w(hidden, HEADS * d),
            f"{L}.mlp.gate_proj.weight": w(ff, hidden),
            f"{L}.mlp.up_proj.weight": w(ff, hidden),
            f"{L}.mlp.down_proj.weight": w(hidden, ff),
            f"{L}.input_layernorm.weight": (1 + 0.1 * w(hidden)).to(dtype),
            f"{L}.post_attention_layernorm.weight": (1 + 0.1 * w(hidden)).to(dtype),
        }
    sd["lm_head.weight"] = w(vocab, hidden)
    return sd


def _drift(sd, rel: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    return {
        n: (t.float() + rel * t.float().std() * torch.randn(t.shape, generator=g)).to(t.dtype) for n, t in sd.items()
    }


def _all(sd, seed: int):
    x = transforms.permute_residual(sd, seed)
    x = transforms.permute_mlp(x, seed + 1)
    return transforms.permute_heads(x, HEADS, KV, seed + 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_permutations_are_recovered_exactly_from_a_drifted_copy(dtype):
    ref = _llama(0, dtype=dtype)
    copy = _drift(ref, 0.1, seed=1)  # the thief's copy: a fine-tune of the reference
    moved = _all(copy, seed=5)
    assert any(not torch.equal(moved[n], copy[n]) for n in copy)
    back, rep = align(moved, ref, HEADS, KV)
    assert all(torch.equal(back[n], copy[n]) for n in copy), [n for n in copy if not torch.equal(back[n], copy[n])]
    assert rep.changed and rep.quality > 0.9
    steps = {s.step: s for s in rep.steps}
    assert steps["residual coordinates"].moved > 0 and steps["MLP neurons"].moved > 0
    assert steps["norm scales"].moved == 0  # nobody rescaled: the norms keep their bits


def test_norm_rescaling_is_undone_within_rounding():
    ref = _llama(2)
    copy = _drift(ref, 0.05, seed=3)
    moved = transforms.rescale_norms(transforms.permute_residual(copy, 7), seed=8)
    back, rep = align(moved, ref, HEADS, KV)
    assert {s.step: s for s in rep.steps}["norm scales"].moved > 0
    for n in copy:
        assert torch.allclose(back[n], copy[n], rtol=0.02, atol=1e-3), n
    # much closer than before alignment: what the detectors compare element by element
    err_before = sum(float((moved[n] - copy[n]).norm()) for n in copy)
    err_after = sum(float((back[n] - copy[n]).norm()) for n in copy)
    assert err_after < 0.02 * err_before


def test_an_untouched_copy_keeps_its_bits_and_the_input_is_not_modified():
    ref = _llama(4)
    copy = _drift(ref, 0.1, seed=5)
    before = {n: t.clone() for n, t in copy.items()}
    back, rep = align(copy, ref, HEADS, KV)
    assert not rep.changed
    assert all(back[n] is copy[n] for n in copy)
    assert all(torch.equal(copy[n], before[n]) for n in copy)


def test_an_unrelated_model_aligns_poorly_and_the_report_says_so():
    _, rep = align(_llama(6), _llama(7), HEADS, KV)
    assert rep.quality < 0.5
    _, good = align(_drift(_llama(7), 0.1, seed=1), _llama(7), HEADS, KV)
    assert good.quality > 0.9


def test_another_architecture_is_refused_naming_the_tensor():
    ref = _llama(0)
    other = _llama(0, ff=40)
    with pytest.raises(ValueError, match=r"align: tensor 'model.layers.0.mlp.gate_proj.weight' is \(40, 32\)"):
        align(other, ref, HEADS, KV)


def test_trace_with_align_names_the_licensee_of_a_permuted_copy(tmp_path, capsys):
    """A coded copy whose neurons, heads and residual coordinates were reordered: `trace` alone sees
    noise and names nobody; `trace --align` restores the copy's exact bits and names its licensee."""
    import json

    from fpcore import stamping
    from fpcore.cli import main
    from fpcore.fingerprint.folders import load_state, write_like
    from fpcore.trace.key import TraceKey

    ref = tmp_path / "ref"
    write_like(tmp_path, ref, _llama(9, hidden=128, ff=256, vocab=256, dtype=torch.bfloat16), {})
    (ref / "config.json").write_text(json.dumps({"num_attention_heads": HEADS, "num_key_value_heads": KV}))
    key = TraceKey.generate()
    key.save(tmp_path / "trace.key")
    stamping.stamp([], [ref], tmp_path / "copy", trace_key=key, licensees=["3"])
    moved = _all(load_state(tmp_path / "copy", "test"), seed=21)
    write_like(tmp_path / "copy", tmp_path / "moved", moved, {})
    argv = ["trace", str(tmp_path / "moved"), "--reference", str(ref), "--trace-key", str(tmp_path / "trace.key")]
    argv += ["--licensees", "100", "--json"]
    assert main(argv) == 1
    assert json.loads(capsys.readouterr().out)["identified"] == []
    assert main([*argv, "--align"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [c["licensee"] for c in res["identified"]] == ["3"] and res["identified"][0]["p"] < 1e-9
    assert res["alignment"]["changed"] and res["alignment"]["quality"] > 0.99


def test_the_assignment_without_scipy_is_the_same_permutation(monkeypatch):
    """Where scipy is missing the greedy assignment takes over; on a clear match it is the same."""
    import builtins

    from fpcore.fingerprint.align import _assign

    g = torch.Generator().manual_seed(3)
    p = torch.randperm(50, generator=g)
    sim = 0.1 * torch.rand(50, 50, generator=g)
    sim[torch.arange(50), p] += 0.9
    want = _assign(sim)
    real = builtins.__import__

    def no_scipy(name, *a, **k):
        if name.startswith("scipy"):
            raise ImportError("no scipy here")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    assert torch.equal(_assign(sim), want) and torch.equal(want, p)
