"""`fpcore bench`: the command group and its help, the report on a small pytest-benchmark JSON (the
table, the plot, a page's marked section rewritten), and the harness kept out of the product."""

import ast
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fpcore._markers import markers, update_section, update_sections
from fpcore.cli import main

ROOT = Path(__file__).resolve().parents[2]
FPCORE = ROOT / "fpcore"


@pytest.mark.parametrize("argv", [["bench"], ["bench", "report"], ["bench", "checkpoint"]])
def test_help_exits_0(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: fpcore {' '.join(argv)}")
    if argv == ["bench"]:
        assert "checkpoint" in out and "report" in out
    if argv == ["bench", "report"]:
        assert "--update FILE" in out and "--update-readme" not in out  # the old name works, unlisted
    if argv == ["bench", "checkpoint"]:
        assert "--params" in out and "--no-mergekit" in out and "--from-json" in out


def test_full_help_lists_bench(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "bench" in capsys.readouterr().out


def test_module_entry_points_still_run():
    for mod in ("fpcore.bench.report", "fpcore.bench.checkpoint"):
        r = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"usage: python -m {mod}")


def test_old_module_paths_are_gone():
    assert not (FPCORE / "bench_report.py").exists() and not (FPCORE / "bench_checkpoint.py").exists()


def _bench(name, group, median_s, **extra):
    return {"name": name, "group": group, "stats": {"median": median_s}, "extra_info": extra}


@pytest.fixture
def results(tmp_path):
    data = {
        "datetime": "2024-01-02T03:04:05.678901",
        "machine_info": {"cpu": {"brand_raw": "Test CPU", "count": 2}},
        "benchmarks": [
            _bench(
                "test_headline_stamp_bf16_bf16",
                "headline",
                0.010,
                impl="fpcore",
                dtypes="bf16+bf16->bf16",
                gbps=30.0,
                ratio_to_roofline=1.25,
                roofline_gbps=24.0,
            ),
            _bench("test_headline_peer_torch_bf16_add_inplace", "headline", 0.015, impl="torch", gbps=20.0),
        ],
    }
    p = tmp_path / "bench.json"
    p.write_text(json.dumps(data))
    return p


def test_report_prints_the_tables_and_writes_the_plot(results, tmp_path, capsys):
    png = tmp_path / "plot.png"
    assert main(["bench", "report", str(results), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| floor | measured | target | |" in out
    assert "| stamp bf16+bf16->bf16 vs fp32 add roofline | 1.25× | ≥ 1.00× | pass |" in out
    assert "| stamp bf16 vs torch bf16 add_ (speed-up) | 1.50× | ≥ 2.00× | **miss** |" in out
    assert "| headline | stamp_bf16_bf16 | fpcore | bf16+bf16->bf16 | 10.0 | 30.0 | 1.25 |" in out
    assert "Measured on Test CPU (2 cores), 2024-01-02T03:04:05" in out
    assert png.stat().st_size > 0


@pytest.mark.parametrize("option", ["--update", "--update-readme"])
def test_report_rewrites_the_marked_section(results, tmp_path, capsys, option):
    page = tmp_path / "perf.md"
    start, end = markers("cpu")
    assert start == "<!-- perf-cpu:start -->" and end == "<!-- perf-cpu:end -->"
    page.write_text(f"# Perf\n\nintro\n\n{start}\nold table\n{end}\n\nafter\n")
    page.chmod(0o644)
    png = tmp_path / "plot.png"
    argv = ["bench", "report", str(results), "--png", str(png), option, str(page), "--section", "cpu"]
    assert main(argv) == 0
    text = page.read_text()
    head, rest = text.split(start + "\n", 1)
    body, tail = rest.split(end, 1)
    assert head == "# Perf\n\nintro\n\n" and tail == "\n\nafter\n"
    assert "old table" not in body and "| stamp bf16+bf16->bf16 vs fp32 add roofline |" in body
    assert body.endswith("![cpu benchmarks](plot.png)\n")  # linked relative to the page
    assert stat.S_IMODE(page.stat().st_mode) == 0o644  # the atomic rewrite keeps the file's mode
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_report_errors_exit_2(results, tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("no markers here\n")
    argv = ["bench", "report", str(results), "--png", str(tmp_path / "p.png"), "--update", str(page)]
    assert main(argv) == 2
    assert "no <!-- perf-cpu:start --> ... <!-- perf-cpu:end --> markers" in capsys.readouterr().err
    assert page.read_text() == "no markers here\n"
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["bench", "report", str(bad)]) == 2
    assert "not a pytest-benchmark JSON file" in capsys.readouterr().err


def test_update_section_needs_both_markers(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("<!-- perf-x:start -->\n")
    with pytest.raises(ValueError, match="markers"):
        update_section(page, "t\n", "x")
    page.write_text("a <!-- perf-x:start -->old<!-- perf-x:end --> b")
    update_section(page, "new\n", "x")
    assert page.read_text() == "a <!-- perf-x:start -->\nnew\n<!-- perf-x:end --> b"


def test_update_sections_puts_each_table_on_the_page_that_holds_its_markers(tmp_path):
    study, perf = tmp_path / "study.md", tmp_path / "perf.md"
    study.write_text("s <!-- perf-a:start -->\n<!-- perf-a:end -->\n")
    perf.write_text("p <!-- perf-b:start -->\n<!-- perf-b:end -->\n")
    assert update_sections([perf, study], {"a": "A\n", "b": "B\n"}) == [("a", study), ("b", perf)]
    assert study.read_text() == "s <!-- perf-a:start -->\nA\n<!-- perf-a:end -->\n"
    assert perf.read_text() == "p <!-- perf-b:start -->\nB\n<!-- perf-b:end -->\n"
    with pytest.raises(ValueError, match="perf-c:start"):  # placed first: nothing written
        update_sections([perf, study], {"a": "new\n", "c": "C\n"})
    assert "A\n" in study.read_text()


def test_pot_report_updates_its_two_pages(tmp_path, capsys):
    """`fpcore pot report --update PAGE ...` (and its old name --update-readme): the eval table goes to
    the page with the perf-pot-eval markers, the bench table to the page with perf-pot-bench's."""
    docs = ROOT / "docs" / "perf"
    pages = {}
    for name, section in (("pot.md", "pot-eval"), ("perf.md", "pot-bench")):
        start, end = markers(section)
        pages[section] = tmp_path / name
        pages[section].write_text(f"# {name}\n{start}\nSTALE\n{end}\n")
    argv = ["pot", "report", "--eval", str(docs / "pot_eval.json"), "--bench", str(docs / "pot_bench.json")]
    assert main([*argv, "--update", str(pages["pot-bench"]), "--update-readme", str(pages["pot-eval"])]) == 0
    assert "| honest |" in pages["pot-eval"].read_text() and "STALE" not in pages["pot-eval"].read_text()
    assert "| pot_train_plain[64] |" in pages["pot-bench"].read_text()
    assert main([*argv, "--update", str(tmp_path / "pot.md")]) == 2  # the bench table has no page
    assert "perf-pot-bench" in capsys.readouterr().err


def test_fingerprint_report_updates_the_page(tmp_path):
    from fpcore.fingerprint.report import main as report

    page = tmp_path / "fp.md"
    page.write_text("".join(f"{a}\nx\n{b}\n" for a, b in (markers("fpvec-demo"), markers("fpvec-study"))))
    docs = ROOT / "docs"
    assert (
        report([str(docs / "demo/report.json"), "--study", str(docs / "study/study.json"), "--update", str(page)]) == 0
    )
    text = page.read_text()
    assert "| docstrings |" in text and "**10 keys**" in text and "\nx\n" not in text


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    """The module an ImportFrom names, relative imports resolved against `path`'s package."""
    if not node.level:
        return node.module or ""
    package = list(path.relative_to(ROOT).with_suffix("").parts)
    package = package if path.name == "__init__.py" else package[:-1]
    if package and package[-1] == "__init__":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_bench(name: str) -> bool:
    return name == "fpcore.bench" or name.startswith("fpcore.bench.")


def _bench_imports(tree: ast.AST, path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in `tree` (at any depth) that names fpcore.bench or below."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = _absolute(node, path)
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if _is_bench(n)]
    return found


def test_no_product_module_imports_the_harness():
    """Every import statement (top level or inside a function) of every module under fpcore/ outside
    fpcore/bench/: none names fpcore.bench or a module of it."""
    files = [p for p in FPCORE.rglob("*.py") if p.relative_to(FPCORE).parts[0] != "bench"]
    assert FPCORE / "cli.py" in files and FPCORE / "fingerprint" / "report.py" in files
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in files
        for line, name in _bench_imports(ast.parse(path.read_text(), filename=str(path)), path)
    ]
    assert offenders == []


def test_the_import_check_sees_relative_and_nested_imports():
    """The walk above catches `from fpcore import bench`, `from . import bench` in fpcore/x.py and
    imports inside a function."""
    src = "def f():\n    from fpcore import bench\n    from . import bench\n    import fpcore.bench.report\n"
    found = _bench_imports(ast.parse(src), FPCORE / "x.py")
    assert [n for _, n in found] == ["fpcore.bench", "fpcore.bench", "fpcore.bench.report"]
    assert _bench_imports(ast.parse("from fpcore import bench_x, io\nimport fpcore.benchmark"), FPCORE / "x.py") == []


def test_bench_help_does_not_import_torch():
    code = (
        "import sys\nfrom fpcore.cli import main\n"
        "try:\n    main(['bench', 'checkpoint', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "print('torch' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False"
