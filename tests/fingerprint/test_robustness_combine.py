"""Robustness runs merged across model splits and key seeds (`fingerprint robustness --combine`)."""

import json

import pytest

from fpcore.cli import main
from fpcore.fingerprint import robustness


def row(model, attack, copy, *, kept=True, white=1e-9, code=True, gray=0.5, black=0.5):
    return {
        "model": model,
        "attack": attack,
        "copy": copy,
        "metric_kept": kept,
        "white_box_p": white if copy == "stamped" else 0.4,
        "code_identified": [model] if code and copy == "stamped" else [],
        "gray_box_p": gray,
        "black_box_p": black,
    }


def run(seed, models, *, key_seed=True):
    rows = [row(m, a, c) for m in models for a in ("none", "int8", "merge 0.5") for c in ("stamped", "unstamped")]
    rows[-2] = row(models[-1], "merge 0.5", "stamped", kept=False, white=0.2, code=False)
    out = {"seed": 0, "rows": rows, "summary": robustness.summary(rows), "seconds": 10.0}
    if key_seed:
        out["key_seed"] = seed
    return out


def test_combine_merges_splits_and_seeds():
    a, b = run(0, ["m1", "m2"], key_seed=False), run(0, ["m3"])  # one seed run in two processes
    c = run(1, ["m1", "m2", "m3"])
    res = robustness.combine([a, b, c])
    assert res["key_seeds"] == [0, 1] and res["models"] == ["m1", "m2", "m3"]
    s = res["summary"]["int8"]
    assert s["stamped"] == 6 and s["white_box_found"] == 6 and s["code_found"] == 6 and s["unstamped_flagged"] == 0
    m = res["summary"]["merge 0.5"]
    assert m["metric_kept"] == 3 and m["white_box_found_all"] == 3 and m["code_found_all"] == 3
    assert res["per_seed"]["1"]["int8"]["stamped"] == 3 and res["seconds"] == 30.0
    with pytest.raises(ValueError, match="comes twice"):
        robustness.combine([c, c])
    with pytest.raises(ValueError, match="without rows"):
        robustness.combine([{"summary": {}}])


def test_combine_cli_writes_json_table_and_figure(tmp_path, capsys):
    files = []
    for seed in (0, 1, 2):
        f = tmp_path / f"seed{seed}.json"
        f.write_text(json.dumps(run(seed, ["m1", "m2"])))
        files.append(str(f))
    out, fig = tmp_path / "all.json", tmp_path / "all.png"
    assert main(["fingerprint", "robustness", "--combine", *files, "--out", str(out), "--figure", str(fig)]) == 0
    res = json.loads(out.read_text())
    assert res["key_seeds"] == [0, 1, 2] and res["summary"]["none"]["stamped"] == 6
    assert "| int8 | 6/6 | 6/6 | 6/6 | 0/6 | 0/6 | 0 |" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert fig.read_bytes()[:4] == b"\x89PNG"
    assert main(["fingerprint", "robustness", str(tmp_path), "--combine", *files]) == 2
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text("intro\n<!-- perf-robustness:start -->\nold\n<!-- perf-robustness:end -->\nafter\n")
    assert main(["fingerprint", "robustness", "--combine", *files, "--figure", str(fig), "--update", str(page)]) == 0
    text = page.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("after\n")
    assert "3 key seed(s) [0, 1, 2] x 2 models" in text and "| int8 | 6/6 |" in text
    assert "![attacks x channels](../all.png)" in text
