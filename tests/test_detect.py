"""White-box detection (fpcore.detect and `fpcore detect`): verdicts, exit codes, lineage, JSON."""

import json

import pytest
import torch

from fpcore import projection, stamping
from fpcore.cli import main
from fpcore.detect import ALPHA_NULL, RANK, detect, idiosyncratic
from fpcore.io import Checkpoint, write_safetensors
from tests.test_stamping import base_tensors, make_model, perturbed

Q = "model.layers.0.q.weight"


@pytest.fixture
def fam(tmp_path):
    base = base_tensors()
    b = make_model(tmp_path / "base", base)
    tuned = make_model(tmp_path / "tuned", perturbed(base, 1, 0.05))
    vec = tmp_path / "fp.safetensors"
    stamping.extract(tuned, b, vec)
    down = make_model(tmp_path / "down", perturbed(base, 2, 0.02, skip=()))
    stamped = {a: tmp_path / f"stamped_{a}" for a in (0.5, 1.0)}
    for a, p in stamped.items():
        stamping.stamp([(vec, a)], [down], p)
    return {
        "base": b,
        "vec": vec,
        "down": down,
        "stamped": stamped,
        "independent": make_model(tmp_path / "indep", perturbed(base, 5, 0.05)),
        "tensors": base,
        "tmp": tmp_path,
    }


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_stamped_model_is_detected(fam, alpha, capsys):
    r = detect(fam["vec"], fam["stamped"][alpha], fam["base"])
    assert r.detected and r.alpha_hat == pytest.approx(alpha, abs=0.1) and r.cosine > 0.5
    assert r.tensors == 3 and r.elements == 32 * 8 + 8 * 8 + 16 * 8
    rc = main(["detect", str(fam["vec"]), str(fam["stamped"][alpha]), "--base", str(fam["base"])])
    assert rc == 0
    assert "fingerprint found" in capsys.readouterr().out


def test_figures_match_projection_and_each_tensor_is_read_once(fam, monkeypatch):
    """Every tensor of the three checkpoints is read once and its pages handed back once, whole
    (release_range after both the raw and the calibrated sums are taken from that one read)."""
    chunks = {}
    release = Checkpoint.release_range

    def recording(self, name, offset, nbytes):
        chunks.setdefault((str(self.path), name), []).append((offset, nbytes))
        return release(self, name, offset, nbytes)

    monkeypatch.setattr(Checkpoint, "release_range", recording)
    r = detect(fam["vec"], fam["stamped"][1.0], fam["base"])
    names = [t.name for t in r.per_tensor]
    assert len(chunks) == 3 * len(names)
    for (path, name), got in chunks.items():
        assert got == [(0, Checkpoint(path).info(name).nbytes)]
    monkeypatch.undo()
    s, b, v = Checkpoint(fam["stamped"][1.0]), Checkpoint(fam["base"]), Checkpoint(fam["vec"])
    want = projection([s.get(n) for n in names], [b.get(n) for n in names], [v.get(n) for n in names])
    assert r.alpha_hat == pytest.approx(want.alpha_hat, rel=1e-6)
    assert r.cosine == pytest.approx(want.cosine, rel=1e-6)
    one = projection(s.get(Q), b.get(Q), v.get(Q))
    q = next(t for t in r.per_tensor if t.name == Q)
    assert (q.alpha_hat, q.cosine) == pytest.approx((one.alpha_hat, one.cosine), rel=1e-6)


@pytest.mark.parametrize("which", ["down", "independent", "base"])
def test_unstamped_and_independent_models_are_not_detected(fam, which, capsys):
    r = detect(fam["vec"], fam[which], fam["base"])
    assert not r.detected and r.alpha_star < ALPHA_NULL and r.p > 0.5
    assert r.verdict.startswith("no fingerprint")
    assert main(["detect", str(fam["vec"]), str(fam[which]), "--base", str(fam["base"])]) == 1
    assert "no fingerprint" in capsys.readouterr().out


def test_wrong_architecture_is_refused(fam, capsys):
    bad = dict(fam["tensors"])
    bad[Q] = torch.zeros(8, 9).bfloat16()
    m = make_model(fam["tmp"] / "bad", bad)
    assert main(["detect", str(fam["vec"]), str(m), "--base", str(fam["base"])]) == 2
    err = capsys.readouterr().err
    assert "fpcore detect: error:" in err and f"tensor '{Q}' has shape (8, 9)" in err
    # the same model given as BASE: the base must be the vector's base architecture exactly
    assert main(["detect", str(fam["vec"]), str(fam["down"]), "--base", str(m)]) == 2
    assert f"tensor '{Q}'" in capsys.readouterr().err
    missing = dict(fam["tensors"])
    del missing["model.layers.0.mlp.weight"]
    folder = fam["tmp"] / "missing"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors", missing)
    assert main(["detect", str(fam["vec"]), str(folder), "--base", str(fam["base"])]) == 2
    assert "'model.layers.0.mlp.weight' of the vector's base is missing" in capsys.readouterr().err


def test_vocabulary_growth_scored_on_shared_rows(fam):
    grown = perturbed(fam["tensors"], 2, 0.02, skip=())
    e = "model.embed_tokens.weight"
    grown[e] = torch.cat([grown[e], torch.ones(2, 8).bfloat16()])
    g = make_model(fam["tmp"] / "grown", grown)
    stamping.stamp([(fam["vec"], 1.0)], [g], fam["tmp"] / "grown_stamped")
    r = detect(fam["vec"], fam["tmp"] / "grown_stamped", fam["base"])
    assert r.detected and r.alpha_hat == pytest.approx(1.0, abs=0.1)
    assert any("34 rows, base 32" in n for n in r.notes)
    assert next(t for t in r.per_tensor if t.name == e).note == "shared 32 of 34 rows"


def test_json_output(fam, capsys):
    args = ["detect", str(fam["vec"]), str(fam["stamped"][1.0]), "--base", str(fam["base"]), "--json"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    for key in ("detected", "verdict", "p", "alpha_hat", "cosine", "alpha_star", "se", "z", "null", "notes"):
        assert key in res, key
    assert res["command"] == "detect" and res["detected"] is True and res["p"] < 1e-6
    assert res["null"] == {"alpha_null": ALPHA_NULL, "rank_removed": RANK, "significance": 1e-6}
    white = res["channels"]["white_box"]
    assert white["p"] == res["p"] and white["statistic"] == res["z"] and white["figures"]["alpha_star"] > 0.9
    assert res["suspect"] == str(fam["stamped"][1.0]) and "per_tensor" not in res
    assert main(args + ["--tensors"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in res["per_tensor"]] == Checkpoint(fam["vec"]).names()
    assert set(res["per_tensor"][0]) == {"name", "alpha_hat", "cosine", "elements", "note"}
    assert main(["detect", str(fam["vec"]), str(fam["down"]), "--base", str(fam["base"]), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["detected"] is False


def test_text_output_lists_tensors(fam, capsys):
    assert main(["detect", str(fam["vec"]), str(fam["stamped"][0.5]), "--base", str(fam["base"]), "--tensors"]) == 0
    out = capsys.readouterr().out
    assert f"  {Q}: alpha_hat" in out
    assert main(["detect", str(fam["vec"]), str(fam["stamped"][0.5]), "--base", str(fam["base"]), "--quiet"]) == 0
    assert capsys.readouterr().out == ""


def test_calibrated_figures_by_hand(fam):
    """alpha*, its sign-flip standard error, z and p recomputed here from the tensors and tau*."""
    from fpcore.verdict import normal_tail

    vec, s, b = Checkpoint(fam["vec"]), Checkpoint(fam["stamped"][0.5]), Checkpoint(fam["base"])
    num = den = var = 0.0
    for n in vec.names():
        t = idiosyncratic(vec.get(n), b.get(n))
        d = s.get(n).double() - b.get(n).double()
        num, den, var = num + float((d * t).sum()), den + float((t * t).sum()), var + float((d * d * t * t).sum())
    r = detect(fam["vec"], fam["stamped"][0.5], fam["base"])
    assert r.alpha_star == pytest.approx(num / den) and r.se == pytest.approx(var**0.5 / den)
    assert r.z == pytest.approx((num / den - ALPHA_NULL) / (var**0.5 / den))
    assert r.p == pytest.approx(normal_tail(r.z)) and r.alpha_star == pytest.approx(0.5, abs=0.1)


def test_idiosyncratic_part_is_orthogonal_to_scaled_base_and_top_directions():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(64, 48, generator=g)
    low = torch.randn(64, 2, generator=g) @ torch.randn(2, 48, generator=g)
    tau = 0.5 * base * torch.rand(1, 48, generator=g) + 3 * low + 0.1 * torch.randn(64, 48, generator=g)
    t = idiosyncratic(tau, base, rank=4)
    # exactly orthogonal to the base scaled per row (the last sweep); per column to 0.3 % of what tau had
    assert float((t * base).sum(1).abs().max()) < 1e-9 * float(tau.norm() * base.norm())
    assert float((t * base).sum(0).abs().max()) < 3e-3 * float((tau * base).sum(0).abs().max())
    assert float(t.norm()) < float(tau.norm()) and float(t.norm()) > 0
    # a tensor that only rescales the base per column leaves nothing behind
    assert float(idiosyncratic(base * torch.rand(1, 48, generator=g), base, rank=0).norm()) < 1e-6 * float(base.norm())
