"""Tasks: a record names its task and pins its code; tiny-lm (AdamW, dropout, warm-up + cosine, clipping)
is recorded, replayed bit for bit across thread counts, accepted, and bound to its model."""

import pytest
import torch

pytest.importorskip("transformers")

from fpcore.cli import main  # noqa: E402
from fpcore.pot.record import open_record  # noqa: E402
from fpcore.pot.tasks import TaskError, TinyLM, task_class, task_of_record  # noqa: E402
from fpcore.pot.train import train_task  # noqa: E402
from fpcore.pot.verify import check_replay, verify  # noqa: E402

SMALL = {"corpus_bytes": 16384, "warmup": 4}  # 256 windows of 64 bytes, 32 steps of 8


@pytest.fixture(scope="module")
def lm_record(tmp_path_factory):
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        path, model, _ = train_task(tmp_path_factory.mktemp("lm") / "rec", TinyLM(SMALL), 3, every=4)
    finally:
        torch.set_num_threads(old)
    return path, model


def test_the_record_names_its_task_and_keeps_adamw_state(lm_record):
    path, _ = lm_record
    rec = open_record(path)
    t = rec.doc["task"]
    assert t["name"] == "tiny-lm" and t["code_digest"] == TinyLM.code_digest() and t["config"]["corpus_bytes"] == 16384
    ck = rec.checkpoint(1)
    assert any(k.endswith(".exp_avg_sq") for k in ck) and any(k.endswith(".step") for k in ck)
    assert int(rec.doc["steps"]) == 32 and len(rec.entries) == 9


def test_tiny_lm_is_accepted_and_replays_bit_for_bit_on_one_thread(lm_record):
    path, model = lm_record
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # recorded on 2 threads
    try:
        v = verify(path, seed=0, soundness=1e-3, model=model.state_dict())
        rec = open_record(path)
        res = check_replay(rec, task_of_record(rec.doc).load_data(), q=len(rec.entries), r=0, seed=0)
    finally:
        torch.set_num_threads(old)
    assert v.accepted, {k: c.reason for k, c in v.checks.items()}
    assert v.checks["binding"].passed and v.checks["init"].passed is None
    d = res.figures["step_digests"]
    assert d["bit_exact_segments"] == res.figures["replayed"] == len(rec.entries) - 1
    assert res.figures["max_distance"]["l2"] == 0.0


def test_a_task_whose_code_differs_is_refused(lm_record, monkeypatch, capsys):
    path, _ = lm_record
    monkeypatch.setattr(TinyLM, "code_digest", classmethod(lambda cls: "0" * 64))
    with pytest.raises(TaskError, match="task 'tiny-lm'.*differs"):
        verify(path, seed=0)
    assert main(["pot", "verify", str(path)]) == 2
    assert "tiny-lm" in capsys.readouterr().err


def test_unknown_tasks_and_configs_are_refused(capsys):
    with pytest.raises(TaskError, match="not registered.*tiny-lm"):
        task_class("no-such-task")
    with pytest.raises(TaskError, match="bad config"):
        TinyLM({"colour": "red"})


@pytest.mark.parametrize(
    "attack", ["interp", "blindfolded", "data-spoof", "penalty", "reverse-noise", "tamper-resealed"]
)
def test_every_attack_on_tiny_lm_is_rejected(lm_record, tmp_path, attack):
    from fpcore.pot.attacks_task import forge_task

    path, model = lm_record
    fg = forge_task(attack, tmp_path / attack, model, path, 0)
    v = verify(fg.path, checks=("integrity", "data", "init", "replay"), seed=0, soundness=1e-3)
    assert not v.accepted, attack
    failed = {k for k, c in v.checks.items() if c.passed is False}
    assert failed == ({"data"} if attack == "data-spoof" else {"replay"}), (attack, failed)


def test_evaluate_task_reports_records_with_kind_and_verdict():
    from fpcore.pot.evaluate_task import evaluate_task

    res = evaluate_task(TinyLM(SMALL), 1, attacks=("interp", "tamper"), soundness=1e-3)
    assert [(r["kind"], r["accepted"]) for r in res["records"]] == [
        ("honest", True),
        ("interp", False),
        ("tamper", False),
    ]
    assert res["summary"] == {"honest_accepted": "1/1", "attacks_rejected": {"interp": "1/1", "tamper": "1/1"}}
    with pytest.raises(ValueError, match="unknown task attack"):
        evaluate_task(TinyLM(SMALL), 1, attacks=("nope",))
