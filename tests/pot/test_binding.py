"""Binding: a record is accepted for a model only when its final checkpoint is that model, bit for bit."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fpcore.cli import main
from fpcore.io import CheckpointError
from fpcore.pot.binding import check_binding, expected_names, first_difference, open_model, save_model
from fpcore.pot.record import open_record
from fpcore.pot.task import register_builder
from fpcore.pot.train import train_plain
from fpcore.pot.verify import verify
from tests.pot.conftest import SMALL

INTEGRITY = ("integrity",)


@pytest.fixture(scope="module")
def alice(honest, tmp_path_factory):
    """The honest run's final model as a safetensors file (state_dict names)."""
    return save_model(honest[1], tmp_path_factory.mktemp("bind") / "alice.safetensors")


def edited(src, dest, edit):
    t = load_file(src)
    edit(t)
    save_file(t, dest)
    return dest


def test_own_model_is_bound(honest, alice):
    v = verify(honest[0], honest[2], checks=INTEGRITY, model=alice)
    b = v.checks["binding"]
    assert v.accepted and b.passed and v.model == str(alice)
    assert b.figures["tensors_compared"] == 4 and b.figures["problems"] == 0
    assert b.figures["final_step"] == open_record(honest[0]).steps[-1]
    # a state_dict in memory is the same claim
    assert verify(honest[0], honest[2], checks=INTEGRITY, model=honest[1].state_dict()).accepted


def test_substitution_is_rejected(honest, digits):
    """Another run of the same recipe: the honest record is valid, but it is not this model's record."""
    other = train_plain(SMALL, digits[0], 99)[0]
    v = verify(honest[0], honest[2], checks=("integrity", "data", "init", "replay"), model=other.state_dict(), seed=0)
    b = v.checks["binding"]
    assert not v.accepted and b.passed is False
    assert "tensor '0.weight' differs from the record's final checkpoint" in b.reason
    assert b.figures["problems"] == 4
    # the expensive checks are skipped, and say why
    assert v.checks["replay"].passed is None and "does not end at the model" in v.checks["replay"].reason


def test_one_element_one_ulp_is_rejected(honest, alice, tmp_path):
    def nudge(t):
        w = t["2.weight"].view(-1)
        w[37] = torch.nextafter(w[37], torch.tensor(1.0))

    m = edited(alice, tmp_path / "m.safetensors", nudge)
    b = verify(honest[0], honest[2], checks=INTEGRITY, model=m).checks["binding"]
    assert b.passed is False and b.figures["problems"] == 1
    cols = honest[1][2].weight.shape[1]
    assert "tensor '2.weight' differs from the record's final checkpoint (step" in b.reason
    assert f"in 1 of {honest[1][2].weight.numel()} elements, first at index [{37 // cols}, {37 % cols}]" in b.reason


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.pop("2.bias"), "the model lacks tensor '2.bias', float32 (10,)"),
        (lambda t: t.update(extra=torch.zeros(3)), "the model has tensor 'extra', which the record's model does not"),
        (
            lambda t: t.update({"0.weight": t["0.weight"].double()}),
            "tensor '0.weight' is float64 (32, 64) in the model",
        ),
        (lambda t: t.update({"0.weight": t["0.weight"].bfloat16()}), "tensor '0.weight' is bfloat16 (32, 64)"),
        (lambda t: t.update({"2.weight": t["2.weight"][:, :16].contiguous()}), "'2.weight' is float32 (10, 16) in"),
    ],
)
def test_missing_extra_and_mismatched_tensors_are_named(honest, alice, tmp_path, edit, message):
    m = edited(alice, tmp_path / "m.safetensors", edit)
    v = verify(honest[0], honest[2], checks=INTEGRITY, model=m)
    assert not v.accepted and message in v.checks["binding"].reason, v.checks["binding"].reason


def test_another_architecture_names_the_first_mismatching_tensor(honest, digits, tmp_path):
    from dataclasses import replace

    wide = train_plain(replace(SMALL, hidden=48, epochs=1), digits[0], 0)[0]
    m = save_model(wide, tmp_path / "wide.safetensors")
    b = verify(honest[0], honest[2], checks=INTEGRITY, model=m).checks["binding"]
    assert b.passed is False
    assert "tensor '0.weight' is float32 (48, 64) in the model, float32 (32, 64) in the record's final" in b.reason
    assert "(4 problems in all)" in b.reason


def test_first_difference_compares_bits():
    a = torch.tensor([0.0, 1.0, float("nan"), 2.0])
    assert first_difference(a, a.clone()) == (0, -1)  # the same NaN is the same bits
    b = a.clone()
    b[0] = -0.0  # equal as values, different bits
    assert first_difference(a, b) == (1, 0)
    c = a.clone()
    c[3] = 3.0
    c[1] = 5.0
    assert first_difference(a, c) == (2, 1)
    e = torch.empty(0, 3)
    assert first_difference(e, e) == (0, -1)


@register_builder("tied-test")
def _tied() -> nn.Module:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(5, 3)
            self.head = nn.Linear(3, 5, bias=False)
            self.head.weight = self.embed.weight
            self.norm = nn.LayerNorm(3)
            self.register_buffer("scale", torch.ones(3))
            self.register_buffer("cache", torch.zeros(2), persistent=False)

    return Tied()


def _stub_record(model: nn.Module):
    """What check_binding reads of a record, for a model of the tied-test builder."""
    ck = {f"param.{n}": p.detach().clone() for n, p in model.named_parameters()}
    ck |= {f"buffer.{n}": b.detach().clone() for n, b in model.named_buffers()}
    return SimpleNamespace(
        doc={"model": {"builder": "tied-test", "args": {}}},
        entries=[{"sha256": "0"}, {"sha256": "1"}],
        steps=[0, 4],
        checkpoint=lambda i: ck,
    )


def test_tied_weights_and_buffers():
    """Tied tensors: one name suffices (as save_pretrained keeps one), every name held must match;
    persistent buffers are required, non-persistent ones are not part of a state_dict."""
    torch.manual_seed(0)
    m = _tied()
    rec = _stub_record(m)
    groups = {key: names for key, _, names in expected_names(rec)}
    assert groups == {
        "param.embed.weight": ["embed.weight", "head.weight"],
        "param.norm.weight": ["norm.weight"],
        "param.norm.bias": ["norm.bias"],
        "buffer.scale": ["scale"],
    }
    sd = {n: t.detach().clone() for n, t in m.state_dict().items()}
    assert check_binding(rec, open_model(sd)).passed
    one = {n: t for n, t in sd.items() if n != "head.weight"}
    assert check_binding(rec, open_model(one)).passed
    neither = {n: t for n, t in sd.items() if n not in ("head.weight", "embed.weight")}
    r = check_binding(rec, open_model(neither))
    assert not r.passed and "lacks tensor 'embed.weight' (or its tied names 'head.weight')" in r.reason
    bad_alias = dict(sd, **{"head.weight": sd["head.weight"] + 1})
    r = check_binding(rec, open_model(bad_alias))
    assert not r.passed and "tensor 'head.weight' differs" in r.reason
    no_buffer = {n: t for n, t in sd.items() if n != "scale"}
    assert "lacks tensor 'scale'" in check_binding(rec, open_model(no_buffer)).reason
    with_cache = dict(sd, cache=torch.zeros(2))
    assert "the model has tensor 'cache'" in check_binding(rec, open_model(with_cache)).reason


def test_save_model_stores_tied_tensors_once(tmp_path):
    m = _tied()
    path = save_model(m, tmp_path / "t.safetensors")
    assert sorted(load_file(path)) == ["embed.weight", "norm.bias", "norm.weight", "scale"]
    assert check_binding(_stub_record(m), open_model(path)).passed
    with pytest.raises(FileExistsError):
        save_model(m, path)


def test_bad_model_input(honest, tmp_path):
    with pytest.raises(CheckpointError, match="no such file or folder"):
        verify(honest[0], honest[2], checks=INTEGRITY, model=tmp_path / "nope.safetensors")
    with pytest.raises(TypeError, match=r"model\['w'\] is list, expected a tensor"):
        verify(honest[0], honest[2], checks=INTEGRITY, model={"w": [1.0]})


def test_cli_verify_with_model(honest, alice, tmp_path, capsys):
    rec = str(honest[0])
    assert main(["pot", "verify", rec, "--model", str(alice), "--checks", "integrity,data", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["accepted"] and res["model"] == str(alice) and res["model_checked"]
    assert res["checks"]["binding"]["passed"] is True
    m = edited(alice, tmp_path / "m.safetensors", lambda t: t["0.bias"].mul_(2))
    assert main(["pot", "verify", rec, "--model", str(m), "--checks", "integrity"]) == 1
    out = capsys.readouterr().out
    assert f"{rec} for model {m}: REJECTED" in out and "[FAIL] binding: the record does not end at" in out
    # without --model the output says plainly that no model was checked
    assert main(["pot", "verify", rec, "--checks", "integrity"]) == 0
    out = capsys.readouterr().out
    assert "NO MODEL CHECKED" in out and "no model was checked" in out
    assert main(["pot", "verify", rec, "--checks", "integrity", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["model"] is None and res["model_checked"] is False and res["checks"]["binding"]["passed"] is None


def test_cli_bad_model_exits_2_without_traceback(honest, tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}")
    for m in (tmp_path / "missing.safetensors", junk):
        p = subprocess.run(
            [sys.executable, "-m", "fpcore.cli", "pot", "verify", str(honest[0]), "--model", str(m)],
            capture_output=True,
            text=True,
        )
        assert p.returncode == 2, p.stderr
        assert p.stderr.startswith("fpcore pot: error:") and str(m) in p.stderr and "Traceback" not in p.stderr


def test_cli_train_saves_the_model(tmp_path, capsys):
    rec, m = tmp_path / "rec", tmp_path / "m.safetensors"
    args = ["pot", "train", "-o", str(rec), "--epochs", "1", "--save-model", str(m), "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["model"] == str(m)
    assert main(["pot", "verify", str(rec), "--model", str(m), "--checks", "integrity", "--quiet"]) == 0
    # an existing model file is refused before any training, and nothing is written
    assert main(["pot", "train", "-o", str(tmp_path / "rec2"), "--save-model", str(m)]) == 2
    assert not (tmp_path / "rec2").exists()


def test_sharded_model_folder(honest, alice, tmp_path):
    """A model folder with a shard index binds like the single file (names, not files, are compared)."""
    t = load_file(alice)
    folder = tmp_path / "sharded"
    folder.mkdir()
    shards = {"model-00001-of-00002.safetensors": ["0.weight", "2.bias"], "model-00002-of-00002.safetensors": []}
    shards["model-00002-of-00002.safetensors"] = [n for n in t if n not in shards["model-00001-of-00002.safetensors"]]
    for f, names in shards.items():
        save_file({n: t[n] for n in names}, folder / f)
    wm = {n: f for f, names in shards.items() for n in names}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    v = verify(honest[0], honest[2], checks=INTEGRITY, model=folder)
    assert v.accepted and v.checks["binding"].figures["tensors_compared"] == 4
    t2 = dict(t)
    t2["2.bias"] = t["2.bias"].clone()
    t2["2.bias"][9] += 1
    save_file(
        {n: t2[n] for n in shards["model-00001-of-00002.safetensors"]}, folder / "model-00001-of-00002.safetensors"
    )
    b = verify(honest[0], honest[2], checks=INTEGRITY, model=folder).checks["binding"]
    assert b.passed is False and "tensor '2.bias' differs" in b.reason and "first at index [9]" in b.reason
