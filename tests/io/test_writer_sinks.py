"""SafetensorsWriter's two ways to the disk: through the page cache, and O_DIRECT (aligned blocks
written by an I/O thread, last block padded then truncated). Both must give the same bytes."""

import errno
import os

import pytest
import torch

import fpcore.io.writer as wmod
from fpcore.io import Checkpoint, SafetensorsWriter


def _layout_and_tensors(sizes):
    g = torch.Generator().manual_seed(0)
    dts = [torch.float32, torch.bfloat16, torch.float16]
    ts = {f"t{i}": torch.randn(n, generator=g).to(dts[i % 3]) for i, n in enumerate(sizes)}
    return [(n, t.dtype, tuple(t.shape)) for n, t in ts.items()], ts


def _write(path, layout, ts, *, direct, src=None):
    """Every way to feed a writer: whole tensors, byte parts, and file-to-file copies."""
    with SafetensorsWriter(path, layout, {"who": "test"}, direct=direct) as w:
        for k, (n, t) in enumerate(ts.items()):
            raw = memoryview(t.view(torch.uint8).numpy())
            if k % 3 == 0:
                w.write(n, t)
            elif k % 3 == 1:
                half = len(raw) // 2
                w.write_part(n, raw[:half])
                w.write_part(n, bytes(raw[half:]))  # read-only memory takes the slow copy
            else:
                info = src.info(n)
                w.copy_part(n, src.fd(info.file), info.start, info.nbytes)
        return w.direct


@pytest.mark.parametrize("block", [512, 4096, 1 << 16, None], ids=["512", "4k", "64k", "default"])
@pytest.mark.parametrize("sizes", [[1, 7, 1000], [0, 4097, 3, 40000, 5], [70000, 1, 1]])
def test_direct_and_page_cache_write_the_same_bytes(tmp_path, monkeypatch, block, sizes):
    if block is not None:
        monkeypatch.setattr(wmod, "DIRECT_BLOCK", block)
        monkeypatch.setattr(wmod, "DIRECT_ALIGN", min(block, 4096))
    layout, ts = _layout_and_tensors(sizes)
    ref = tmp_path / "ref.safetensors"
    with SafetensorsWriter(ref, layout, {"who": "test"}) as w:
        for n, t in ts.items():
            w.write(n, t)
    src = Checkpoint(ref)
    plain, direct = tmp_path / "plain.safetensors", tmp_path / "direct.safetensors"
    assert _write(plain, layout, ts, direct=False, src=src) is False
    used = _write(direct, layout, ts, direct=True, src=src)
    if os.environ.get("FPCORE_DIRECT_IO") != "0" and hasattr(os, "O_DIRECT"):
        assert used in (True, False)  # False only where the file system refuses O_DIRECT
    assert plain.read_bytes() == direct.read_bytes() == ref.read_bytes()
    back = Checkpoint(direct)
    for n, t in ts.items():
        assert torch.equal(back.get(n), t)


def test_direct_io_off_by_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FPCORE_DIRECT_IO", "0")
    layout, ts = _layout_and_tensors([10])
    assert _write(tmp_path / "x.safetensors", layout, ts, direct=True) is False


def test_file_system_refusing_o_direct_at_open_falls_back(tmp_path, monkeypatch):
    real_open = open

    def refusing_open(path, mode="r", *a, opener=None, **k):
        if opener is not None:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(wmod, "open", refusing_open, raising=False)
    layout, ts = _layout_and_tensors([100, 3])
    path = tmp_path / "x.safetensors"
    assert _write(path, layout, ts, direct=True) is False
    assert all(torch.equal(Checkpoint(path).get(n), t) for n, t in ts.items())


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="O_DIRECT is Linux-only")
def test_file_system_refusing_o_direct_writes_falls_back(tmp_path, monkeypatch):
    """A file system that accepts O_DIRECT at open but fails the I/O with EINVAL: O_DIRECT is
    cleared on the descriptor and the same blocks go through the page cache."""
    real_open = open
    refused = []

    class Refusing:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            import fcntl

            if fcntl.fcntl(self.f.fileno(), fcntl.F_GETFL) & os.O_DIRECT:
                refused.append(len(b))
                raise OSError(errno.EINVAL, "Invalid argument")
            return self.f.write(b)

        def __getattr__(self, k):
            return getattr(self.f, k)

    def opening(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        return Refusing(f) if "w" in mode else f

    monkeypatch.setattr(wmod, "open", opening, raising=False)
    monkeypatch.setattr(wmod, "DIRECT_BLOCK", 4096)
    layout, ts = _layout_and_tensors([3000, 5])
    path = tmp_path / "x.safetensors"
    direct = _write(path, layout, ts, direct=True)
    assert direct is False or refused  # refused at open (no O_DIRECT here) or at the first write
    assert all(torch.equal(Checkpoint(path).get(n), t) for n, t in ts.items())


def test_direct_writer_abort_stops_and_closes(tmp_path):
    layout, ts = _layout_and_tensors([50000, 10])
    path = tmp_path / "x.safetensors"
    w = SafetensorsWriter(path, layout, direct=True)
    w.write("t0", ts["t0"])
    w.abort()
    w.abort()  # twice is harmless
    with pytest.raises(ValueError, match="closed"):
        w.write("t1", ts["t1"])
