"""The `fpcore` command end to end (in-process and as a subprocess): outputs, --json, exit codes."""

import json
import subprocess
import sys

import pytest
import torch

from fpcore.cli import main
from fpcore.io import Checkpoint
from tests.test_stamping import base_tensors, make_model, perturbed


@pytest.fixture
def models(tmp_path):
    base = base_tensors()
    return {
        "base": make_model(tmp_path / "base", base),
        "tuned": make_model(tmp_path / "tuned", perturbed(base, 1, 0.05)),
        "d1": make_model(tmp_path / "d1", perturbed(base, 2, 0.02, skip=())),
        "d2": make_model(tmp_path / "d2", perturbed(base, 3, 0.02, skip=())),
        "tmp": tmp_path,
    }


def test_extract_stamp_unstamp_inspect(models, capsys):
    t = models["tmp"]
    assert main(["extract", str(models["tuned"]), str(models["base"]), "-o", str(t / "v.safetensors"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["command"] == "extract" and res["tensors"] == 3 and "model.norm.weight" in res["skipped"]
    assert main(["stamp", str(t / "v.safetensors"), str(models["d1"]), str(models["d2"]), "-o", str(t / "out")]) == 0
    out = capsys.readouterr().out
    assert "stamped 2 model(s)" in out and str(t / "out" / "d1") in out
    assert main(["unstamp", str(t / "v.safetensors"), str(t / "out" / "d1"), "-o", str(t / "un"), "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert Checkpoint(t / "un").names() == Checkpoint(models["d1"]).names()
    assert main(["inspect", str(t / "v.safetensors"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "fingerprint-vector" and info["vector"]["dtype"] == "bf16" and info["tensors"] == 3
    assert main(["inspect", str(models["base"])]) == 0
    assert "model, 5 tensors" in capsys.readouterr().out


def test_errors_exit_2_with_a_clear_message(models, capsys):
    t = models["tmp"]
    assert main(["stamp", str(t / "missing.safetensors"), str(models["d1"]), "-o", str(t / "x")]) == 2
    assert "fpcore stamp: error:" in capsys.readouterr().err
    main(["extract", str(models["tuned"]), str(models["base"]), "-o", str(t / "v.safetensors"), "--quiet"])
    assert main(["extract", str(models["tuned"]), str(models["base"]), "-o", str(t / "v.safetensors")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (
        main(["stamp", str(t / "v.safetensors"), str(models["d1"]), "-o", str(t / "y"), "--alpha", "1", "--alpha", "2"])
        == 2
    )
    assert "2 --alpha values for 1 vectors" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ei:
        main(["stamp"])
    assert ei.value.code == 2
    with pytest.raises(SystemExit) as ei:  # -o and --in-place exclude each other
        main(["stamp", str(t / "v.safetensors"), str(models["d1"]), "-o", str(t / "z"), "--in-place"])
    assert ei.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_stamp_and_unstamp_in_place(models, capsys):
    t = models["tmp"]
    main(["extract", str(models["tuned"]), str(models["base"]), "-o", str(t / "v.safetensors"), "--quiet"])
    main(["stamp", str(t / "v.safetensors"), str(models["d1"]), "-o", str(t / "ref"), "--quiet"])
    assert main(["stamp", str(t / "v.safetensors"), str(models["d1"]), "--in-place", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"] == [str(models["d1"])]
    ref, got = Checkpoint(t / "ref"), Checkpoint(models["d1"])
    assert all(torch.equal(ref.get(n), got.get(n)) for n in ref.names())
    assert main(["unstamp", str(t / "v.safetensors"), str(models["d1"]), "--in-place", "--quiet"]) == 0
    assert not list(models["d1"].glob(".fpcore-tmp-*"))


def test_console_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "fpcore.cli", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("extract", "stamp", "unstamp", "inspect"):
        assert cmd in out.stdout
    out = subprocess.run([sys.executable, "-m", "fpcore.cli", "stamp", "--help"], capture_output=True, text=True)
    assert "--alpha" in out.stdout and "--vector" in out.stdout and out.returncode == 0


def test_multiple_vectors_with_own_alpha(models, capsys):
    t = models["tmp"]
    for src, name in (("tuned", "v1"), ("d2", "v2")):
        args = ["extract", str(models[src]), str(models["base"]), "-o", str(t / f"{name}.safetensors")]
        assert main([*args, "--quiet", "--dtype", "fp32"]) == 0
    rc = main(["stamp", str(t / "v1.safetensors"), str(models["d1"]), "-o", str(t / "s"), "--alpha", "0.5",
               "--vector", str(t / "v2.safetensors"), "--alpha", "-1", "--quiet"])  # fmt: skip
    assert rc == 0
    import fpcore
    from fpcore.vector import FingerprintVector

    v1, v2 = FingerprintVector(t / "v1.safetensors"), FingerprintVector(t / "v2.safetensors")
    d1, s = Checkpoint(models["d1"]), Checkpoint(t / "s")
    n = "model.layers.0.q.weight"
    assert torch.equal(s.get(n), fpcore.stamp(d1.get(n), [v1.get(n), v2.get(n)], [0.5, -1.0]))


def test_extract_stamp_and_unstamp_run_without_torch(models):
    """The streaming commands never import torch (it would cost a second or more of start-up): the
    vector is the same file as extract's in-process one, the stamped model matches fpcore.stamp bit
    for bit."""
    from fpcore import stamping
    from fpcore.ops import stamp as stamp_op

    t = models["tmp"]
    vec = t / "v.safetensors"
    stamping.extract(models["tuned"], models["base"], vec)
    opts = ["--quiet", "--alpha", "0.5"]
    stamp_args = ["stamp", str(vec), str(models["d1"]), "-o", str(t / "out"), *opts]
    unstamp_args = ["unstamp", str(vec), str(t / "out"), "-o", str(t / "un"), *opts]
    extract_args = ["extract", str(models["tuned"]), str(models["base"]), "-o", str(t / "v2.safetensors"), "--quiet"]
    code = (
        "import sys\nfrom fpcore.cli import main\n"
        f"rc = main({stamp_args!r}) + main({unstamp_args!r}) + main({extract_args!r})\n"
        "print(rc, 'torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.split() == ["0", "False"], r.stderr
    out, down, v = Checkpoint(t / "out"), Checkpoint(models["d1"]), Checkpoint(vec)
    for name in v.names():
        assert torch.equal(out.get(name), stamp_op(down.get(name), v.get(name), 0.5))
    assert Checkpoint(t / "un").names() == down.names()
    assert (t / "v2.safetensors").read_bytes() == vec.read_bytes()
