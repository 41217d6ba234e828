"""stamp_iter: a loader's (name, tensor) iterator, stamped, against `fpcore stamp` (and its licensee code)."""

import threading

import pytest
import torch

from fpcore import serving, stamping
from fpcore.io import Checkpoint, CheckpointError
from fpcore.testing import assert_bitwise_equal
from fpcore.trace.key import TraceKey
from tests.test_serving import family  # noqa: F401  (fixture)
from tests.test_stamping import make_model

KEY = TraceKey(bytes(range(32)))


def reusing_loader(model, device="cpu", log=None):
    """What fast loaders do: every tensor is read into one buffer, reused for the next tensor; the
    yielded tensor is a view of it, valid until the next one is read."""
    ck = Checkpoint(model)
    buf = torch.empty(max(i.nbytes for _, i in ck.items()), dtype=torch.uint8, device=device)
    for name, info in ck.items():
        t = ck.read(name)
        view = buf[: info.nbytes].view(t.dtype).view(t.shape)
        view.copy_(t)
        if log is not None:
            log.append(name)
        yield name, view


def collect(pairs):
    """Keep every pair (what load_weights may do: hold references until later)."""
    return dict(pairs)


@pytest.fixture
def stamped_ref(family):  # noqa: F811
    """`fpcore stamp` at alpha 0.8 (made before the backend fixture forces a backend)."""
    out = family["tmp"] / "stamped"
    stamping.stamp([(family["vec"], 0.8)], [family["down"]], out)
    return Checkpoint(out)


@pytest.fixture
def coded_ref(family):  # noqa: F811
    """A model whose embedding grew 3 rows, stamped with tau and licensee acme's code by `fpcore stamp`."""
    base = family["tensors"]
    grown = dict(base)  # vocabulary growth: tau covers the embedding's leading rows, the code all of it
    grown["model.embed_tokens.weight"] = torch.cat([base["model.embed_tokens.weight"], torch.ones(3, 8).bfloat16()])
    g = make_model(family["tmp"] / "grown", grown)
    out = family["tmp"] / "coded"
    stamping.stamp([(family["vec"], 1.0)], [g], None, outputs=[out], trace_key=KEY, licensees=["acme"])
    return g, Checkpoint(out)


def test_reused_buffer_stamped_equals_stamped_checkpoint(family, stamped_ref, backend):  # noqa: F811
    _, device = backend
    ref = stamped_ref
    got = collect(serving.stamp_iter(reusing_loader(family["down"], device), family["vec"], 0.8))
    assert list(got) == Checkpoint(family["down"]).names()
    ptrs = {t.untyped_storage().data_ptr() for t in got.values() if t.numel()}
    assert len(ptrs) == len([t for t in got.values() if t.numel()])  # no two outputs share memory
    for n in ref.names():
        assert got[n].device.type == torch.device(device).type
        assert_bitwise_equal(got[n].cpu(), ref.get(n), what=n)


@pytest.mark.parametrize("prefetch", [True, False])
def test_outputs_never_alias_the_loaders_buffer(family, prefetch):  # noqa: F811
    seen = {}

    def loader():
        for name, t in reusing_loader(family["down"]):
            seen[name] = t
            yield name, t

    before = {n: t.clone() for n, t in reusing_loader(family["down"])}
    buffers = set()
    for name, t in serving.stamp_iter(loader(), family["vec"], prefetch=prefetch):
        src = seen[name]
        buffers.add(src.untyped_storage().data_ptr())
        assert t.untyped_storage().data_ptr() != src.untyped_storage().data_ptr(), name
        if not prefetch:  # the loader has not moved on: its tensor is as it gave it
            assert_bitwise_equal(src, before[name], what=f"{name} (the loader's tensor is not modified)")
    assert len(buffers) == 1  # the loader really reused one buffer


def test_prefetch_stops_with_the_caller_and_passes_loader_errors(family):  # noqa: F811
    pulled = []

    def loader():
        for name, t in reusing_loader(family["down"]):
            pulled.append(name)
            yield name, t

    it = serving.stamp_iter(loader(), family["vec"], prefetch=True)
    next(it)
    it.close()  # the caller stops early: the helper thread stops too, after at most two more tensors
    assert len(pulled) <= 3
    assert not any(t.name == "fpcore-stamp_iter" for t in threading.enumerate())

    def broken():
        yield from list(reusing_loader(family["down"]))[:2]
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(serving.stamp_iter(broken(), family["vec"], prefetch=True))


def test_licensee_code_equals_coded_stamp(family, coded_ref, backend):  # noqa: F811
    _, device = backend
    g, ref = coded_ref
    got = collect(serving.stamp_iter(reusing_loader(g, device), family["vec"], code=(KEY, "acme")))
    for n in ref.names():
        assert_bitwise_equal(got[n].cpu(), ref.get(n), what=n)
    other = collect(serving.stamp_iter(reusing_loader(g), family["vec"], code=(KEY, "globex")))
    plain = collect(serving.stamp_iter(reusing_loader(g), family["vec"]))
    coded = [n for n, t in plain.items() if t.dim() >= 2]
    assert any(not torch.equal(got[n].cpu(), plain[n]) for n in coded)  # the code moved something
    assert any(not torch.equal(got[n].cpu(), other[n]) for n in coded)  # and another licensee's differs


def test_code_key_file_and_state_dict_input(family):  # noqa: F811
    key_file = family["tmp"] / "trace.key"
    KEY.save(key_file)
    state = {n: t.clone() for n, t in reusing_loader(family["down"])}
    a = collect(serving.stamp_iter(state, family["vec"], code=(key_file, "acme")))
    b = collect(serving.stamp_iter(reusing_loader(family["down"]), family["vec"], code=(KEY, "acme")))
    for n in a:
        assert_bitwise_equal(a[n], b[n], what=n)


def test_missing_vector_tensor_is_named_at_the_end(family):  # noqa: F811
    pulled = []
    pairs = ((n, t) for n, t in reusing_loader(family["down"]) if n != "model.layers.0.mlp.weight")
    it = serving.stamp_iter(pairs, family["vec"])
    with pytest.raises(
        CheckpointError, match=r"stamp_iter: the loader ended without vector tensor 'model.layers.0.mlp"
    ):
        for name, _ in it:
            pulled.append(name)
    assert "model.embed_tokens.weight" in pulled  # what came was yielded before the error


def test_lineage_checked_before_the_first_tensor(family):  # noqa: F811
    log = []
    loader = reusing_loader(family["down"], log=log)
    shapes = {n: tuple(i.shape) for n, i in Checkpoint(family["down"]).items()}
    shapes["model.layers.0.q.weight"] = (8, 9)
    with pytest.raises(CheckpointError, match=r"stamp_iter: tensor 'model.layers.0.q.weight' has shape \(8, 9\)"):
        serving.stamp_iter(loader, family["vec"], shapes=shapes)
    assert log == []  # refused before the loader read anything
    with pytest.raises(CheckpointError, match="no-such-vector.safetensors: no such file"):
        serving.stamp_iter(reusing_loader(family["down"], log=log), family["tmp"] / "no-such-vector.safetensors")
    assert log == []


def test_refusals_name_the_tensor(family):  # noqa: F811
    def swap(name, t):
        return ((n, t if n == name else x) for n, x in reusing_loader(family["down"]))

    with pytest.raises(CheckpointError, match=r"tensor 'model.layers.0.mlp.weight' has shape \(16, 9\)"):
        list(serving.stamp_iter(swap("model.layers.0.mlp.weight", torch.zeros(16, 9).bfloat16()), family["vec"]))
    with pytest.raises(CheckpointError, match=r"tensor 'model.layers.0.q.weight' is torch.int32"):
        list(serving.stamp_iter(swap("model.layers.0.q.weight", torch.zeros(8, 8, dtype=torch.int32)), family["vec"]))
    twice = [("model.norm.weight", torch.ones(8)), ("model.norm.weight", torch.ones(8))]
    with pytest.raises(CheckpointError, match="'model.norm.weight' came twice"):
        list(serving.stamp_iter(twice, family["vec"]))
    with pytest.raises(TypeError, match="item 0 is not a"):
        list(serving.stamp_iter([torch.ones(2)], family["vec"]))
    with pytest.raises(TypeError, match="'model.norm.weight' is a list"):
        list(serving.stamp_iter([("model.norm.weight", [1.0])], family["vec"]))
    with pytest.raises(ValueError, match="alpha must be finite"):
        serving.stamp_iter([], family["vec"], float("nan"))
    with pytest.raises(TypeError, match="code must be"):
        serving.stamp_iter([], family["vec"], code=KEY)
    with pytest.raises(ValueError, match="licensee id"):
        serving.stamp_iter([], family["vec"], code=(KEY, ""))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_stay_on_the_gpu(family, stamped_ref):  # noqa: F811
    ref = stamped_ref
    for n, t in serving.stamp_iter(reusing_loader(family["down"], "cuda"), family["vec"], 0.8):
        assert t.is_cuda
        assert_bitwise_equal(t.cpu(), ref.get(n), what=n)


def test_output_buffers_are_reused_only_once_let_go():
    """stamp_iter's CPU output pool: a buffer comes back only when nothing outside holds its storage."""
    pool = serving._Buffers()
    cpu = torch.device("cpu")
    shape = (1024, 1024)  # 4 MB of fp32: pooled

    def get():
        return pool.empty(shape, torch.float32, cpu)

    def ptr(t):
        return t.untyped_storage().data_ptr()

    a = get()
    pa = ptr(a)
    assert a._base is None and a.is_contiguous() and a.shape == shape
    del a
    b = get()
    assert ptr(b) == pa  # let go: reused
    c = get()
    assert ptr(c) != pa  # b is held
    held = {
        "a view": lambda t: t[1:],
        "its storage": lambda t: t.untyped_storage(),
        "a parameter": lambda t: torch.nn.Parameter(t, requires_grad=False),
        "a numpy array": lambda t: t.numpy(),
        "a reshape": lambda t: t.view(-1),
    }
    keep = []
    for what, make in held.items():
        t = get()
        p = ptr(t)
        keep.append(make(t))
        del t
        for other in (b, c):
            assert ptr(other) != p
        t2 = get()
        assert ptr(t2) != p, f"a buffer still held through {what} was reused"
        keep.append(t2)
    keep.clear()
    del b, c
    # small tensors and other devices are not pooled; buffers idle past HORIZON requests are dropped
    n = len(pool.bufs)
    pool.empty((4,), torch.bfloat16, cpu)
    assert len(pool.bufs) == n
    for _ in range(serving._Buffers.HORIZON + 1):
        pool.empty((2048, 1024), torch.bfloat16, cpu)
    assert all(buf.numel() == 2048 * 1024 * 2 for buf, _, _ in pool.bufs)


@pytest.mark.parametrize("hold", [True, False])
def test_pooled_outputs_equal_the_stamped_checkpoint(tmp_path, monkeypatch, hold):
    """Every tensor goes through the pool (MIN_BYTES 0), over a model of same-shaped layers: held or
    dropped by the caller, the values are those of `fpcore stamp`, a held tensor is never overwritten by
    a later one, and memory the caller let go is reused."""
    from fpcore.io import write_safetensors

    monkeypatch.setattr(serving._Buffers, "MIN_BYTES", 0)
    g = torch.Generator().manual_seed(3)
    shapes = {f"model.layers.{k}.mlp.up_proj.weight": (48, 32) for k in range(6)} | {"model.norm.weight": (32,)}
    models = {}
    for name, scale in (("base", 0.0), ("tuned", 1e-2), ("down", 3e-3)):
        sd = {n: (torch.ones(sh) + scale * torch.randn(sh, generator=g)).bfloat16() for n, sh in shapes.items()}
        models[name] = tmp_path / f"{name}.safetensors"
        write_safetensors(models[name], sd, {"format": "pt"})
    vec = tmp_path / "tau.safetensors"
    stamping.extract(models["tuned"], models["base"], vec)
    stamping.stamp([(vec, 0.8)], [models["down"]], None, outputs=[tmp_path / "ref.safetensors"])
    ref = Checkpoint(tmp_path / "ref.safetensors")
    got, ptrs = {}, []
    for name, t in serving.stamp_iter(reusing_loader(models["down"]), vec, 0.8):
        ptrs.append(t.untyped_storage().data_ptr())
        got[name] = t if hold else t.clone()
        if hold:  # every tensor held so far is still what it was when yielded
            for n, u in got.items():
                assert_bitwise_equal(u, ref.get(n), what=n)
        del t
    assert list(got) == ref.names()
    for n in ref.names():
        assert_bitwise_equal(got[n], ref.get(n), what=n)
    if hold:
        assert len(set(ptrs)) == len(ptrs)
    else:
        assert len(set(ptrs)) < len(ptrs)  # the pool reused memory the caller let go
