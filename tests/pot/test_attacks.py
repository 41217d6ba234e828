"""Every attack forges a complete, internally consistent record, and the combined verdict rejects it."""

import pytest

from fpcore.pot.attacks import ATTACKS, forge
from fpcore.pot.record import open_record
from fpcore.pot.verify import check_integrity, verify
from tests.pot.conftest import FAST, SMALL


@pytest.fixture(scope="module")
def forged(honest, tmp_path_factory):
    path, model, train, _ = honest
    root = tmp_path_factory.mktemp("forged")
    return {name: forge(name, root / name, final=model, honest=path, data=train, cfg=SMALL, seed=0) for name in ATTACKS}


def final_params(rec):
    ck = rec.checkpoint(len(rec.entries) - 1)
    return {k: v for k, v in ck.items() if k.startswith("param.")}


@pytest.mark.parametrize("name", [n for n in ATTACKS if n != "tamper"])
def test_forgery_is_a_complete_record_ending_on_the_stolen_model(forged, honest, name):
    rec = open_record(forged[name].path)
    assert check_integrity(rec).passed  # the forger writes a well-formed, hash-chained record
    model = honest[1]
    fin = final_params(rec)
    assert all((fin[f"param.{n}"] == p.detach()).all() for n, p in model.named_parameters())


def test_interpolation_is_rejected_by_replay(forged, honest):
    for name in ("interp", "interp-perm"):
        v = verify(forged[name].path, honest[2], checks=FAST, seed=0)
        assert not v.accepted
        rep = v.checks["replay"]
        assert rep.passed is False and not rep.figures["top_q_passed"] and not rep.figures["random_passed"]
        assert rep.figures["worst_over_delta"] > 1e3
    # the rank-permuted start passes the KS test: only replay catches it
    v = verify(forged["interp-perm"].path, honest[2], checks=("integrity", "init"), seed=0)
    assert v.checks["init"].passed and not v.checks["init"].figures["seed_reproduces"]


def test_blindfolded_passes_top_q_but_not_random_segments(forged, honest):
    v = verify(forged["blindfolded"].path, honest[2], checks=FAST, seed=0)
    assert not v.accepted
    rep = v.checks["replay"].figures
    assert rep["top_q_passed"] is True  # top-Q alone would have accepted it
    assert rep["random_passed"] is False and rep["worst_over_delta"] > 1e3
    v = verify(forged["blindfolded"].path, honest[2], checks=FAST, r=0, seed=0)
    assert v.checks["replay"].figures["top_q_passed"] and not v.checks["replay"].figures["profile_passed"]


def test_tampering_is_caught(forged, honest):
    v = verify(forged["tamper"].path, honest[2], checks=FAST, seed=0)
    assert not v.accepted and v.checks["integrity"].passed is False
    assert "checkpoint entry" in v.checks["integrity"].reason
    v = verify(forged["tamper-resealed"].path, honest[2], checks=FAST, seed=0)
    assert v.checks["integrity"].passed and not v.accepted and v.checks["replay"].passed is False
    assert v.checks["replay"].figures["top_q_passed"] is False


@pytest.mark.parametrize("name", ["adv-spoof", "penalty", "reverse-noise"])
def test_other_attacks_are_rejected(forged, honest, name):
    v = verify(forged[name].path, honest[2], checks=FAST, seed=0)
    assert not v.accepted, name
    if name == "adv-spoof":
        assert v.checks["data"].passed is False  # its batches index perturbed samples
    else:
        assert v.checks["replay"].passed is False


def test_unknown_attack(honest):
    with pytest.raises(ValueError, match="unknown attack 'nope'"):
        forge("nope", "x", final=honest[1], data=honest[2], cfg=SMALL, seed=0)
