"""fpcore.io: reading by name through the shard index, validation that names file and tensor,
streaming writes, and outputs that appear atomically."""

import json
import struct
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fpcore.io import AtomicOutput, Checkpoint, CheckpointError, SafetensorsWriter, write_safetensors
from tests.conftest import sigkill_when_ready


def tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(16, 8, generator=g).bfloat16(),
        "layers.0.w": torch.randn(8, 8, generator=g),
        "layers.0.norm": torch.randn(8, generator=g).half(),
        "steps": torch.arange(3),
        "empty": torch.zeros(0, 4),
    }


def sharded(folder: Path, ts: dict, per_shard=2) -> Path:
    folder.mkdir()
    names = list(ts)
    shards = [names[i : i + per_shard] for i in range(0, len(names), per_shard)]
    wm = {}
    for k, group in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(folder / fname, {n: ts[n] for n in group})
        wm.update({n: fname for n in group})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    (folder / "config.json").write_text("{}")
    return folder


def test_roundtrip_with_the_reference_library(tmp_path):
    ts = tensors()
    write_safetensors(tmp_path / "a.safetensors", ts, {"format": "pt"})
    back = load_file(tmp_path / "a.safetensors")
    assert all(torch.equal(back[k], ts[k]) for k in ts)
    save_file(ts, tmp_path / "b.safetensors", metadata={"x": "1"})
    ck = Checkpoint(tmp_path / "b.safetensors")
    assert set(ck.names()) == set(ts) and ck.metadata[tmp_path / "b.safetensors"] == {"x": "1"}
    for k in ts:
        assert torch.equal(ck.get(k), ts[k]) and ck.get(k).dtype == ts[k].dtype


def test_folder_forms_and_other_files(tmp_path):
    ts = tensors()
    single = tmp_path / "single"
    single.mkdir()
    write_safetensors(single / "model.safetensors", ts)
    (single / "tokenizer.json").write_text("{}")
    ck = Checkpoint(single)
    assert len(ck) == len(ts) and [p.name for p in ck.other_files()] == ["tokenizer.json"]
    sh = Checkpoint(sharded(tmp_path / "sharded", ts))
    assert len(sh.files) == 3 and sh.index_file is not None
    assert [p.name for p in sh.other_files()] == ["config.json"]
    assert sh.info("layers.0.norm").file.name == "model-00002-of-00003.safetensors"
    for k in ts:
        assert torch.equal(sh.get(k), ts[k])
    assert sh.numel == sum(t.numel() for t in ts.values())
    with pytest.raises(KeyError, match="no tensor named 'nope'"):
        sh.get("nope")


def test_tensors_are_copy_on_write_views(tmp_path):
    f = tmp_path / "m.safetensors"
    write_safetensors(f, tensors())
    before = f.read_bytes()
    ck = Checkpoint(f)
    t = ck.get("layers.0.w")
    t.add_(1.0)  # allowed, private pages only
    assert f.read_bytes() == before
    assert not torch.equal(Checkpoint(f).get("layers.0.w"), t)


def _write_raw(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize(
    "header,data,match",
    [
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, r"tensor 'w': data ends at byte"),
        ({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, r"tensor 'w': unknown dtype 'Q7'"),
        (
            {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
            b"\0" * 12,
            r"hold 8 bytes but F32 \(3,\) needs 12",
        ),
        ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, r"shape \[-1\] is not a list"),
        ({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, b"\0" * 8, r"are not ordered"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            r"tensors 'a' and 'b' overlap",
        ),
        ({"__metadata__": {"k": 1}}, b"", r"__metadata__ must map strings to strings"),
    ],
)
def test_corrupt_headers_name_file_and_tensor(tmp_path, header, data, match):
    f = _write_raw(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(CheckpointError, match=match) as ei:
        Checkpoint(f)
    assert str(f) in str(ei.value)


def test_truncated_and_garbage_files(tmp_path):
    good = tmp_path / "good.safetensors"
    write_safetensors(good, tensors())
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"cut.safetensors: tensor '.*': data ends at byte .* \(truncated\?\)"):
        Checkpoint(cut)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"\1\2")
    with pytest.raises(CheckpointError, match=r"truncated: 2 bytes"):
        Checkpoint(tiny)
    lying = tmp_path / "lying.safetensors"
    lying.write_bytes(struct.pack("<Q", 10**6) + b"{}")
    with pytest.raises(CheckpointError, match=r"header length 1000000 runs past the end"):
        Checkpoint(lying)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(struct.pack("<Q", 4) + b"\xff{x}")
    with pytest.raises(CheckpointError, match=r"header is not valid JSON"):
        Checkpoint(junk)
    with pytest.raises(CheckpointError, match=r"no such file or folder"):
        Checkpoint(tmp_path / "missing")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointError, match=r"folder has neither model.safetensors.index.json nor model.safetensors"):
        Checkpoint(tmp_path / "empty_dir")


def test_bad_indexes(tmp_path):
    ts = tensors()
    folder = sharded(tmp_path / "m", ts)
    index = folder / "model.safetensors.index.json"
    idx = json.loads(index.read_text())
    idx["weight_map"]["ghost"] = "model-00009-of-00009.safetensors"
    index.write_text(json.dumps(idx))
    with pytest.raises(CheckpointError, match=r"names shard 'model-00009-of-00009.safetensors', which does not exist"):
        Checkpoint(folder)
    idx["weight_map"]["ghost"] = "model-00001-of-00003.safetensors"
    index.write_text(json.dumps(idx))
    with pytest.raises(CheckpointError, match=r"tensor 'ghost' is not in its shard"):
        Checkpoint(folder)
    del idx["weight_map"]["ghost"], idx["weight_map"]["steps"]
    index.write_text(json.dumps(idx))
    with pytest.raises(CheckpointError, match=r"tensor 'steps' is missing from the index"):
        Checkpoint(folder)
    index.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"not a readable JSON index"):
        Checkpoint(folder)


def test_writer_checks_order_dtype_and_completion(tmp_path):
    layout = [("a", torch.float32, (2,)), ("b", torch.bfloat16, (3,))]
    with pytest.raises(CheckpointError, match=r"expected tensor 'a' next, got 'b'"):
        with SafetensorsWriter(tmp_path / "x.safetensors", layout) as w:
            w.write("b", torch.zeros(3, dtype=torch.bfloat16))
    with pytest.raises(CheckpointError, match=r"tensor 'a' is torch.float16 \(2,\), declared torch.float32 \(2,\)"):
        with SafetensorsWriter(tmp_path / "y.safetensors", layout) as w:
            w.write("a", torch.zeros(2, dtype=torch.float16))
    w = SafetensorsWriter(tmp_path / "z.safetensors", layout)
    w.write("a", torch.zeros(2))
    with pytest.raises(CheckpointError, match=r"closed before tensor 'b' was written"):
        w.close()


def test_atomic_output_success_failure_overwrite(tmp_path):
    dest = tmp_path / "out"
    with AtomicOutput(dest) as tmp:
        write_safetensors(tmp / "model.safetensors", tensors())
        assert not dest.exists()
    assert Checkpoint(dest).names() and not list(tmp_path.glob(".fpcore-tmp-*"))
    with pytest.raises(FileExistsError, match=r"already exists"):
        AtomicOutput(dest).__enter__()
    with pytest.raises(RuntimeError, match="boom"):
        with AtomicOutput(dest, overwrite=True) as tmp:
            (tmp / "partial.safetensors").write_bytes(b"half")
            raise RuntimeError("boom")
    assert (dest / "model.safetensors").exists() and not (dest / "partial.safetensors").exists()
    assert not list(tmp_path.glob(".fpcore-tmp-*"))
    with AtomicOutput(dest, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("x")
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    f = tmp_path / "vec.safetensors"
    with AtomicOutput(f, is_file=True) as tmpf:
        write_safetensors(tmpf, {"t": torch.ones(2)})
    assert torch.equal(Checkpoint(f).get("t"), torch.ones(2))


def test_full_disk_leaves_nothing(tmp_path, full_disk):
    dest = tmp_path / "out"
    full_disk(3)
    with pytest.raises(OSError, match="No space left"):
        with AtomicOutput(dest) as tmp:
            write_safetensors(tmp / "model.safetensors", tensors())
    assert not dest.exists() and not list(tmp_path.glob(".fpcore-tmp-*"))


KILL_SCRIPT = """
import sys, time, torch
from fpcore.io import AtomicOutput, SafetensorsWriter
dest = sys.argv[1]
layout = [(f"t{i}", torch.float32, (1 << 20,)) for i in range(64)]
with AtomicOutput(dest) as tmp:
    with SafetensorsWriter(tmp / "model.safetensors", layout) as w:
        for i, (name, _, _) in enumerate(layout):
            w.write(name, torch.full((1 << 20,), float(i)))
            if i == 3:
                print("writing", flush=True)
                time.sleep(30)
"""


def test_sigkill_mid_write_leaves_no_output(tmp_path):
    dest = tmp_path / "out"
    sigkill_when_ready([sys.executable, "-c", KILL_SCRIPT, str(dest)], Path(__file__).parents[2])
    time.sleep(0.05)
    assert not dest.exists()  # only a hidden .fpcore-tmp-* folder may remain, never a partial output


def test_address_reads_the_file_in_place(tmp_path):
    """Checkpoint.address: the tensor's bytes in a private map of the file (what the torch-free
    streaming stamp hands to the kernels); release_range drops pages, the bytes read the same after."""
    import ctypes

    a = torch.arange(10000, dtype=torch.float32)
    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"a": a, "b": a.to(torch.bfloat16), "i": torch.arange(3)})
    ck = Checkpoint(path)
    info = ck.info("b")
    assert (info.format_dtype, info.itemsize, info.is_float) == ("BF16", 2, True)
    assert info.dtype == torch.bfloat16 and info.dtype_name == "torch.bfloat16" == str(info.dtype)
    assert not ck.info("i").is_float and ck.info("i").dtype_name == "torch.int64"
    want = a.to(torch.bfloat16).view(torch.uint8).numpy().tobytes()
    assert ctypes.string_at(ck.address("b"), info.nbytes) == want
    ck.release_range("b", 100, info.nbytes - 100)
    assert ctypes.string_at(ck.address("b") + 2, 8) == want[2:10]
    assert ctypes.string_at(ck.address("b"), info.nbytes) == want


def test_address_refuses_a_file_cut_short_after_opening(tmp_path):
    path = tmp_path / "m.safetensors"
    write_safetensors(path, {"a": torch.zeros(1000), "b": torch.ones(1000)})
    ck = Checkpoint(path)
    ck.address("b")
    with open(path, "r+b") as f:
        f.truncate(ck.info("b").start + 10)
    with pytest.raises(CheckpointError, match=r"tensor 'b' ends past the file's end"):
        ck.address("b")
    ck.address("a")  # still whole
