"""Checkpoint-level extract / stamp / unstamp: streaming, lineage, layout reproduction, atomicity."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

import fpcore
from fpcore import stamping
from fpcore.io import Checkpoint, CheckpointError, write_safetensors
from fpcore.testing import assert_bitwise_equal
from fpcore.vector import FingerprintVector, lineage_digest
from tests.conftest import sigkill_when_ready

SHARDS = {
    "model-00001-of-00003.safetensors": ["model.embed_tokens.weight", "model.layers.0.q.weight"],
    "model-00002-of-00003.safetensors": ["model.layers.0.mlp.weight", "model.norm.weight"],
    "model-00003-of-00003.safetensors": ["model.step_count"],
}
SHAPES = {
    "model.embed_tokens.weight": (32, 8),
    "model.layers.0.q.weight": (8, 8),
    "model.layers.0.mlp.weight": (16, 8),
    "model.norm.weight": (8,),
}


def make_model(folder: Path, tensors: dict) -> Path:
    folder.mkdir(parents=True)
    wm = {}
    for shard, names in SHARDS.items():
        write_safetensors(folder / shard, {n: tensors[n] for n in names}, {"format": "pt"})
        wm.update(dict.fromkeys(names, shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "tokenizer.json").write_text("{}")
    return folder


def base_tensors(seed=0, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    t = {n: torch.randn(s, generator=g).to(dtype) for n, s in SHAPES.items()}
    t["model.step_count"] = torch.tensor([7])
    return t


def perturbed(t, seed, scale, skip=("model.norm.weight",)):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n, x in t.items():
        if x.is_floating_point() and n not in skip:
            out[n] = (x.float() + scale * torch.randn(x.shape, generator=g)).to(x.dtype)
        else:
            out[n] = x.clone()
    return out


def files_digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def family(tmp_path):
    base = base_tensors()
    tuned = perturbed(base, 1, 0.05)
    return {
        "base": make_model(tmp_path / "base", base),
        "tuned": make_model(tmp_path / "tuned", tuned),
        "down1": make_model(tmp_path / "down1", perturbed(base, 2, 0.02, skip=())),
        "down2": make_model(tmp_path / "down2", perturbed(base, 3, 0.02, skip=())),
        "tensors": (base, tuned),
        "tmp": tmp_path,
    }


def test_extract_writes_vector_with_lineage(family):
    vec_path = family["tmp"] / "fp.safetensors"
    before = files_digest(family["base"]) | files_digest(family["tuned"])
    res = stamping.extract(family["tuned"], family["base"], vec_path, dtype="fp32")
    assert before == files_digest(family["base"]) | files_digest(family["tuned"])  # inputs untouched
    v = FingerprintVector(vec_path)
    assert set(v.names()) == {"model.embed_tokens.weight", "model.layers.0.q.weight", "model.layers.0.mlp.weight"}
    assert v.meta.skipped == {
        "model.norm.weight": "all-zero delta",
        "model.step_count": "not a float tensor (torch.int64)",
    }
    assert v.meta.base_digest == lineage_digest(Checkpoint(family["base"])) == res.base_digest
    assert v.meta.architecture["model.layers.0.mlp.weight"] == [16, 8]
    base, tuned = family["tensors"]
    for n in v.names():
        assert_bitwise_equal(v.get(n), tuned[n].float() - base[n].float(), what=n)


def test_stamp_base_plus_tau_returns_tuned(family):
    vec = family["tmp"] / "fp.safetensors"
    stamping.extract(family["tuned"], family["base"], vec, dtype="fp32")
    out = family["tmp"] / "restamped"
    stamping.stamp([(vec, 1.0)], [family["base"]], out)
    got, want = Checkpoint(out), Checkpoint(family["tuned"])
    for n in want.names():
        assert torch.equal(got.get(n), want.get(n)), n
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in family["tuned"].iterdir())


def test_stamp_many_models_reads_vector_once(family):
    vec = family["tmp"] / "fp.safetensors"
    stamping.extract(family["tuned"], family["base"], vec)
    out = family["tmp"] / "stamped"
    before = files_digest(family["down1"]) | files_digest(vec.parent / "base")
    res = stamping.stamp([(vec, 1.0)], [family["down1"], family["down2"]], out)
    assert [p.name for p in res.outputs] == ["down1", "down2"]
    v = FingerprintVector(vec)
    assert res.vector_bytes_read == v.ckpt.nbytes  # each tau tensor read once for both models
    for src in ("down1", "down2"):
        m, s = Checkpoint(family[src]), Checkpoint(out / src)
        for n in m.names():
            want = fpcore.stamp(m.get(n), v.get(n)) if n in v.names() else m.get(n)
            assert_bitwise_equal(s.get(n), want, what=f"{src} {n}")
        assert (out / src / "config.json").read_text() == '{"model_type": "llama"}'
        untouched = out / src / "model-00003-of-00003.safetensors"
        assert untouched.stat().st_ino == (family[src] / untouched.name).stat().st_ino  # linked, not rewritten
        assert json.loads((out / src / "model.safetensors.index.json").read_text())["weight_map"]
    assert before == files_digest(family["down1"]) | files_digest(vec.parent / "base")


def test_unstamp_restores_fp32_model(tmp_path):
    base = base_tensors(dtype=torch.float32)
    b = make_model(tmp_path / "b", base)
    t = make_model(tmp_path / "t", perturbed(base, 1, 0.05))
    d = make_model(tmp_path / "d", perturbed(base, 2, 0.01, skip=()))
    vec = tmp_path / "v.safetensors"
    stamping.extract(t, b, vec, dtype="fp32")
    stamping.stamp([(vec, 0.7)], [d], tmp_path / "s")
    stamping.unstamp(vec, tmp_path / "s", tmp_path / "u", alpha=0.7)
    orig, back = Checkpoint(d), Checkpoint(tmp_path / "u")
    for n in orig.names():
        a, r = back.get(n), orig.get(n)
        assert torch.allclose(a.float(), r.float(), rtol=2**-23, atol=1e-7), n


def test_vocab_growth_and_mismatch(family):
    vec = family["tmp"] / "fp.safetensors"
    stamping.extract(family["tuned"], family["base"], vec)
    base, _ = family["tensors"]
    grown = dict(base)
    grown["model.embed_tokens.weight"] = torch.cat([base["model.embed_tokens.weight"], torch.ones(2, 8).bfloat16()])
    g = make_model(family["tmp"] / "grown", grown)
    res = stamping.stamp([(vec, 1.0)], [g], family["tmp"] / "g_out")
    assert any("34 rows, base 32" in n for n in res.notes)
    e = Checkpoint(family["tmp"] / "g_out").get("model.embed_tokens.weight")
    v = FingerprintVector(vec).get("model.embed_tokens.weight")
    assert_bitwise_equal(e[:32], fpcore.stamp(grown["model.embed_tokens.weight"][:32], v), what="shared rows")
    assert torch.equal(e[32:], torch.ones(2, 8).bfloat16())
    bad = dict(base)
    bad["model.layers.0.q.weight"] = torch.zeros(8, 9).bfloat16()
    m = make_model(family["tmp"] / "bad", bad)
    with pytest.raises(
        CheckpointError, match=r"tensor 'model.layers.0.q.weight' has shape \(8, 9\), the vector's base"
    ):
        stamping.stamp([(vec, 1.0)], [m], family["tmp"] / "bad_out")
    assert not (family["tmp"] / "bad_out").exists()


def test_refusals(family):
    vec = family["tmp"] / "fp.safetensors"
    stamping.extract(family["tuned"], family["base"], vec)
    with pytest.raises(FileExistsError):
        stamping.extract(family["tuned"], family["base"], vec)
    stamping.extract(family["tuned"], family["base"], vec, overwrite=True)
    out = family["tmp"] / "o"
    stamping.stamp([(vec, 1.0)], [family["down1"]], out)
    with pytest.raises(FileExistsError):
        stamping.stamp([(vec, 1.0)], [family["down1"]], out)
    other = dict(family["tensors"][0])
    del other["model.norm.weight"]
    other["model.final_norm.weight"] = torch.ones(8).bfloat16()
    folder = family["tmp"] / "other"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors", other)
    with pytest.raises(CheckpointError, match=r"is not in both checkpoints"):
        stamping.extract(family["tuned"], folder, family["tmp"] / "x.safetensors")
    unrelated = make_model(family["tmp"] / "unrelated", base_tensors(seed=5))  # same architecture, other weights
    with pytest.raises(CheckpointError, match=r"does not look like TUNED's base \(pass --force"):
        stamping.extract(family["tuned"], unrelated, family["tmp"] / "u.safetensors")
    assert not (family["tmp"] / "u.safetensors").exists()
    stamping.extract(family["tuned"], unrelated, family["tmp"] / "u.safetensors", force=True)
    not_vec = family["tmp"] / "plain.safetensors"
    write_safetensors(not_vec, {"a": torch.ones(2)})
    with pytest.raises(CheckpointError, match=r"not an fpcore fingerprint vector"):
        stamping.stamp([(not_vec, 1.0)], [family["down1"]], family["tmp"] / "p")
    base, tuned = family["tensors"]
    nan_t = dict(tuned)
    nan_t["model.layers.0.q.weight"] = tuned["model.layers.0.q.weight"].clone()
    nan_t["model.layers.0.q.weight"][0, 0] = float("nan")
    nt = make_model(family["tmp"] / "nan_tuned", nan_t)
    with pytest.raises(CheckpointError, match=r"tensor 'model.layers.0.q.weight': tau has non-finite values"):
        stamping.extract(nt, family["base"], family["tmp"] / "nan.safetensors")
    assert not (family["tmp"] / "nan.safetensors").exists()


@pytest.mark.parametrize("blocks", ["default", "tiny"])
def test_chunked_streaming_matches_whole_tensor_stamp(family, monkeypatch, blocks):
    """Tensors far larger than a chunk (chunk shrunk to 40 elements): two vectors of mixed dtypes,
    vocabulary growth, several models; every output equals fpcore.stamp over whole tensors. With
    "tiny" the writers' O_DIRECT blocks are 512 bytes, so block edges fall inside chunks and tensors."""
    import fpcore.io.writer as wmod

    monkeypatch.setattr(fpcore._stream, "STREAM_ELEMS", 40)
    if blocks == "tiny":
        monkeypatch.setattr(wmod, "DIRECT_BLOCK", 512)
        monkeypatch.setattr(wmod, "DIRECT_ALIGN", 512)
    v1, v2 = family["tmp"] / "v1.safetensors", family["tmp"] / "v2.safetensors"
    stamping.extract(family["tuned"], family["base"], v1, dtype="fp32")
    stamping.extract(family["down2"], family["base"], v2, dtype="bf16")
    base, _ = family["tensors"]
    grown = dict(base)
    grown["model.embed_tokens.weight"] = torch.cat([base["model.embed_tokens.weight"], torch.ones(3, 8).bfloat16()])
    g = make_model(family["tmp"] / "grown", grown)
    out = family["tmp"] / "out"
    res = stamping.stamp([(v1, 0.75), (v2, -1.5)], [family["down1"], g], out)
    f1, f2 = FingerprintVector(v1), FingerprintVector(v2)
    assert res.vector_bytes_read == f1.ckpt.nbytes + f2.ckpt.nbytes
    for src, dest in ((family["down1"], out / "down1"), (g, out / "grown")):
        m, s = Checkpoint(src), Checkpoint(dest)
        for n in m.names():
            x = m.get(n)
            vs = [(f.get(n), a) for f, a in ((f1, 0.75), (f2, -1.5)) if n in f.names()]
            if not vs:
                assert torch.equal(s.get(n), x), n
                continue
            rows = vs[0][0].shape[0] if x.dim() else None
            want = x.clone()
            want[:rows] = fpcore.stamp(x[:rows], [t for t, _ in vs], [a for _, a in vs])
            assert_bitwise_equal(s.get(n), want, what=f"{dest.name} {n}")


@pytest.mark.parametrize("coded", [False, True])
def test_streamed_digests_equal_the_standalone_digest(family, monkeypatch, coded):
    """stamp(digests=True) hashes what it streams; the digests equal fpcore.io.digest's, read from the
    files: sharded folders (an untouched shard linked), vocabulary growth (rows beyond tau copied or coded
    alone), a single-file model, chunk edges inside tensors; and any changed byte changes the digest."""
    from fpcore.io.digest import checkpoint_digest
    from fpcore.trace.key import TraceKey

    pytest.importorskip("blake3")
    monkeypatch.setattr(fpcore._stream, "STREAM_ELEMS", 40)
    vec = family["tmp"] / "v.safetensors"
    stamping.extract(family["tuned"], family["base"], vec, dtype="fp32")
    base, _ = family["tensors"]
    grown = dict(base)
    grown["model.embed_tokens.weight"] = torch.cat([base["model.embed_tokens.weight"], torch.ones(3, 8).bfloat16()])
    g = make_model(family["tmp"] / "grown", grown)
    single = family["tmp"] / "single.safetensors"
    write_safetensors(single, perturbed(base, 5, 0.01), {"format": "pt"})
    models = [family["down1"], g, single]
    outs = [family["tmp"] / "o1", family["tmp"] / "o2", family["tmp"] / "o3.safetensors"]
    kw = {"trace_key": TraceKey(bytes(range(32))), "licensees": ["a", "b", "c"]} if coded else {}
    res = stamping.stamp([(vec, 1.0)], models, None, outputs=outs, digests=True, **kw)
    assert res.model_digests == [checkpoint_digest(m) for m in models]
    assert res.output_digests == [checkpoint_digest(o) for o in outs]
    assert len(set(res.model_digests + res.output_digests)) == 6
    # one byte of one tensor, or the config, changes the digest; a renamed single file does not
    copy = family["tmp"] / "copy.safetensors"
    copy.write_bytes(single.read_bytes())
    assert checkpoint_digest(copy) == res.model_digests[2]
    raw = bytearray(copy.read_bytes())
    raw[-1] ^= 1
    copy.write_bytes(bytes(raw))
    assert checkpoint_digest(copy) != res.model_digests[2]
    (outs[0] / "config.json").write_text('{"model_type": "other"}')
    assert checkpoint_digest(outs[0]) != res.output_digests[0]


def test_stamp_in_place_equals_stamp_to_output(family):
    vec = family["tmp"] / "fp.safetensors"
    stamping.extract(family["tuned"], family["base"], vec)
    stamping.stamp([(vec, 1.0)], [family["down1"]], family["tmp"] / "out")
    untouched = family["down1"] / "model-00003-of-00003.safetensors"
    ino = untouched.stat().st_ino
    res = stamping.stamp([(vec, 1.0)], [family["down1"]], None, in_place=True)
    assert res.outputs == [family["down1"]]
    assert files_digest(family["down1"]) == files_digest(family["tmp"] / "out")  # same bytes, file by file
    assert untouched.stat().st_ino == ino  # a shard tau does not touch is left alone
    assert not list(family["down1"].glob(".fpcore-tmp-*"))
    with pytest.raises(ValueError, match="one of an output path, outputs"):
        stamping.stamp([(vec, 1.0)], [family["down1"]], family["tmp"] / "x", in_place=True)


def test_stamp_in_place_error_leaves_model_unchanged(family):
    """tau's second tensor holds NaN: the first shard was already written to its temporary when the
    error comes; the model must be byte-identical afterwards and no temporary left."""
    base, tuned = family["tensors"]
    nan_t = dict(tuned)
    nan_t["model.layers.0.mlp.weight"] = tuned["model.layers.0.mlp.weight"].clone()
    nan_t["model.layers.0.mlp.weight"][3, 3] = float("inf")
    nt = make_model(family["tmp"] / "nan_tuned", nan_t)
    vec = family["tmp"] / "nan.safetensors"
    stamping.extract(nt, family["base"], vec, allow_nonfinite=True)
    before = files_digest(family["down1"])
    with pytest.raises(CheckpointError, match=r"tensor 'model.layers.0.mlp.weight' has non-finite values"):
        stamping.stamp([(vec, 1.0)], [family["down1"]], None, in_place=True)
    assert files_digest(family["down1"]) == before
    assert not list(family["down1"].glob(".fpcore-tmp-*"))


@pytest.mark.parametrize("sink", ["page-cache", "direct"])
@pytest.mark.parametrize("header_writes", [0, 1], ids=["in-header", "in-data"])
@pytest.mark.parametrize("in_place", [False, True], ids=["to-output", "in-place"])
def test_stamp_full_disk_leaves_nothing(family, full_disk, monkeypatch, in_place, header_writes, sink):
    """ENOSPC while a shard's header is written (main thread) or its data (writer thread), through
    the page cache or with O_DIRECT (blocks shrunk so that the data spans several): the error reaches
    the caller, no output and no temporary remain, the model is unchanged."""
    import fpcore.io.writer as wmod

    if sink == "direct":
        monkeypatch.setattr(wmod, "DIRECT_BLOCK", 512)
        monkeypatch.setattr(wmod, "DIRECT_ALIGN", 512)
    else:
        monkeypatch.setenv("FPCORE_DIRECT_IO", "0")
    vec = family["tmp"] / "fp.safetensors"
    stamping.extract(family["tuned"], family["base"], vec)
    full_disk(header_writes)
    before = files_digest(family["down1"])
    out = None if in_place else family["tmp"] / "out"
    with pytest.raises(OSError, match="No space left"):
        stamping.stamp([(vec, 1.0)], [family["down1"]], out, in_place=in_place)
    assert files_digest(family["down1"]) == before
    assert not list(family["down1"].glob(".fpcore-tmp-*")) and not list(family["tmp"].glob(".fpcore-tmp-*"))
    assert out is None or not out.exists()


KILL_IN_PLACE = """
import sys, time
from fpcore import stamping
calls = []
def progress(n):
    calls.append(n)
    if len(calls) == 2:  # the first tensor is in the writer's hands
        print("writing", flush=True)
        time.sleep(30)
stamping.stamp([(sys.argv[1], 1.0)], [sys.argv[2]], None, in_place=True, progress=progress)
"""


def test_sigkill_during_in_place_stamp_leaves_model_unchanged(family):
    import sys

    vec = family["tmp"] / "fp.safetensors"
    stamping.extract(family["tuned"], family["base"], vec)
    before = files_digest(family["down1"])
    sigkill_when_ready([sys.executable, "-c", KILL_IN_PLACE, str(vec), str(family["down1"])], Path(__file__).parents[1])
    after = {k: v for k, v in files_digest(family["down1"]).items() if not k.startswith(".fpcore-tmp-")}
    assert after == before  # only hidden temporaries may remain, never a changed shard
    assert Checkpoint(family["down1"]).other_files() == [
        family["down1"] / "config.json",
        family["down1"] / "tokenizer.json",
    ]


def test_single_file_model_in_place_and_to_output(family):
    vec = family["tmp"] / "fp.safetensors"
    stamping.extract(family["tuned"], family["base"], vec)
    base, _ = family["tensors"]
    single = family["tmp"] / "one.safetensors"
    write_safetensors(single, perturbed(base, 4, 0.01, skip=()), {"format": "pt"})
    stamping.stamp([(vec, 0.5)], [single], family["tmp"] / "one_out.safetensors")
    stamping.stamp([(vec, 0.5)], [single], None, in_place=True)
    assert single.read_bytes() == (family["tmp"] / "one_out.safetensors").read_bytes()
    assert not list(family["tmp"].glob(".fpcore-tmp-*"))


def test_extract_zero_delta_across_dtypes_and_signed_zero(tmp_path):
    """A tensor whose fp32 delta is zero everywhere is skipped, whatever the storage dtypes: the same
    values upcast to fp32 in TUNED, and -0.0 against +0.0. One changed element keeps it."""
    base = base_tensors()
    tuned = perturbed(base, 1, 0.05)
    tuned["model.layers.0.q.weight"] = base["model.layers.0.q.weight"].float()  # same values, fp32
    norm = base["model.norm.weight"].clone()
    norm[0] = 0.0
    base["model.norm.weight"] = norm
    tuned["model.norm.weight"] = norm.clone()
    tuned["model.norm.weight"][0] = -0.0
    b, t = make_model(tmp_path / "b", base), make_model(tmp_path / "t", tuned)
    res = stamping.extract(t, b, tmp_path / "v.safetensors")
    assert res.skipped["model.layers.0.q.weight"] == "all-zero delta"
    assert res.skipped["model.norm.weight"] == "all-zero delta"
    tuned["model.layers.0.q.weight"][3, 4] += 0.25
    t2 = make_model(tmp_path / "t2", tuned)
    assert "model.layers.0.q.weight" not in stamping.extract(t2, b, tmp_path / "v2.safetensors").skipped
