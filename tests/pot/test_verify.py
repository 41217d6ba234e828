"""Verifiers on an honest record: what they accept, their figures against plain-torch references."""

import numpy as np
import pytest
import torch

from fpcore.pot.matching import check_matching
from fpcore.pot.record import open_record
from fpcore.pot.replay import Replayer
from fpcore.pot.task import Dataset
from fpcore.pot.verify import (
    _distances,
    check_init,
    check_replay,
    top_q,
    update_profile,
    verify,
)
from tests.pot.conftest import FAST


def params(ck):
    return [ck[k] for k in sorted(ck) if k.startswith("param.")]


def flat1(ts):
    """One flat float32 vector in a list: the form the replay verifier works on."""
    return [torch.cat([t.float().flatten() for t in ts])]


def flat(ts):
    return torch.cat([t.double().flatten() for t in ts])


def test_honest_record_is_accepted(honest):
    path, _, train, test = honest
    v = verify(path, train, test_data=test, checks=FAST, seed=0)
    assert v.accepted, v.reasons()
    rep = v.checks["replay"].figures
    assert rep["replayed"] >= len(rep["top_q"]) >= 2 and len(rep["random"]) == 2
    assert rep["worst_over_delta"] <= 1.0 and rep["profile_passed"]
    assert v.checks["init"].figures["seed_reproduces"] is True


def test_honest_trajectory_matching_passes(honest):
    path, _, _, test = honest
    res = check_matching(open_record(path), test, seed=0)
    assert res.passed, res.reason
    f = res.figures
    assert f["matching_loss_after"] < f["matching_loss_before"]  # distillation reduced the matching loss
    assert f["accuracy"] >= 0.8 and len(f["accuracies"]) == 3


def test_replay_is_bit_exact_here(honest):
    path, _, train, _ = honest
    rec = open_record(path)
    rp = Replayer(rec, train)
    for j in (0, 7, len(rec.entries) - 2):
        got = rp(j)
        want = flat1(params(rec.checkpoint(j + 1)))
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_profile_and_distances_match_torch(honest):
    """trajectory_stats figures (fpcore ops) against plain torch on the same checkpoints; the profile the
    verifier measures from the checkpoints (in chunks of any size, vectors read into reused memory) is
    the Recorder's committed one, bit for bit."""
    from fpcore.pot.verify import checkpoint_profile

    path, _, train, _ = honest
    rec = open_record(path)
    prof = update_profile(rec)
    for chunk in (1, 3, 32, 10_000):
        got = checkpoint_profile(open_record(path), chunk=chunk)
        for m in ("l1", "l2", "linf", "cosine"):
            assert np.array_equal(got[m], np.asarray(rec.doc["update_sizes"][m])), (chunk, m)
    for i in (0, 5, len(rec.entries) - 2):
        a, b = flat(params(rec.checkpoint(i))), flat(params(rec.checkpoint(i + 1)))
        d = b - a
        assert prof["l2"][i] == pytest.approx(float(d.norm()), rel=1e-6)
        assert prof["l1"][i] == pytest.approx(float(d.abs().sum()), rel=1e-6)
        assert prof["linf"][i] == pytest.approx(float(d.abs().max()), rel=1e-6)
        cos = 1 - float(a @ b / (a.norm() * b.norm()))
        assert prof["cosine"][i] == pytest.approx(cos, rel=1e-3, abs=1e-9)
    # replayed from a perturbed start: distances and update cosine against torch
    j = 3
    reached = flat1([t + 0.01 * torch.ones_like(t) for t in params(rec.checkpoint(j + 1))])
    typical = {"l1": 2.0, "l2": 0.5, "linf": 0.25}
    dist = _distances(rec, [j], [reached], typical)
    rec_next, start = flat(params(rec.checkpoint(j + 1))), flat(params(rec.checkpoint(j)))
    diff = flat(reached) - rec_next
    assert dist["l2"][0] == pytest.approx(float(diff.norm()) / 0.5, rel=1e-5)
    assert dist["l1"][0] == pytest.approx(float(diff.abs().sum()) / 2.0, rel=1e-5)
    assert dist["linf"][0] == pytest.approx(float(diff.abs().max()) / 0.25, rel=1e-5)
    u, w = flat(reached) - start, rec_next - start
    assert dist["cosine"][0] == pytest.approx(1 - float(u @ w / (u.norm() * w.norm())), rel=1e-3)


def test_top_q_takes_the_largest_per_epoch_and_metric():
    epochs = np.array([0, 0, 0, 1, 1, 1])
    prof = {
        "l1": np.array([1, 5, 2, 3, 1, 1.0]),
        "l2": np.array([1, 5, 2, 1, 1, 4.0]),
        "linf": np.array([9, 1, 1, 1, 1, 1.0]),
        "cosine": np.array([1, 5, 2, 3, 1, 1.0]),
    }
    assert top_q(prof, epochs, 1) == [0, 1, 3, 5]
    assert top_q(prof, epochs, 3) == [0, 1, 2, 3, 4, 5]


def test_replay_rejects_a_checkpoint_off_the_trajectory(honest, tmp_path):
    """A record whose segment does not replay fails, and the verifier names the segment."""
    path, _, train, _ = honest
    rec = open_record(path)
    j = 4
    ck = rec.checkpoint(j + 1)
    for k in ck:
        if k.startswith("param."):
            ck[k] = ck[k] * 1.001  # the cached copy only: files untouched
    res = check_replay(rec, train, q=len(rec.entries), r=0, seed=0)  # every segment replayed
    assert res.passed is False
    assert set(res.figures["failed_segments"]) == {j, j + 1}
    assert f"segment {j}" in res.reason or f"segment {j + 1}" in res.reason


def test_init_check(honest):
    path, model, _, _ = honest
    rec = open_record(path)
    assert check_init(rec).passed
    # a trained model declared as theta_0 does not fit U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    trained = {f"param.{n}": p.detach().clone() for n, p in model.named_parameters()}
    rec._cache[0] = trained
    res = check_init(rec)
    assert res.passed is False and res.figures["p_min"] < 1e-6 and not res.figures["seed_reproduces"]


def test_other_data_is_refused(honest):
    path, _, train, test = honest
    other = Dataset(train.X.clone(), train.y.clone(), train.source)
    other.X[0, 0] += 1.0 / 16
    v = verify(path, other, test_data=test, checks=FAST, seed=0)
    assert not v.accepted and v.checks["data"].passed is False
    assert v.checks["replay"].passed is None and "index other data" in v.checks["replay"].reason


def test_unknown_check_is_refused(honest):
    with pytest.raises(ValueError, match="unknown check"):
        verify(honest[0], honest[2], checks=("integrity", "vibes"))


def test_momentum_state_is_recorded_and_replayed(tmp_path, digits):
    """Optimiser state (SGD momentum buffers) is part of each checkpoint and replay restores it."""
    from fpcore.pot.train import RunConfig, train_recorded

    cfg = RunConfig(hidden=16, epochs=1, momentum=0.9, every=5)
    path, _, _ = train_recorded(tmp_path / "m", cfg, digits[0], 1)
    rec = open_record(path)
    ck = rec.checkpoint(3)
    assert {k for k in ck if k.startswith("optim.")} == {
        f"optim.{n}.momentum_buffer" for n in ("0.weight", "0.bias", "2.weight", "2.bias")
    }
    rp = Replayer(rec, digits[0])
    assert all(torch.equal(a, b) for a, b in zip(rp(3), flat1(params(rec.checkpoint(4))), strict=True))
    # without the buffers the same segment lands elsewhere: replay really uses them
    for k in [k for k in ck if k.startswith("optim.")]:
        del rec._cache[3][k]
    assert not all(torch.equal(a, b) for a, b in zip(rp(3), flat1(params(rec.checkpoint(4))), strict=True))
    assert check_replay(open_record(path), digits[0], seed=0).passed
