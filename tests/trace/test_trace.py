"""Trace keys, the candidates' null, and `fpcore stamp --trace-key` + `fpcore trace` end to end."""

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fpcore import stamping
from fpcore.backends.reference.code import stamp_code_reference
from fpcore.cli import main
from fpcore.io import Checkpoint, write_safetensors
from fpcore.testing import assert_bitwise_equal
from fpcore.trace.find import candidate_ids, trace
from fpcore.trace.key import TraceKey, TraceKeyError
from fpcore.trace.score import chernoff_log_p, score_candidates

SHAPES = {
    "embed.weight": (512, 128),
    "layers.0.q.weight": (256, 256),
    "layers.0.mlp.weight": (512, 256),
    "norm.weight": (128,),
}


def make(folder: Path, seed: int = 0, dtype=torch.bfloat16, shapes=SHAPES) -> Path:
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True)
    sd = {n: (torch.randn(s, generator=g) * 0.02).to(dtype) for n, s in shapes.items()}
    sd["norm.weight"] = torch.ones(shapes["norm.weight"], dtype=dtype)
    write_safetensors(folder / "model.safetensors", sd, {"format": "pt"})
    (folder / "config.json").write_text("{}")
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trace")
    key_path = TraceKey.generate().save(tmp / "trace.key")
    ref = make(tmp / "ref")
    m2 = make(tmp / "m2")  # the same weights, another folder name
    out = tmp / "copies"
    stamping.stamp([], [ref, m2], out, trace_key=TraceKey.load(key_path), licensees=["acme", "globex"])
    ids = tmp / "ids.txt"
    ids.write_text("\n".join(["acme", "globex"] + [f"customer-{i}" for i in range(998)]) + "\n")
    return {"tmp": tmp, "key": key_path, "ref": ref, "acme": out / "ref", "globex": out / "m2", "ids": ids}


# ---- the key file ----------------------------------------------------------------------------


def test_key_round_trip_private_and_never_overwritten(tmp_path):
    k = TraceKey.generate(fp32_shift=12)
    p = k.save(tmp_path / "k.key")
    assert oct(os.stat(p).st_mode & 0o777) == "0o600"
    back = TraceKey.load(p)
    assert back.secret == k.secret and back.fp32_shift == 12 and len(back.secret) * 8 >= 256
    with pytest.raises(FileExistsError, match="never overwritten"):
        TraceKey.generate().save(p)
    assert TraceKey.load(p).secret == k.secret
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".fpcore-tmp")]


def test_damaged_other_version_and_missing_keys_are_refused(tmp_path):
    p = TraceKey.generate().save(tmp_path / "k.key")
    obj = json.loads(p.read_text())
    bad = dict(obj, secret=("0" if obj["secret"][0] != "0" else "1") + obj["secret"][1:])
    (tmp_path / "damaged.key").write_text(json.dumps(bad))
    with pytest.raises(TraceKeyError, match="damaged.key: trace key checksum does not match"):
        TraceKey.load(tmp_path / "damaged.key")
    (tmp_path / "v2.key").write_text(json.dumps(dict(obj, version=2)))
    with pytest.raises(TraceKeyError, match="v2.key: trace key version 2"):
        TraceKey.load(tmp_path / "v2.key")
    (tmp_path / "junk.key").write_bytes(b"\x00\xff not json")
    with pytest.raises(TraceKeyError, match="junk.key: not a trace key"):
        TraceKey.load(tmp_path / "junk.key")
    with pytest.raises(FileNotFoundError, match="nope.key"):
        TraceKey.load(tmp_path / "nope.key")


def test_licensee_ids_are_checked():
    k = TraceKey.generate()
    for bad, msg in (("", "non-empty"), ("x" * 257, "257 bytes"), ("a\nb", "line break")):
        with pytest.raises(ValueError, match=msg):
            k.symbols(bad)
    assert len(k.symbols("é" * 128)) == 64  # 256 bytes is allowed
    assert k.symbols("a") != k.symbols("b") and k.symbols("a") == k.symbols("a")
    assert bytes(k.symbol_matrix(["a", "b"])[1]) == k.symbols("b")


def test_candidate_lists(tmp_path):
    assert candidate_ids(3) == ["0", "1", "2"] and candidate_ids("2") == ["0", "1"]
    f = tmp_path / "ids"
    f.write_text("a\n\n b \n")
    assert candidate_ids(f) == ["a", "b"]
    f.write_text("a\na\n")
    with pytest.raises(ValueError, match="repeat"):
        candidate_ids(f)
    f.write_text("\n")
    with pytest.raises(ValueError, match="no candidate ids"):
        candidate_ids(f)
    with pytest.raises(FileNotFoundError):
        candidate_ids(tmp_path / "missing")


# ---- the null ---------------------------------------------------------------------------------


def test_chernoff_bound_holds_against_exact_enumeration():
    """T = sum of one uniform draw from each row of Y: the bound is >= the exact tail at every t."""
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(3, 16))
    Y[1, 5] = 9.0  # another licensee's strong pattern in the table
    totals = np.array([sum(c) for c in itertools.product(*Y)])
    ts = np.linspace(totals.min(), totals.max(), 60)
    exact = np.array([(totals >= t).mean() for t in ts])
    bound = np.exp(chernoff_log_p(Y, ts))
    assert np.all(bound >= exact * (1 - 1e-9))
    assert bound[-1] < 0.01  # and it is not vacuous at the top


def test_innocent_candidates_are_calibrated_when_another_code_is_present():
    """A table where one licensee's code is strongly present: innocents' p-values are >= uniform."""
    rng = np.random.default_rng(1)
    S = 64
    Y = rng.normal(size=(S, 16))
    planted = rng.integers(0, 16, size=S)
    Y[np.arange(S), planted] += 6.0
    sym = rng.integers(0, 16, size=(20_000, S)).astype(np.uint8)
    sym[0] = planted
    ids = [str(i) for i in range(len(sym))]
    ident, runners, fig = score_candidates(Y, sym, ids, 1e-6)
    assert [c.licensee for c in ident] == ["0"] and fig["candidates"] == 20_000
    T = Y[np.arange(S)[None, :], sym[1:].astype(np.int64)].sum(axis=1)
    p = np.exp(chernoff_log_p(Y, T))
    for x in (0.01, 0.05, 0.2):
        assert (p <= x).mean() <= x


# ---- stamping with a code, and tracing -------------------------------------------------------


def test_file_stamp_with_a_code_is_the_twin_and_leaves_norms_alone(world):
    key = TraceKey.load(world["key"])
    ref, out = Checkpoint(world["ref"]), Checkpoint(world["acme"])
    for n, _ in ref.items():
        if n == "norm.weight":
            assert_bitwise_equal(out.get(n), ref.get(n), what=n)
            continue
        want = torch.empty_like(ref.get(n))
        stamp_code_reference(want, ref.get(n), [], [], key.code("acme", n))
        assert_bitwise_equal(out.get(n), want, what=n)


def test_vector_and_code_together_equal_the_twin(world, tmp_path):
    key = TraceKey.load(world["key"])
    ref = Checkpoint(world["ref"])
    tau = {n: (torch.randn(ref.info(n).shape) * 0.002).to(torch.bfloat16) for n in ("layers.0.q.weight", "norm.weight")}
    tuned = make(tmp_path / "tuned")
    sd = {n: ref.get(n) for n, _ in ref.items()}
    for n, t in tau.items():
        sd[n] = (sd[n].float() + t.float()).to(torch.bfloat16)
    write_safetensors(tuned / "model.safetensors", sd, {"format": "pt"})
    vec = tmp_path / "v.safetensors"
    stamping.extract(tuned, world["ref"], vec)
    V = Checkpoint(vec)
    out = tmp_path / "stamped"
    assert (
        main(
            [
                "stamp",
                str(vec),
                str(world["ref"]),
                "-o",
                str(out),
                "--trace-key",
                str(world["key"]),
                "--licensee",
                "acme",
                "--quiet",
            ]
        )
        == 0
    )
    got = Checkpoint(out)
    for n, _ in ref.items():
        want = torch.empty_like(ref.get(n))
        vecs = [V.get(n)] if n in V.names() else []
        code = key.code("acme", n) if ref.info(n).shape.__len__() >= 2 else None
        stamp_code_reference(want, ref.get(n), vecs, [1.0] * len(vecs), code)
        assert_bitwise_equal(got.get(n), want, what=n)


def test_trace_names_the_licensee_and_nobody_else(world, capsys):
    for who in ("acme", "globex"):
        rc = main(
            [
                "trace",
                str(world[who]),
                "--reference",
                str(world["ref"]),
                "--trace-key",
                str(world["key"]),
                "--licensees",
                str(world["ids"]),
                "--json",
            ]
        )
        out = json.loads(capsys.readouterr().out)
        assert rc == 0 and [c["licensee"] for c in out["identified"]] == [who]
        assert out["identified"][0]["p"] < 1e-30 and out["identified"][0]["z"] > 10
        assert all(c["p"] >= 1e-6 for c in out["runners_up"])


def test_averaged_copies_name_both_colluders(world, tmp_path):
    a, b = Checkpoint(world["acme"]), Checkpoint(world["globex"])
    avg = tmp_path / "avg"
    avg.mkdir()
    write_safetensors(avg / "model.safetensors", {n: ((a.get(n).float() + b.get(n).float()) / 2) for n, _ in a.items()})
    res = trace(avg, world["ref"], TraceKey.load(world["key"]), world["ids"])
    assert sorted(c.licensee for c in res.identified) == ["acme", "globex"]


def test_unstamped_wrong_key_and_wrong_reference_name_nobody(world, tmp_path, capsys):
    other_key = TraceKey.generate().save(tmp_path / "other.key")
    other_ref = make(tmp_path / "other", seed=5)
    c = Checkpoint(world["acme"])
    perm = tmp_path / "permuted"  # the licensee's copy with every matrix's rows reordered: noise, not a name
    perm.mkdir()
    g = torch.Generator().manual_seed(1)
    write_safetensors(
        perm / "model.safetensors",
        {
            n: c.get(n)[torch.randperm(c.get(n).shape[0], generator=g)] if c.get(n).dim() == 2 else c.get(n)
            for n, _ in c.items()
        },
    )
    cases = [
        (perm, world["ref"], world["key"]),
        (world["ref"], world["ref"], world["key"]),  # unstamped
        (make(tmp_path / "drifted", seed=9), world["ref"], world["key"]),  # an unrelated model
        (world["acme"], world["ref"], other_key),
        (world["acme"], other_ref, world["key"]),
    ]
    for suspect, ref, key in cases:
        rc = main(
            ["trace", str(suspect), "--reference", str(ref), "--trace-key", str(key), "--licensees", "10000", "--json"]
        )
        out = json.loads(capsys.readouterr().out)
        assert rc == 1 and out["identified"] == [], (suspect, ref, key)


def test_code_survives_drift_and_int8(world, tmp_path):
    key = TraceKey.load(world["key"])
    c = Checkpoint(world["acme"])
    g = torch.Generator().manual_seed(3)
    for name, f in (
        ("drift", lambda t: t.float() + 0.1 * t.float().std() * torch.randn(t.shape, generator=g)),
        (
            "int8",
            lambda t: (
                (t.float() / (s := t.float().abs().amax(1, keepdim=True) / 127)).round() * s
                if t.dim() == 2
                else t.float()
            ),
        ),
    ):
        d = tmp_path / name
        d.mkdir()
        write_safetensors(d / "model.safetensors", {n: f(c.get(n)) for n, _ in c.items()})
        res = trace(d, world["ref"], key, world["ids"])
        assert [x.licensee for x in res.identified] == ["acme"], name


# ---- bad input: exit 2, nothing written -------------------------------------------------------


def test_bad_input_exits_2_and_writes_nothing(world, tmp_path, capsys):
    key, ref = str(world["key"]), str(world["ref"])
    out = tmp_path / "out"
    m2 = str(make(tmp_path / "m2"))
    cases = [
        ["stamp", ref, m2, "-o", str(out), "--trace-key", key, "--licensee", "a"],  # 1 id for 2 models
        ["stamp", ref, "-o", str(out), "--trace-key", key, "--licensee", "a", "--licensee", "b"],
        ["stamp", ref, "-o", str(out), "--trace-key", key, "--licensee", ""],
        ["stamp", ref, "-o", str(out), "--trace-key", key, "--licensee", "x" * 257],
        ["stamp", ref, "-o", str(out), "--licensee", "a"],  # no key
        ["stamp", ref, "-o", str(out), "--trace-key", str(tmp_path / "missing.key"), "--licensee", "a"],
    ]
    damaged = tmp_path / "damaged.key"
    damaged.write_text(Path(key).read_text().replace('"version": 1', '"version": 1, "x": 0'))
    cases.append(["stamp", ref, "-o", str(out), "--trace-key", str(damaged), "--licensee", "a"])
    other = make(tmp_path / "arch", shapes={**SHAPES, "layers.0.q.weight": (128, 256)})
    cases += [
        ["trace", str(world["acme"]), "--reference", str(other), "--trace-key", key, "--licensees", "5"],
        ["trace", str(world["acme"]), "--reference", ref, "--trace-key", str(damaged), "--licensees", "5"],
        ["trace", str(world["acme"]), "--reference", ref, "--trace-key", key, "--licensees", "0"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err
        assert not out.exists()
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".fpcore-tmp")]


def test_trace_key_new_cli(tmp_path, capsys):
    p = tmp_path / "k.key"
    assert main(["trace-key", "new", "-o", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(p)
    assert main(["trace-key", "new", "-o", str(p)]) == 2
    assert TraceKey.load(p).fp32_shift == 14


def test_vocabulary_growth_rows_are_coded_too(world, tmp_path):
    """A model with a grown embedding: tau covers the shared rows, the code covers every row."""
    key = TraceKey.load(world["key"])
    grown = make(tmp_path / "grown", shapes={**SHAPES, "embed.weight": (600, 128)})
    out = tmp_path / "out"
    stamping.stamp([], [grown], out, trace_key=key, licensees=["acme"])
    g, o = Checkpoint(grown), Checkpoint(out)
    want = torch.empty_like(g.get("embed.weight"))
    stamp_code_reference(want, g.get("embed.weight"), [], [], key.code("acme", "embed.weight"))
    assert_bitwise_equal(o.get("embed.weight"), want, what="grown embedding")
    assert math.isfinite(float(o.get("embed.weight").float().sum()))
