"""Soundness of the replay check (the chance a forger is missed; R chosen for a target), and replay on
Dask workers giving the serial verdict."""

import math
import shutil

import pytest

from fpcore.pot.record import open_record
from fpcore.pot.soundness import choose_r, faked_segments, miss_probability
from fpcore.pot.verify import check_replay, verify

from .conftest import FAST


def test_miss_probability_against_hand_computed_cases():
    # 10 segments, none top-Q, half faked, 2 drawn: C(5,2)/C(10,2) = 10/45
    assert miss_probability(10, 0, 2, 0.5) == pytest.approx(10 / 45)
    # 2 of 12 are top-Q: pool 10, F = 6 faked (capped to the pool), 3 drawn: C(4,3)/C(10,3) = 4/120
    assert miss_probability(12, 2, 3, 0.5) == pytest.approx(4 / 120)
    assert miss_probability(10, 0, 0, 0.5) == 1.0  # nothing drawn: never caught
    assert miss_probability(10, 0, 6, 0.5) == 0.0  # more draws than honest segments
    assert faked_segments(168, 0.05) == 9 and faked_segments(10, 0.5) == 5
    # below the with-replacement figure, and falling with R
    for r in range(1, 30):
        p = miss_probability(168, 8, r, 0.5)
        assert p <= (1 - 84 / 160) ** r + 1e-15
        assert p < miss_probability(168, 8, r - 1, 0.5)
    with pytest.raises(ValueError, match="forged fraction"):
        miss_probability(10, 0, 2, 0.0)


def test_choose_r_is_the_fewest_that_meet_the_target():
    for n, q, f, target in [(168, 8, 0.5, 1e-6), (168, 8, 0.05, 1e-3), (40, 3, 0.5, 1e-2), (1000, 20, 0.1, 1e-6)]:
        r = choose_r(n, q, f, target)
        assert miss_probability(n, q, r, f) <= target
        assert r == 0 or miss_probability(n, q, r - 1, f) > target
    assert choose_r(168, 8, 0.5, 1e-6) <= math.ceil(math.log(1e-6) / math.log(0.5))


def test_soundness_option_sets_r_and_the_verdict_states_the_miss_chance(honest):
    path, _, train, _ = honest
    rec = open_record(path)
    res = check_replay(rec, train, q=1, seed=3, soundness=1e-4)
    s = res.figures["soundness"]
    n, q = res.figures["segments"], len(res.figures["top_q"])
    assert s["r"] == len(res.figures["random"]) == choose_r(n, q, 0.5, 1e-4)
    assert s["miss_f50"] <= 1e-4 and s["miss_f50"] == miss_probability(n, q, s["r"], 0.5)
    assert s["miss_f05"] == miss_probability(n, q, s["r"], 0.05)
    assert "missed with chance" in res.reason and res.passed


def test_replay_on_a_local_cluster_gives_the_serial_verdict(honest):
    pytest.importorskip("distributed")
    path, _, train, _ = honest
    serial = verify(path, train, checks=FAST, seed=5, soundness=1e-3)
    dist = verify(path, train, checks=FAST, seed=5, soundness=1e-3, workers=2)
    assert serial.accepted and dist.accepted
    a, b = serial.checks["replay"].figures, dist.checks["replay"].figures
    assert a["top_q"] == b["top_q"] and a["random"] == b["random"] and a["failed_segments"] == b["failed_segments"]
    assert b["worst_over_delta"] == pytest.approx(a["worst_over_delta"], rel=1e-3, abs=1e-9)
    # a segment that does not replay is caught on the cluster too (the verifier's copy of checkpoint j + 1
    # changed: the workers replay from the files, the verifier measures against its copy)
    from fpcore._dask import cluster_client

    rec = open_record(path)
    j = 4
    ck = rec.checkpoint(j + 1)
    for k in ck:
        if k.startswith("param."):
            ck[k] = ck[k] * 1.001
    with cluster_client(None, 2) as (client, _, _, threads, _):
        res = check_replay(rec, train, q=len(rec.entries), r=0, seed=0, cluster=(client, threads))
    assert res.passed is False and j in res.figures["failed_segments"]


def test_step_digests_are_recorded_checked_and_locate_the_first_wrong_step(honest, tmp_path):
    from fpcore.pot.record import STEP_DIGEST
    from fpcore.pot.verify import check_integrity

    path, _, train, _ = honest
    rec = open_record(path)
    sd = rec.doc["step_digests"]
    assert sd["algorithm"] == STEP_DIGEST["algorithm"]
    assert len(rec.step_digests()) == 16 * int(rec.doc["steps"])
    # replay here is bit-exact: every replayed step's digest equals the record's
    res = check_replay(rec, train, q=1, r=3, seed=0)
    d = res.figures["step_digests"]
    assert d["recorded"] and d["bit_exact_segments"] == res.figures["replayed"] and not d["first_differing_step"]
    # a checkpoint off the trajectory: the replay from it differs at its first step, and the reason says so
    j = 4
    ck = rec.checkpoint(j + 1)
    for k in ck:
        if k.startswith("param."):
            ck[k] = ck[k] * 1.001
    res = check_replay(rec, train, q=len(rec.entries), r=0, seed=0)
    first = res.figures["step_digests"]["first_differing_step"]
    assert first == {str(j + 1): rec.steps[j + 1]}
    # and the record's committed update sizes no longer match these checkpoints (segments j and j + 1)
    assert res.figures["committed_sizes"]["mismatched"] == [j, j + 1]
    assert "committed update size is not its checkpoints'" in res.reason
    # the digests file is part of the sealed record: one flipped byte fails integrity, naming it
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    f = bad / sd["file"]
    raw = bytearray(f.read_bytes())
    raw[100] ^= 1
    f.write_bytes(bytes(raw))
    integ = check_integrity(open_record(bad))
    assert integ.passed is False and "step digests file step_digests.bin: sha256 mismatch" in integ.reason


def test_a_light_record_verifies_from_the_store_and_refuses_a_wrong_checkpoint(honest, tmp_path):
    """pot split leaves the sealed record (digests, committed update sizes, batches); the verifier fetches
    only the checkpoints its checks use, each checked against the sha256 the record sealed."""
    from fpcore.cli import main
    from fpcore.pot.record import RecordError, split_record

    path, model, train, _ = honest
    light, store = tmp_path / "light", tmp_path / "store"
    shutil.copytree(path, light)
    full_bytes = sum(f.stat().st_size for f in light.rglob("*") if f.is_file())
    moved = split_record(light, store)
    left = sum(f.stat().st_size for f in light.rglob("*") if f.is_file())
    assert moved + left == full_bytes and left < 0.1 * full_bytes
    # a split cut short after a copy (the file in both places) finishes on a rerun
    e0 = open_record(path).entries[0]["file"]
    shutil.copy2(store / e0, light / e0)
    assert split_record(light, store) == 0 and not (light / e0).exists()
    full = verify(path, train, checks=FAST, seed=4, soundness=1e-3, model=model.state_dict())
    lite = verify(light, train, checks=FAST, seed=4, soundness=1e-3, model=model.state_dict(), store=store)
    assert full.accepted and lite.accepted
    a, b = full.checks["replay"].figures, lite.checks["replay"].figures
    assert a["top_q"] == b["top_q"] and a["random"] == b["random"]  # top-Q from the committed sizes
    assert lite.checks["integrity"].figures["held_by_store"] == len(open_record(path).entries)
    # without the store: a damaged record, exit 2, with the hint
    assert main(["pot", "verify", str(light)]) == 2
    # a checkpoint in the store that is not the one sealed: refused, naming the entry
    rec = open_record(light, store)
    j = b["random"][0]
    f = store / rec.entries[j + 1]["file"]
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 1
    f.write_bytes(bytes(raw))
    with pytest.raises(RecordError, match=f"checkpoint entry {j + 1} .*not the checkpoint the record sealed"):
        verify(light, train, checks=FAST, seed=4, soundness=1e-3, store=store)


def _resealed_with_sizes(path, folder, edit) -> tuple:
    """A copy of the record at `path` whose committed update sizes `edit(sizes)` changed, resealed as a
    forger would (the header chained anew, the checkpoint entries kept); (its folder, the sizes)."""
    from fpcore.pot.record import finish_record, recipe_of

    shutil.copytree(path, folder)
    rec = open_record(folder)
    doc = dict(rec.doc)
    sizes = {m: list(v) for m, v in doc["update_sizes"].items()}
    edit(sizes)
    entries = [{k: e[k] for k in ("step", "file", "bytes", "sha256")} for e in rec.entries]
    finish_record(
        folder, recipe_of(doc), entries, rec.batches(), doc["segment_seeds"], rec.step_digests(), update_sizes=sizes
    )
    return folder, sizes


def test_committed_update_sizes_that_lie_are_caught(honest, tmp_path):
    """A record whose committed sizes hide its largest update from top-Q: with the checkpoints at hand every
    segment's size is checked; a light record checks the replayed ones."""
    path, _, train, _ = honest
    l2 = open_record(path).doc["update_sizes"]["l2"]
    j = int(max(range(len(l2)), key=lambda i: l2[i]))

    def halve(sizes):
        sizes["l2"][j] *= 0.5

    forged, _ = _resealed_with_sizes(path, tmp_path / "forged", halve)
    res = check_replay(open_record(forged), train, q=1, r=0, seed=0)
    assert res.passed is False and j in res.figures["committed_sizes"]["mismatched"]
    assert f"segment {j}'s committed update size is not its checkpoints'" in res.reason


@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf"), "0.5", True])
def test_committed_update_sizes_that_are_not_sizes_fail_integrity(honest, tmp_path, bad):
    """top-Q is chosen from the committed sizes before any checkpoint is read: a size that is not a finite
    number >= 0 is a damaged record, named by integrity."""
    from fpcore.pot.verify import check_integrity

    def spoil(sizes):
        sizes["l2"][3] = bad

    forged, _ = _resealed_with_sizes(honest[0], tmp_path / "forged", spoil)
    res = check_integrity(open_record(forged))
    assert res.passed is False and "update sizes: l2 must be finite numbers >= 0" in res.reason
