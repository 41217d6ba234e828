"""The record format: hash chain, integrity check, damaged records named, the Recorder's contract."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from fpcore.pot.record import RecordError, open_record, seal
from fpcore.pot.recorder import Recorder
from fpcore.pot.train import fresh
from fpcore.pot.verify import check_integrity, require_intact, verify
from tests.pot.conftest import SMALL


def copy(src, tmp_path, name="r"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def tree_digest(path):
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode() + p.read_bytes())
    return h.hexdigest()


def test_record_layout_and_chain(honest):
    path, _, train, _ = honest
    doc = json.loads((path / "record.json").read_text())
    assert doc["format"] == "fpcore.pot-record" and doc["version"] == 1
    assert doc["dataset"]["sha256"] == train.sha256 and doc["dataset"]["size"] == len(train)
    steps = [e["step"] for e in doc["checkpoints"]]
    assert steps == list(range(0, doc["steps"] + 1, SMALL.every))
    assert len(doc["segment_seeds"]) == len(steps) - 1
    b = np.load(path / "batches.npy")
    assert b.shape == (doc["steps"], SMALL.batch_size)
    # the chain: each entry's prev is the hash of the previous entry, the first's the header's
    prev = hashlib.sha256(
        json.dumps(
            {k: v for k, v in doc.items() if k not in ("checkpoints", "head")}, sort_keys=True, separators=(",", ":")
        ).encode()
    ).hexdigest()
    for e in doc["checkpoints"]:
        assert e["prev"] == prev
        assert hashlib.sha256((path / e["file"]).read_bytes()).hexdigest() == e["sha256"]
        prev = hashlib.sha256(json.dumps(e, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert doc["head"] == prev
    assert check_integrity(open_record(path)).passed


def test_one_byte_of_a_checkpoint_breaks_the_chain(honest, tmp_path):
    r = copy(honest[0], tmp_path)
    f = r / "ckpt" / "step_40.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0x10
    f.write_bytes(bytes(raw))
    res = check_integrity(open_record(r))
    assert res.passed is False
    assert "checkpoint entry 10 (ckpt/step_40.safetensors): sha256 mismatch" in res.reason
    v = verify(r, honest[2], checks=("integrity", "replay"))
    assert not v.accepted and v.checks["replay"].passed is None  # nothing else is trusted


def test_resealing_moves_the_head(honest, tmp_path):
    """An editor who re-hashes keeps integrity but cannot keep the head a verifier may hold."""
    r = copy(honest[0], tmp_path)
    rec = open_record(r)
    doc = dict(rec.doc)
    doc["batch_size"] = doc["batch_size"]  # same header, re-sealed entries: head unchanged
    assert seal(doc, rec.entries)["head"] == rec.doc["head"]
    doc["optimizer"] = {**doc["optimizer"], "lr": 0.2}
    assert seal(doc, rec.entries)["head"] != rec.doc["head"]
    (r / "record.json").write_text(json.dumps({**doc, "checkpoints": rec.entries, "head": rec.doc["head"]}))
    res = check_integrity(open_record(r))
    assert res.passed is False and "checkpoint entry 0" in res.reason and "hash chain broken" in res.reason


def test_batch_list_edit_is_caught(honest, tmp_path):
    r = copy(honest[0], tmp_path)
    b = np.load(r / "batches.npy")
    b[5, 0] = (b[5, 0] + 1) % 100
    np.save(r / "batches.npy", b)
    res = check_integrity(open_record(r))
    assert res.passed is False and "batches file batches.npy: sha256 mismatch" in res.reason


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: (r / "record.json").write_text("{not json"), "record.json is not valid JSON"),
        (lambda r: (r / "record.json").unlink(), "record.json is missing"),
        (lambda r: (r / "ckpt" / "step_8.safetensors").unlink(), "checkpoint entry 2 (ckpt/step_8.safetensors): file"),
        (
            lambda r: (r / "ckpt" / "step_8.safetensors").write_bytes(
                (r / "ckpt" / "step_8.safetensors").read_bytes()[:50]
            ),
            "checkpoint entry 2 (ckpt/step_8.safetensors): 50 bytes, the record says",
        ),
        (
            lambda r: (r / "record.json").write_text(json.dumps({"format": "fpcore.pot-record", "version": 1})),
            "missing field 'model'",
        ),
    ],
)
def test_damaged_record_is_named(honest, tmp_path, damage, message):
    r = copy(honest[0], tmp_path)
    damage(r)
    with pytest.raises(RecordError) as ei:
        require_intact(verify(r, honest[2], checks=("integrity",)))
    assert message in str(ei.value) and str(r) in str(ei.value)
    assert isinstance(ei.value, ValueError)


def test_verify_does_not_modify_the_record(honest):
    before = tree_digest(honest[0])
    verify(honest[0], honest[2], checks=("integrity", "data", "init", "replay"), seed=0)
    assert tree_digest(honest[0]) == before


def test_recorder_contract(tmp_path, digits):
    train, _ = digits
    model, opt, init = fresh(SMALL, train, 3)
    kw = dict(every=2, model_spec=SMALL.model_spec(train), init=init, batch_size=4)
    rec = Recorder(tmp_path / "r", model, opt, train, **kw)
    with pytest.raises(ValueError, match="expected 4 sample indices, got shape"):
        rec.step(torch.arange(3))
    rec.abort()
    assert not (tmp_path / "r").exists() and not list(tmp_path.iterdir())  # nothing partial left behind
    with pytest.raises(RuntimeError), Recorder(tmp_path / "r", model, opt, train, **kw) as rec:
        rec.step(torch.arange(4))
        raise RuntimeError("training crashed")
    assert not list(tmp_path.iterdir())
    rec = Recorder(tmp_path / "r", model, opt, train, **kw)
    rec.step(torch.tensor([0, 1, 2, len(train)]))
    with pytest.raises(ValueError, match="outside 0..1347"):
        rec.finish()
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        Recorder(tmp_path / "r", model, opt, train, **{**kw, "every": 0})
    # a partial last segment gets its own checkpoint and seed
    rec = Recorder(tmp_path / "r", model, opt, train, **kw)
    for i in range(5):
        rec.step(torch.arange(4) + i)
    doc = open_record(rec.finish()).doc
    assert [e["step"] for e in doc["checkpoints"]] == [0, 2, 4, 5] and len(doc["segment_seeds"]) == 3
    with pytest.raises(FileExistsError):
        Recorder(tmp_path / "r", model, opt, train, **kw)


def test_buffered_recorder_writes_at_finish(tmp_path, digits):
    """buffer_bytes > 0 holds the snapshots in memory; the record written in finish() is the same."""
    train, _ = digits
    docs = []
    for bb in (0, 1 << 30):
        model, opt, init = fresh(SMALL, train, 5)
        rec = Recorder(
            tmp_path / f"r{bb}",
            model,
            opt,
            train,
            every=2,
            model_spec=SMALL.model_spec(train),
            init=init,
            batch_size=4,
            buffer_bytes=bb,
        )
        for i in range(6):
            rec.step(torch.arange(4) + i)
        assert (len(rec._pending), len(rec._queued)) == ((4, 0) if bb == 0 else (0, 4))
        docs.append(open_record(rec.finish()).doc)
    # same checkpoints, byte for byte (checkpoint files are deterministic)
    assert [e["sha256"] for e in docs[0]["checkpoints"]] == [e["sha256"] for e in docs[1]["checkpoints"]]


def test_flat_params_from_bytes_equal_the_parsed_checkpoint(honest, tmp_path):
    """flat_params reads only the parameters' bytes of a file not read yet, cuts them out of a file read
    whole (integrity reads every file), or builds them from the parsed checkpoint: the same vector."""
    rec = open_record(honest[0])
    whole = open_record(honest[0])
    for i in (0, 3, len(rec.entries) - 1):
        fast = rec.flat_params(i)  # the parameters' bytes alone (nothing read yet)
        assert i not in rec._cache and i not in rec._raw
        whole.raw(i)
        cut = whole.flat_params(i)  # cut from the bytes read whole
        assert i not in whole._cache
        ck = rec.checkpoint(i)
        ref = torch.cat([ck[k].flatten() for k in sorted(ck) if k.startswith("param.")])
        assert fast.dtype == torch.float32 and torch.equal(fast, ref) and torch.equal(cut, ref)
        assert torch.equal(rec.flat_params(i), ref)  # parsed now: built from checkpoint(i)
        into = torch.full_like(ref, 7.0)
        assert open_record(honest[0]).flat_params(i, out=into) is into and torch.equal(into, ref)
        wrong = torch.zeros(ref.numel() + 1)
        got = open_record(honest[0]).flat_params(i, out=wrong)  # not its size: new memory
        assert got is not wrong and torch.equal(got, ref) and not wrong.any()
    # a truncated checkpoint: flat_params does not cut a vector out of it; the entry is named
    broken = tmp_path / "broken"
    shutil.copytree(honest[0], broken)
    f = broken / rec.entries[2]["file"]
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(RecordError, match="checkpoint entry 2 .*not a readable safetensors file"):
        open_record(broken).flat_params(2)


def test_params_digest_cached_views_follow_every_change():
    """ParamsDigest (the Recorder's and replay's per-step digest) gives params_digest's bytes whatever
    happens to the parameters between steps."""
    from fpcore.pot.record import ParamsDigest, params_digest

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    d = ParamsDigest(model)
    seen = set()

    def check():
        got = d()
        assert got == params_digest(model)
        assert got not in seen  # every change below changes the digest: the check is not vacuous
        seen.add(got)

    check()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 6)).sum().backward()
    opt.step()  # in place
    check()
    w = model[0].weight
    w.data = w.data.clone() * 2  # memory moved
    check()
    model[2].bias = torch.nn.Parameter(torch.ones(3))  # a parameter replaced in its module
    check()
    model[2].weight.data = model[2].weight.data.t().contiguous().t()  # not contiguous: params_digest's path
    with torch.no_grad():
        model[2].weight.mul_(3)
    check()
    model.add_module("extra", torch.nn.Linear(3, 2))  # another set of parameters
    check()


@pytest.mark.parametrize(("batch", "in_flight"), [(1, 1), (3, 1), (8, 8)])
def test_step_digests_hashed_off_thread_are_params_digest_at_each_call(monkeypatch, batch, in_flight):
    """StepDigests (the Recorder's) copies the parameters at each call and hashes them on a helper thread:
    each result is params_digest of the model as it was at that call, whatever changed after it (in-place
    steps at once, moved memory, a replaced parameter, a non-contiguous one, a new module), with buffers
    reused (in_flight=1: the training thread waits for each batch) or many in flight, batches of 1 or more
    (a call hashed at once falls inside a batch)."""
    from fpcore.pot.record import StepDigests, params_digest

    monkeypatch.setattr(StepDigests, "IN_FLIGHT", in_flight)
    monkeypatch.setattr(StepDigests, "BATCH", batch)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    d = StepDigests(model)
    want = []

    def call():
        want.append(params_digest(model))
        d()

    for _ in range(20):
        opt.zero_grad()
        model(torch.randn(4, 6)).sum().backward()
        opt.step()  # in place, right after the previous call's copy
        call()
    model[0].weight.data = model[0].weight.data.clone() * 2  # memory moved
    call()
    model[2].bias = torch.nn.Parameter(torch.ones(3))  # replaced
    call()
    model[2].weight.data = model[2].weight.data.t().contiguous().t()  # not contiguous: hashed at once
    with torch.no_grad():
        model[2].weight.mul_(3)
    call()
    model[2].weight.data = model[2].weight.data.contiguous()
    model.add_module("extra", torch.nn.Linear(3, 2))  # another layout
    call()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    call()
    got = d.results()
    assert got == want and len(set(want)) == len(want)


def test_checkpoint_file_is_safetensors_with_its_sha256(tmp_path):
    """write_checkpoint streams the tensors' own memory: the file loads with the safetensors library,
    its SHA-256 and size are the entry's, and two writes of the same state are the same bytes."""
    from safetensors import safe_open

    from fpcore.pot.record import write_checkpoint

    g = torch.Generator().manual_seed(1)
    tensors = {
        "param.w": torch.randn(7, 5, generator=g),
        "param.b16": torch.randn(9, generator=g).bfloat16(),
        "optim.w.step": torch.tensor(12.0),
        "buffer.empty": torch.empty(0, 3),
        "buffer.idx": torch.arange(4),
        "param.t": torch.randn(4, 6, generator=g).t(),  # not contiguous
    }
    entries = []
    for k in range(2):
        (tmp_path / f"r{k}" / "ckpt").mkdir(parents=True)
        entries.append(write_checkpoint(tmp_path / f"r{k}", 8, tensors, fsync=k == 0))
    f0, f1 = (tmp_path / f"r{k}" / entries[k]["file"] for k in range(2))
    assert f0.read_bytes() == f1.read_bytes()
    assert entries[0]["sha256"] == hashlib.sha256(f0.read_bytes()).hexdigest() == entries[1]["sha256"]
    assert entries[0]["bytes"] == f0.stat().st_size
    with safe_open(str(f0), framework="pt") as f:
        assert f.metadata() == {"fpcore.pot-checkpoint.step": "8"}
        assert sorted(f.keys()) == sorted(tensors)
        for n, t in tensors.items():
            got = f.get_tensor(n)
            assert got.dtype == t.dtype and got.shape == t.shape and torch.equal(got, t), n


def test_packed_checkpoint_writes_the_same_bytes_as_its_tensors(tmp_path):
    """checkpoint_tensors packs the state into one buffer that write_checkpoint writes in one piece: the
    file is byte for byte the one its tensors give one by one, also after the dict was edited."""
    from fpcore.pot.record import checkpoint_tensors, write_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2).bfloat16())
    opt = torch.optim.AdamW(model[:2].parameters(), lr=0.1)
    model[:2](torch.randn(8, 5)).sum().backward()
    opt.step()
    packed = checkpoint_tensors(model, opt)
    assert packed.buffer.numel() == sum(t.numel() * t.element_size() for t in packed.values())
    assert any(k.startswith("optim.") for k in packed) and any(k.startswith("buffer.") for k in packed)

    def write(name, tensors):
        (tmp_path / name / "ckpt").mkdir(parents=True)
        e = write_checkpoint(tmp_path / name, 3, tensors)
        return e, (tmp_path / name / e["file"]).read_bytes()

    e1, b1 = write("packed", packed)
    e2, b2 = write("plain", {k: v.clone() for k, v in packed.items()})
    assert b1 == b2 and e1 == e2
    packed["param.0.bias"] = torch.full((4,), 7.0)  # edited: no longer the buffer's view
    e3, b3 = write("edited", packed)
    e4, b4 = write("edited-plain", {k: v.clone() for k, v in packed.items()})
    assert b3 == b4 and b3 != b1
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(packed["param.0.weight"], model[0].weight)  # copies, not the live tensors


def test_checkpoint_tensors_refills_a_state_of_the_same_layout(tmp_path):
    """The Recorder copies each checkpoint into a written one's memory: the refilled state is the same
    object with the bytes a fresh copy gives; a state of another layout (AdamW's moments appear after its
    first step) is never refilled."""
    from fpcore.pot.record import checkpoint_tensors

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    before = checkpoint_tensors(model, opt)  # no optimizer state yet

    def step():
        opt.zero_grad()
        model(torch.randn(8, 5)).sum().backward()
        opt.step()

    step()
    first = checkpoint_tensors(model, opt, reuse=before)
    assert first is not before and any(k.startswith("optim.") for k in first)
    old = first.buffer.clone()
    step()
    again = checkpoint_tensors(model, opt, reuse=first)
    fresh = checkpoint_tensors(model, opt)
    assert again is first and again.layout == fresh.layout
    assert torch.equal(again.buffer, fresh.buffer) and not torch.equal(again.buffer, old)
    lo, hi = again.buffer.data_ptr(), again.buffer.data_ptr() + again.buffer.numel()
    for k, v in fresh.items():
        assert torch.equal(again[k], v) and lo <= again[k].data_ptr() < hi  # still views of its one buffer
