"""Missing optional extras: the CLI says which package and which extra to install, in one line, exit 2
(exit 1 is a verdict); `python -m fpcore.info` lists every extra and what of it is installed."""

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from fpcore import _extras, info
from fpcore.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _hide(monkeypatch, module: str) -> None:
    """Make `import module` (and its submodules) raise ModuleNotFoundError, as if not installed."""
    for name in [m for m in sys.modules if m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)


@pytest.mark.parametrize(
    "module, argv, expected",
    [
        (
            "sklearn",
            ["pot", "eval", "--seeds", "1", "--quiet"],
            "fpcore pot eval: needs the optional package 'sklearn' (scikit-learn): pip install 'fpcore[pot]'",
        ),
        (
            "transformers",
            ["demo", "--out", "{tmp}/demo"],
            "fpcore demo: needs the optional package 'transformers': pip install 'fpcore[llm]'",
        ),
        (
            "distributed",
            ["fleet", "run", "{tmp}/plan.yaml"],
            "fpcore fleet run: needs the optional package 'distributed': pip install 'fpcore[fleet]'",
        ),
    ],
    ids=["pot-sklearn", "llm-transformers", "fleet-distributed"],
)
def test_missing_extra_is_one_line_and_exit_2(module, argv, expected, monkeypatch, tmp_path, capsys):
    _hide(monkeypatch, module)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err == expected + "\n"
    assert "Traceback" not in err and "Traceback" not in out
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_missing_extra_as_a_subprocess_has_no_traceback(tmp_path):
    code = "import sys\nsys.modules['sklearn'] = None\nfrom fpcore.cli import main\nsys.exit(main())\n"
    cmd = [sys.executable, "-c", code, "pot", "eval", "--seeds", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 2
    assert "pip install 'fpcore[pot]'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_package_in_two_extras_names_the_commands_one():
    assert _extras.extras_of("blake3") == ("pot", "fleet")
    assert _extras.message("blake3", command="fleet run") == (
        "needs the optional package 'blake3': pip install 'fpcore[fleet]'"
    )
    assert _extras.message("blake3", command="pot verify").endswith("pip install 'fpcore[pot]'")
    assert _extras.message("blake3", command="stamp").endswith("pip install 'fpcore[pot]' or 'fpcore[fleet]'")
    assert _extras.message("yaml") == "needs the optional package 'yaml' (pyyaml): pip install 'fpcore[fleet]'"
    assert _extras.message("matplotlib.pyplot").endswith("'fpcore[dev]'")


def _raise_in_inspect(monkeypatch, exc: BaseException) -> None:
    def boom(args):
        raise exc

    monkeypatch.setattr("fpcore.cli.cmd_inspect", boom)


def test_a_module_in_no_extra_keeps_its_traceback(monkeypatch, tmp_path):
    _raise_in_inspect(monkeypatch, ModuleNotFoundError("No module named 'nowhere'", name="nowhere"))
    with pytest.raises(ModuleNotFoundError, match="nowhere"):
        main(["inspect", str(tmp_path)])


def test_an_installed_but_broken_package_keeps_its_traceback(monkeypatch, tmp_path):
    """sklearn is installed: an ImportError naming it (a wrong version, a broken install) is not
    reported as a missing extra."""
    pytest.importorskip("sklearn")
    _raise_in_inspect(monkeypatch, ImportError("cannot import name 'x' from 'sklearn'", name="sklearn"))
    with pytest.raises(ImportError, match="cannot import name"):
        main(["inspect", str(tmp_path)])


def test_require_raises_missing_extra_with_what_needed_it(monkeypatch):
    from fpcore._dask import require_dask
    from fpcore.fingerprint.cli import _need_llm

    _hide(monkeypatch, "distributed")
    with pytest.raises(_extras.MissingExtra) as exc:
        require_dask("pot verify --workers/--scheduler")
    assert str(exc.value) == (
        "pot verify --workers/--scheduler: needs the optional package 'distributed': pip install 'fpcore[fleet]'"
    )
    assert isinstance(exc.value, ModuleNotFoundError) and exc.value.name == "distributed"
    _hide(monkeypatch, "tokenizers")
    with pytest.raises(_extras.MissingExtra, match=r"^demo: needs the optional package 'tokenizers'.*fpcore\[llm\]"):
        _need_llm("demo")


def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()


def test_the_table_matches_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert list(_extras.EXTRAS) == list(extras)
    for extra, reqs in extras.items():
        assert [d for _, d in _extras.EXTRAS[extra]] == [_requirement_name(r) for r in reqs], extra


def _is_installed(dist: str) -> bool:
    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def test_info_lists_every_extra_and_marks_installed_ones():
    r = subprocess.run([sys.executable, "-m", "fpcore.info"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    start = lines.index("optional extras (pip install 'fpcore[EXTRA]'):")
    rows = {line.split()[0]: line for line in lines[start + 1 :]}
    assert list(rows) == list(_extras.EXTRAS)
    for extra, pkgs in _extras.EXTRAS.items():
        states = [_is_installed(d) for _, d in pkgs]
        word = "installed" if all(states) else ("partly" if any(states) else "missing")
        assert rows[extra].split()[1] == word, rows[extra]
        for (_, dist), ok in zip(pkgs, states, strict=True):
            shown = f"{dist} {metadata.version(dist)}" if ok else f"{dist} (not installed)"
            assert shown in rows[extra]


def test_info_json_has_the_extras(monkeypatch, capsys):
    _hide(monkeypatch, "tqdm")  # importable no more: reported as not installed
    assert info.main(["--json"]) == 0
    extras = json.loads(capsys.readouterr().out)["extras"]
    assert list(extras) == list(_extras.EXTRAS)
    fleet = {p["package"]: p for p in extras["fleet"]["packages"]}
    assert fleet["tqdm"]["installed"] is False and extras["fleet"]["installed"] is False
    for extra, e in extras.items():
        for p in e["packages"]:
            if p["package"] != "tqdm":
                assert p["installed"] == _is_installed(p["package"]), (extra, p)
                assert p["version"] == (metadata.version(p["package"]) if p["installed"] else None)
