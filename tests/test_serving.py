"""Serving: stamp-on-load, live-module stamping, load_stamped — each against `fpcore stamp` + a plain load."""

import pytest
import torch

import fpcore
from fpcore import serving, stamping
from fpcore.io import Checkpoint, CheckpointError
from fpcore.testing import assert_bitwise_equal, ulp_distance
from tests.test_stamping import base_tensors, make_model, perturbed


@pytest.fixture
def family(tmp_path):
    base = base_tensors()
    f = {
        "base": make_model(tmp_path / "base", base),
        "tuned": make_model(tmp_path / "tuned", perturbed(base, 1, 0.05)),
        "down": make_model(tmp_path / "down", perturbed(base, 2, 0.02, skip=())),
        "tensors": base,
        "tmp": tmp_path,
    }
    f["vec"] = tmp_path / "fp.safetensors"
    stamping.extract(f["tuned"], f["base"], f["vec"], dtype="fp32")
    return f


def test_stamped_tensors_equal_stamped_checkpoint(family):
    out = family["tmp"] / "stamped"
    stamping.stamp([(family["vec"], 0.8)], [family["down"]], out)
    ref = Checkpoint(out)
    got = dict(serving.stamped_tensors(family["down"], family["vec"], 0.8))
    assert list(got) == Checkpoint(family["down"]).names()  # every tensor, in file order
    for n in ref.names():
        assert_bitwise_equal(got[n], ref.get(n), what=n)
    assert got["model.step_count"].dtype == torch.int64  # non-float tensors pass through


def test_stamped_tensors_vocab_growth_and_refusals(family):
    base = family["tensors"]
    grown = dict(base)
    grown["model.embed_tokens.weight"] = torch.cat([base["model.embed_tokens.weight"], torch.ones(2, 8).bfloat16()])
    g = make_model(family["tmp"] / "grown", grown)
    stamping.stamp([(family["vec"], 1.0)], [g], family["tmp"] / "g_out")
    ref = Checkpoint(family["tmp"] / "g_out")
    for n, t in serving.stamped_tensors(g, family["vec"]):
        assert_bitwise_equal(t, ref.get(n), what=n)
    bad = dict(base)
    bad["model.layers.0.mlp.weight"] = torch.zeros(16, 9).bfloat16()
    m = make_model(family["tmp"] / "bad", bad)
    it = serving.stamped_tensors(m, family["vec"])
    with pytest.raises(CheckpointError, match=r"tensor 'model.layers.0.mlp.weight' has shape \(16, 9\)"):
        next(it)


# ---- live modules and transformers models ------------------------------------------------------


transformers = pytest.importorskip("transformers")


def tiny_llama(seed: int, hidden: int = 32) -> torch.nn.Module:
    cfg = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg)


def nudged(model: torch.nn.Module, seed: int, scale: float) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g).to(p.dtype))
    return model


@pytest.fixture
def llama_family(tmp_path):
    base = tiny_llama(0).to(torch.bfloat16)
    paths = {}
    for name, model in (
        ("base", base),
        ("tuned", nudged(tiny_llama(0).to(torch.bfloat16), 1, 0.02)),
        ("down", nudged(tiny_llama(0).to(torch.bfloat16), 2, 0.01)),
    ):
        paths[name] = tmp_path / name
        model.save_pretrained(paths[name])
    paths["vec"] = tmp_path / "fp.safetensors"
    stamping.extract(paths["tuned"], paths["base"], paths["vec"], dtype="fp32")
    stamping.stamp([(paths["vec"], 1.0)], [paths["down"]], tmp_path / "stamped")
    paths["stamped"] = tmp_path / "stamped"
    return paths


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.detach() for n, t in model.state_dict().items()}


@pytest.mark.parametrize("dtype", [None, torch.float32], ids=["checkpoint-dtype", "fp32"])
def test_load_stamped_equals_stamp_then_load(llama_family, dtype):
    kw = {} if dtype is None else {"dtype": dtype}
    want = _params(transformers.AutoModelForCausalLM.from_pretrained(llama_family["stamped"], **kw))
    got = _params(serving.load_stamped(llama_family["down"], llama_family["vec"], **kw))
    assert want.keys() == got.keys()
    for n in want:
        assert_bitwise_equal(got[n], want[n], what=n)
    plain = _params(transformers.AutoModelForCausalLM.from_pretrained(llama_family["down"], **kw))
    assert not torch.equal(plain["model.layers.0.mlp.up_proj.weight"], got["model.layers.0.mlp.up_proj.weight"])


def test_stamp_on_load_into_module_equals_stamp_then_load(llama_family):
    module = tiny_llama(5).to(torch.bfloat16)
    module.load_state_dict(dict(serving.stamped_tensors(llama_family["down"], llama_family["vec"])))
    want = _params(transformers.AutoModelForCausalLM.from_pretrained(llama_family["stamped"]))
    for n, t in _params(module).items():
        assert_bitwise_equal(t, want[n], what=n)


def test_stamp_module_mixed_dtypes_and_batches(llama_family):
    vec = fpcore.vector.FingerprintVector(llama_family["vec"])
    module = transformers.AutoModelForCausalLM.from_pretrained(llama_family["down"])
    for name, mod in module.named_modules():
        if name.endswith("norm"):
            mod.float()  # norms in fp32, the rest bf16
    before = {n: t.clone() for n, t in _params(module).items()}
    twin = transformers.AutoModelForCausalLM.from_pretrained(llama_family["down"])
    for name, mod in twin.named_modules():
        if name.endswith("norm"):
            mod.float()
    serving.stamp_module_(module, llama_family["vec"], 0.5)
    serving.stamp_module_(twin, vec, 0.5, batch_bytes=1)  # one call per tensor
    for n, t in _params(module).items():
        want = fpcore.stamp(before[n], vec.get(n), 0.5) if n in vec.names() else before[n]
        assert_bitwise_equal(t, want, what=n)
        assert_bitwise_equal(_params(twin)[n], want, what=f"batched {n}")
    assert any(t.dtype == torch.float32 for t in before.values()) and any(
        t.dtype == torch.bfloat16 for t in before.values()
    )


def test_stamp_then_unstamp_fp32_module_within_one_ulp(llama_family):
    """theta' = fl(theta + p), theta'' = fl(theta' - p) with the same p = fl(alpha * tau) both times:
    |theta'' - theta| <= ulp(theta')/2 + ulp(theta'')/2, i.e. within 1 ulp at the stamped magnitude
    (exactly equal wherever the stamp did not raise the exponent)."""
    module = transformers.AutoModelForCausalLM.from_pretrained(llama_family["down"], dtype=torch.float32)
    module.requires_grad_(True)
    before = {n: t.clone() for n, t in _params(module).items()}
    serving.stamp_module_(module, llama_family["vec"], 1.3)
    stamped = {n: t.clone() for n, t in _params(module).items()}
    assert sum(not torch.equal(before[n], t) for n, t in stamped.items()) > 10
    serving.unstamp_module_(module, llama_family["vec"], 1.3)
    exact = total = 0
    for n, t in _params(module).items():
        mag = torch.maximum(stamped[n].abs(), t.abs())
        ulp = torch.nextafter(mag, torch.tensor(float("inf"))) - mag
        assert bool(((t - before[n]).abs() <= ulp).all()), n
        exact += int((t == before[n]).sum())
        total += t.numel()
    assert exact / total > 0.5  # most weights come back bit for bit
    assert all(p.requires_grad for p in module.parameters())
    small = {n: t for n, t in before.items() if n.endswith("norm.weight")}  # |tau| << |theta| there
    assert all(ulp_distance(_params(module)[n], t) <= 1 for n, t in small.items())


def test_module_of_another_architecture_is_refused(llama_family):
    other = tiny_llama(0, hidden=48)
    vec = fpcore.vector.FingerprintVector(llama_family["vec"])
    shapes = dict(other.state_dict())
    first = next(n for n in vec.names() if tuple(shapes[n].shape) != vec.ckpt.info(n).shape)
    with pytest.raises(CheckpointError, match=rf"module LlamaForCausalLM: tensor '{first}' has shape"):
        serving.stamp_module_(other, llama_family["vec"])
    before = {n: t.clone() for n, t in _params(other).items()}
    assert all(torch.equal(before[n], t) for n, t in _params(other).items())
    with pytest.raises(TypeError, match="expected a torch.nn.Module"):
        serving.stamp_module_({"a": torch.ones(2)}, llama_family["vec"])
