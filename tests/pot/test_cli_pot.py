"""`fpcore pot ...` end to end: exit codes, --json, damaged records (exit 2, no traceback)."""

import json
import shutil
import subprocess
import sys

from fpcore.cli import main


def test_verify_exit_codes_and_json(honest, tmp_path, capsys):
    path = honest[0]
    fast = ["--checks", "integrity,data,init,replay", "--seed", "3"]
    assert main(["pot", "verify", str(path), *fast]) == 0
    out = capsys.readouterr().out
    assert "ACCEPTED" in out and "[pass] replay" in out
    assert main(["pot", "verify", str(path), *fast, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["accepted"] is True and set(res["checks"]) == {"integrity", "binding", "data", "init", "replay"}
    assert res["checks"]["replay"]["passed"] is True and "delta" in res["checks"]["replay"]
    forged = tmp_path / "forged"
    assert main(["pot", "forge", "--attack", "interp", "--from", str(path), "-o", str(forged), "--quiet"]) == 0
    assert main(["pot", "verify", str(forged), *fast]) == 1
    assert "REJECTED" in capsys.readouterr().out
    try:
        main(["pot", "verify", str(path), "--checks", "nonsense"])
        raise AssertionError("an unknown check must be refused")
    except SystemExit as exc:
        assert exc.code == 2
    assert "unknown check(s) ['nonsense']" in capsys.readouterr().err


def test_damaged_record_exits_2_without_traceback(honest, tmp_path):
    r = tmp_path / "r"
    shutil.copytree(honest[0], r)
    f = r / "ckpt" / "step_12.safetensors"
    f.write_bytes(f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 1]))
    p = subprocess.run([sys.executable, "-m", "fpcore.cli", "pot", "verify", str(r)], capture_output=True, text=True)
    assert p.returncode == 2
    assert (
        "fpcore pot: error:" in p.stderr
        and "checkpoint entry 3 (ckpt/step_12.safetensors): sha256 mismatch" in p.stderr
    )
    assert "Traceback" not in p.stderr


def test_eval_writes_table_json_png(tmp_path, capsys):
    out = tmp_path / "perf"
    args = ["pot", "eval", "--seeds", "1", "--attacks", "tamper,interp", "--checks", "integrity,data,init,replay"]
    assert main([*args, "--out", str(out), "--json", "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    kinds = [r["kind"] for r in res["records"]]
    assert kinds == ["honest", "substitution", "one-element", "tamper", "interp"]
    assert [r["accepted"] for r in res["records"]] == [True, False, False, False, False]
    assert [r["checks"]["binding"]["passed"] for r in res["records"]] == [True, False, False, None, True]
    assert res["costs"]["per_seed"][0]["replay_over_training"] > 0
    md = (out / "pot_eval.md").read_text()
    assert "| honest |" in md and "**accepted 1/1**" in md and "(f) tamper" in md and "(g) substitution" in md
    assert (out / "pot_eval.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "pot_eval.json").read_text())["seeds"] == 1


def test_demo_tells_the_story(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["pot", "demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ACCEPTED" in text and text.count("REJECTED") == 3 and "As expected" in text
    res = json.loads((out / "demo.json").read_text())
    assert [(r["kind"], r["accepted"]) for r in res] == [
        ("honest", True),
        ("substitution", False),
        ("blindfolded", False),
        ("penalty", False),
    ]
    assert [r["checks"]["binding"]["passed"] for r in res] == [True, False, True, True]
    assert main(["pot", "demo", "--out", str(out), "--quiet"]) == 0  # a rerun replaces its own folder
    (tmp_path / "other").mkdir()
    assert main(["pot", "demo", "--out", str(tmp_path / "other")]) == 2


def test_docs_pot_block_runs(tmp_path, monkeypatch, capsys):
    """The Recorder example of docs/proof-of-training.md (tests/test_docs.py leaves its run to this test)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs/proof-of-training.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, flags=re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "docs/proof-of-training.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("True |") and "segments replayed within delta" in out
    assert (tmp_path / "run1" / "record.json").is_file()
