"""`fpcore fingerprint attack`: each weight-space attack against its definition on a tiny model, and the
command's output, labels and errors."""

import json

import pytest
import torch

from fpcore.cli import main
from fpcore.fingerprint import attacks, cli
from fpcore.io import Checkpoint, write_safetensors


def _sd(seed: int = 0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "model.embed_tokens.weight": (torch.randn(50, 24, generator=g) * 0.02).to(dtype),
        "model.layers.0.mlp.up_proj.weight": (torch.randn(40, 24, generator=g) * 0.05).to(dtype),
        "model.layers.0.mlp.down_proj.weight": (torch.randn(24, 40, generator=g) * 0.05).to(dtype),
        "model.layers.0.input_layernorm.weight": (1 + 0.1 * torch.randn(24, generator=g)).to(dtype),
    }


def _unchanged_inputs(sd, before):
    assert all(torch.equal(sd[n], before[n]) for n in sd), "the input was modified"


def test_names_and_defaults_of_the_command_are_the_modules():
    assert cli.ATTACK_NAMES == attacks.ATTACKS
    d = attacks.AttackOptions()
    for k in ("group", "fraction", "weight", "density", "sigma", "seed", "task", "drift", "lr", "max_steps"):
        assert getattr(cli.AttackDefaults, k) == getattr(d, k), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_rounds_each_row_to_its_own_grid(dtype):
    sd = _sd(1, dtype)
    before = {n: t.clone() for n, t in sd.items()}
    out = attacks.int8(sd)
    _unchanged_inputs(sd, before)
    norm = "model.layers.0.input_layernorm.weight"
    assert torch.equal(out[norm], sd[norm])  # weight-only: norms stay
    for n, t in sd.items():
        assert out[n].dtype == t.dtype and out[n].shape == t.shape
        if t.dim() < 2:
            continue
        m = t.float()
        scale = m.abs().amax(dim=1, keepdim=True) / 127
        q = out[n].float() / scale
        tol = 2e-2 if dtype == torch.bfloat16 else 1e-4  # the grid value rounded once to the dtype
        assert (q - q.round()).abs().max() < tol * 127
        assert (
            (out[n].float() - m).abs() <= scale * 0.5 + m.abs() * (2**-8 if dtype == torch.bfloat16 else 1e-6)
        ).all()
        assert not torch.equal(out[n], t)


def test_int4_uses_at_most_16_levels_per_group_and_handles_a_ragged_last_group():
    sd = {"w": torch.randn(6, 45, generator=torch.Generator().manual_seed(2))}  # 45 = 32 + 13
    out = attacks.int4(sd, group=32)["w"]
    for r in range(6):
        for lo, hi in ((0, 32), (32, 45)):
            vals = out[r, lo:hi]
            src = sd["w"][r, lo:hi]
            assert len(torch.unique(vals)) <= 16
            step = (src.max() - src.min()) / 15
            assert (vals - src).abs().max() <= step * 0.5 + 1e-6
    with pytest.raises(ValueError, match="int4: group must be >= 2"):
        attacks.int4(sd, group=1)


def test_prune_zeroes_exactly_the_smallest_magnitudes():
    sd = _sd(3)
    out = attacks.prune(sd, 0.3)
    for n, t in sd.items():
        if t.dim() < 2:
            assert torch.equal(out[n], t)
            continue
        k = int(0.3 * t.numel())
        zeroed = out[n] == 0
        assert int(zeroed.sum()) == k
        assert t[zeroed].abs().max() <= t[~zeroed].abs().min()
        assert torch.equal(out[n][~zeroed], t[~zeroed])
    with pytest.raises(ValueError, match="prune: fraction"):
        attacks.prune(sd, 1.0)


def test_linear_merge_is_one_rounding_of_the_fp32_mix_and_checks_shapes():
    a, b = _sd(4, torch.bfloat16), _sd(5, torch.bfloat16)
    out = attacks.merge(a, b, 0.25)
    for n in a:
        want = (0.75 * a[n].float() + 0.25 * b[n].float()).to(torch.bfloat16)
        assert torch.equal(out[n], want)
    assert all(torch.equal(attacks.merge(a, b, 0.0)[n], a[n]) for n in a)
    bad = dict(b)
    bad["model.layers.0.mlp.up_proj.weight"] = torch.zeros(40, 23)
    with pytest.raises(ValueError, match=r"merge: tensor 'model.layers.0.mlp.up_proj.weight' is \(40, 24\)"):
        attacks.merge(a, bad, 0.5)


def test_ties_trims_elects_a_sign_and_averages_the_agreeing_entries():
    base = {"w": torch.zeros(1, 4)}
    a = {"w": torch.tensor([[4.0, -1.0, 2.0, 0.1]])}
    b = {"w": torch.tensor([[-1.0, -3.0, 2.0, 5.0]])}
    # density 0.5: a keeps (4, 2), b keeps (-3, 5); signs per element: +, -, +, +
    out = attacks.ties(a, b, base, weight=0.5, density=0.5)["w"]
    assert torch.allclose(out, torch.tensor([[4.0, -3.0, 2.0, 5.0]]))
    # density 1: element 0 has mass 0.5*4 - 0.5*1 > 0 -> only a's +4 agrees
    out = attacks.ties(a, b, base, weight=0.5, density=1.0)["w"]
    assert torch.allclose(out, torch.tensor([[4.0, -2.0, 2.0, 2.55]]))


def test_noise_has_the_asked_relative_size_and_is_seeded():
    sd = _sd(6)
    x, y = attacks.noise(sd, 0.1, seed=3), attacks.noise(sd, 0.1, seed=3)
    assert all(torch.equal(x[n], y[n]) for n in sd)
    n = "model.layers.0.mlp.up_proj.weight"
    rel = float((x[n] - sd[n]).pow(2).mean().sqrt() / sd[n].pow(2).mean().sqrt())
    assert 0.08 < rel < 0.12
    assert not torch.equal(attacks.noise(sd, 0.1, seed=4)[n], x[n])


def _folder(tmp_path, name, seed):
    d = tmp_path / name
    d.mkdir()
    write_safetensors(d / "model.safetensors", _sd(seed))
    (d / "config.json").write_text(json.dumps({"num_attention_heads": 4, "num_key_value_heads": 2}))
    return d


def test_the_command_writes_a_labelled_folder_and_refuses_bad_input(tmp_path, capsys):
    m, o = _folder(tmp_path, "m", 7), _folder(tmp_path, "o", 8)
    assert (
        main(
            [
                "fingerprint",
                "attack",
                "--attack",
                "merge",
                str(m),
                "--with",
                str(o),
                "-o",
                str(tmp_path / "x"),
                "--json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["attack"] == "merge" and res["relative_change"] > 0
    out = Checkpoint(tmp_path / "x")
    meta = out.metadata[tmp_path / "x" / "model.safetensors"]
    assert meta["fpcore_attack"] == "merge" and "evaluat" in meta["fpcore_attack_note"]
    assert (tmp_path / "x" / "config.json").read_text() == (m / "config.json").read_text()
    want = attacks.merge(_sd(7), _sd(8), 0.5)
    assert all(torch.equal(out.get(n), want[n]) for n in want)
    # an existing output is refused; a merge without --with writes nothing
    assert main(["fingerprint", "attack", "--attack", "int8", str(m), "-o", str(tmp_path / "x")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["fingerprint", "attack", "--attack", "ties", str(m), "--with", str(o), "-o", str(tmp_path / "y")]) == 2
    assert "--base" in capsys.readouterr().err and not (tmp_path / "y").exists()
    assert main(["fingerprint", "attack", "--attack", "int8", str(tmp_path / "nope"), "-o", str(tmp_path / "z")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fpcore-tmp-")]
