"""Every command and Python block of README.md and docs/*.md is run by this test, or, where it is too
heavy for a test, parsed by the real parser that would run it; an unknown command or code fence fails.

How a page runs. A module fixture builds the inputs the docs name (`base/`, `tuned/`, `customer-a/`,
`customer-b/`, `customer-c/`: small Llama-shaped bf16 models that transformers loads; `customers.txt`;
a copy of docs/ for the table generators to rewrite). README.md runs first in a copy of them; every
docs page then runs in its own copy of what the README left (`fp.safetensors`, `stamped/`, `trace.key`,
`licensed/`, `claim/` ...), its blocks in order:

- shell blocks (```bash, ```sh, ```shell, ```console with `$ ` prompts, and a bare ```): each command
  (`\\` continuations joined, `# comments` read for the exit code they state: "exit N", default 0) is
  RUN (fpcore in-process through `fpcore.cli.main`; `fpcore fleet` in a subprocess, whose Dask
  workers fork from a driver without torch; `python -m MOD` through runpy) or, when PARSE_ONLY
  names it, parsed: fpcore's argv by `fpcore.cli.build_parser(argv).parse_args`, `python -m MOD` by
  the module's own argparse (run up to its parse_args), `make T` against the Makefile's targets,
  `pytest PATH` against the files, `pip install .[X]` against pyproject's extras, vLLM's and SGLang's
  commands against the names the docs' snippets define. Anything else fails.
- ```python blocks run (exec, in the page's folder); ```python no-run blocks compile (the vLLM and
  SGLang snippets, which also run below against stand-ins of the APIs they use).
- ```yaml blocks whose first line names a file (`# plan.yaml`) are written to that file.
- ```text lines that start with `fpcore ` are synopses: every command word and --option must exist.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from fpcore.io import write_safetensors
from tests.fingerprint import test_align as align_tests

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
SHELL_TAGS = {"", "bash", "sh", "shell", "console"}
OTHER_TAGS = {"python", "python no-run", "yaml", "toml", "text", "json"}

# Python blocks whose run (with assertions on what they print) is another test's: the page runner
# leaves them to it, and test_blocks_run_elsewhere_are_run_there checks that test still reads them.
RUN_ELSEWHERE = {
    ("docs/design.md", 0): "tests/test_readme.py",
    ("docs/proof-of-training.md", 0): "tests/pot/test_cli_pot.py",
}

# ---- parse-only: what is too heavy to run here, and why ---------------------------------------------


def _fp(*words: str) -> Callable[[list[str]], bool]:
    return lambda a: a[0] == "fpcore" and a[1 : 1 + len(words)] == list(words)


PARSE_ONLY: list[tuple[str, Callable[[list[str]], bool], str]] = [
    ("fpcore demo", _fp("demo"), "trains a tokenizer, a base LM and six fine-tunes: ~12 min"),
    (
        "fpcore fingerprint create/verify/study/robustness/filter",
        lambda a: a[0] == "fpcore" and a[1:2] == ["fingerprint"] and a[2] != "attack",
        "need a trained LM with its tokenizer (`make demo`): minutes",
    ),
    ("fpcore fingerprint attack --attack finetune", lambda a: "finetune" in a, "trains the model on: minutes"),
    (
        "fpcore ... fpcore-demo/...",
        lambda a: a[0] == "fpcore" and any("fpcore-demo" in x for x in a[1:]),
        "names the models `make demo` trains",
    ),
    ("fpcore pot demo / eval", lambda a: a[:2] == ["fpcore", "pot"] and a[2] in ("demo", "eval"), "minutes"),
    ("fpcore pot train --task tiny-lm", lambda a: _fp("pot", "train")(a) and "tiny-lm" in a, "trains an LM"),
    (
        "fpcore pot verify --workers",
        lambda a: _fp("pot", "verify")(a) and "--workers" in a,
        "starts Dask workers that each import torch: ~15 s for a record that replays in one",
    ),
    ("fpcore fleet run --scheduler", lambda a: _fp("fleet", "run")(a) and "--scheduler" in a, "needs a cluster"),
    (
        "fpcore bench checkpoint (a run)",
        lambda a: _fp("bench", "checkpoint")(a) and "--from-json" not in a,
        "builds and stamps 1.3B-parameter models: ~10 min, 16 GB of disk",
    ),
    ("make TARGET", lambda a: a[0] == "make", "sets up the virtualenv and runs whole suites"),
    ("pytest benchmarks/...", lambda a: a[0] == "pytest", "benchmark suites on >= 256 MB operands: minutes"),
    (
        "python -m benchmarks.STUDY",
        lambda a: a[:2] == ["python", "-m"] and a[2].startswith("benchmarks.") and "--update" not in a,
        "studies on trained or 1B-parameter models: minutes",
    ),
    ("python benchmarks/gpu_check.py", lambda a: a[:2] == ["python", "benchmarks/gpu_check.py"], "needs CUDA"),
    (
        "vllm serve / python -m sglang.launch_server",
        lambda a: a[0] == "vllm" or a[:3] == ["python", "-m", "sglang.launch_server"],
        "vLLM and SGLang are not installed here: the names they are given must be the snippets'",
    ),
    ("pip install", lambda a: a[:2] == ["pip", "install"], "changes the environment: the extras must exist"),
]


# ---- reading the pages -------------------------------------------------------------------------------


@dataclass
class Block:
    page: str
    line: int
    tag: str
    body: str
    index: int  # among the page's blocks of its kind (python blocks: RUN_ELSEWHERE's key)


@dataclass
class Command:
    page: str
    line: int
    text: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    redirect: str | None = None
    exit: int = 0


def blocks(page: str) -> list[Block]:
    text = (ROOT / page).read_text(encoding="utf-8")
    out, counts = [], {}
    for m in re.finditer(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", text, flags=re.M | re.S):
        tag = m.group(1).strip()
        kind = "python" if tag.startswith("python") else tag
        out.append(Block(page, text[: m.start()].count("\n") + 1, tag, m.group(2), counts.get(kind, 0)))
        counts[kind] = counts.get(kind, 0) + 1
    return out


def _split_comment(line: str) -> tuple[str, str]:
    """(code, comment): the comment starts at a `#` outside quotes that follows a space."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], line[i + 1 :]
    return line, ""


def commands(block: Block) -> list[Command]:
    lines = block.body.splitlines()
    if block.tag == "console":
        lines = [ln[2:] if ln.startswith("$ ") else "" for ln in lines]
    out, code, comment, start = [], "", "", 0
    for k, raw in enumerate(lines):
        part, note = _split_comment(raw)
        if not code:
            start = k
        comment += " " + note
        if part.rstrip().endswith("\\"):
            code += part.rstrip()[:-1] + " "
            continue
        code += part
        if code.strip():
            out.append(_command(block, block.line + 1 + start, code.strip(), comment))
        code, comment = "", ""
    assert not code.strip(), f"{block.page}:{block.line}: a continuation runs off the block"
    return out


def _command(block: Block, line: int, code: str, comment: str) -> Command:
    argv = shlex.split(code)
    env = {}
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):
        k, v = argv.pop(0).split("=", 1)
        env[k] = v
    redirect = None
    if ">" in argv:
        i = argv.index(">")
        redirect, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    norm = {".venv/bin/python": "python", "python3": "python", ".venv/bin/fpcore": "fpcore"}
    argv[0] = norm.get(argv[0], argv[0])
    if argv[:3] == ["python", "-m", "pytest"]:
        argv = ["pytest", *argv[3:]]
    m = re.search(r"\bexit (\d)\b", comment)
    return Command(block.page, line, code, argv, env, redirect, int(m.group(1)) if m else 0)


def parse_only_rule(c: Command) -> tuple[str, str] | None:
    for name, match, why in PARSE_ONLY:
        if match(c.argv):
            return name, why
    return None


def all_commands() -> list[Command]:
    return [c for p in PAGES for b in blocks(p) if b.tag in SHELL_TAGS for c in commands(b)]


# ---- the inputs the docs name ---------------------------------------------------------------------------

HEADS, KV, HIDDEN, FF, VOCAB, LAYERS = 4, 2, 128, 256, 256, 2
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "intermediate_size": FF,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def llama_state(seed: int) -> dict[str, torch.Tensor]:
    """A Llama-shaped state dict (fp32), big enough for detect's and trace's statistics (361k weights)."""
    assert (HEADS, KV) == (align_tests.HEADS, align_tests.KV)
    return align_tests._llama(seed, layers=LAYERS, hidden=HIDDEN, ff=FF, vocab=VOCAB)


def drifted(sd: dict, rel: float, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {n: t + rel * t.std() * torch.randn(t.shape, generator=g) for n, t in sd.items()}


def save_model(folder: Path, sd: dict, shards: int = 1) -> None:
    folder.mkdir(parents=True)
    sd = {n: t.bfloat16() for n, t in sd.items()}
    if shards == 1:
        write_safetensors(folder / "model.safetensors", sd, {"format": "pt"})
    else:
        names, weight_map = list(sd), {}
        for k in range(shards):
            part = names[k * len(names) // shards : (k + 1) * len(names) // shards]
            f = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            write_safetensors(folder / f, {n: sd[n] for n in part}, {"format": "pt"})
            weight_map.update(dict.fromkeys(part, f))
        index = {"metadata": {}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps(CONFIG))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine a two-thread QR in `detect` waited ~20 s for its
    descheduled thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docs") / "inputs"
    base = llama_state(0)
    save_model(root / "base", base, shards=2)
    save_model(root / "tuned", drifted(base, 0.05, 1), shards=2)
    for k, name in enumerate(("customer-a", "customer-b", "customer-c")):
        save_model(root / name, drifted(base, 0.1, 10 + k))
    ids = ["acme", "globex", "initech"] + [f"customer-{i}" for i in range(997)]
    (root / "customers.txt").write_text("\n".join(ids) + "\n")
    shutil.copytree(ROOT / "docs", root / "docs")  # the pages and JSONs the table generators use
    return root


# ---- running a page -------------------------------------------------------------------------------------


class _Parsed(Exception):
    pass


@contextlib.contextmanager
def _in(folder: Path, env: dict[str, str]):
    old_cwd, old_env = Path.cwd(), {k: os.environ.get(k) for k in env}
    os.chdir(folder)
    os.environ.update(env)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _quiet() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    out = io.StringIO()
    stack.enter_context(contextlib.redirect_stdout(out))
    stack.enter_context(contextlib.redirect_stderr(out))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.out = out  # type: ignore[attr-defined]
    return stack


def _exit_code(fn: Callable[[], object]) -> int:
    try:
        rc = fn()
    except SystemExit as exc:
        rc = exc.code
    return 0 if rc is None else rc if isinstance(rc, int) else 1


def _run_module(mod: str, args: list[str], parse_only: bool) -> int:
    """`python -m mod args` in this process; with parse_only, up to its argparse's parse_args."""
    old_argv, real_parse = sys.argv, argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        real_parse(self, args, namespace)
        raise _Parsed

    sys.argv = [mod, *args]
    if parse_only:
        argparse.ArgumentParser.parse_args = parse_then_stop  # type: ignore[method-assign]
    try:
        return _exit_code(lambda: runpy.run_module(mod, run_name="__main__", alter_sys=True) and None)
    except _Parsed:
        return 0
    finally:
        sys.argv = old_argv
        argparse.ArgumentParser.parse_args = real_parse  # type: ignore[method-assign]


def run(c: Command, where: Path) -> tuple[int, str]:
    """Run a command that PARSE_ONLY does not name: (exit code, its output)."""
    a = c.argv
    with _in(where, c.env), _quiet() as q:
        if c.redirect:
            raise AssertionError("a command that runs must not redirect its output")
        if a[:2] == ["fpcore", "fleet"]:  # Dask workers fork from a driver that has no torch
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            r = subprocess.run([sys.executable, "-m", "fpcore.cli", *a[1:]], capture_output=True, text=True, env=env)
            return r.returncode, r.stdout + r.stderr
        if a[0] == "fpcore":
            from fpcore.cli import main

            rc = _exit_code(lambda: main(a[1:]))
        elif a[:2] == ["python", "-m"] and (a[2].startswith("fpcore.") or a[2] == "benchmarks.trace_study"):
            rc = _run_module(a[2], a[3:], parse_only=False)
        else:
            raise AssertionError(f"no rule runs or parses this command: {c.text!r}")
        return rc, q.out.getvalue()


def parse(c: Command, rule: str) -> None:
    """The checks of a PARSE_ONLY command."""
    a = c.argv
    if a[0] == "fpcore":
        from fpcore.cli import build_parser

        with _quiet() as q:
            rc = _exit_code(lambda: build_parser(a[1:]).parse_args(a[1:]) and None)
        assert rc == 0, f"fpcore's parser refuses it:\n{q.out.getvalue()}"
    elif a[0] == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
        assert a[1] in targets, f"the Makefile has no target {a[1]!r}"
    elif a[0] == "pytest":
        paths = [x for x in a[1:] if not x.startswith("-") and x not in ("no:cacheprovider",)]
        assert paths and all((ROOT / p).exists() for p in paths), f"no such benchmark file: {paths}"
    elif a[:2] == ["python", "-m"] and a[2].startswith("benchmarks."):
        with _in(ROOT, {}), _quiet() as q:
            rc = _run_module(a[2], a[3:], parse_only=True)
        assert rc == 0, f"{a[2]} refuses its arguments:\n{q.out.getvalue()}"
    elif a[:2] == ["python", "benchmarks/gpu_check.py"]:
        compile((ROOT / a[1]).read_text(), a[1], "exec")
    elif a[0] == "vllm":
        name = a[a.index("--load-format") + 1]
        assert f'@register_model_loader("{name}")' in _snippet("# fp_vllm.py"), f"no loader registered as {name!r}"
        assert a[1] == "serve" and {"FPCORE_VECTOR"} <= set(c.env)
    elif a[:3] == ["python", "-m", "sglang.launch_server"]:
        target = a[a.index("--custom-weight-loader") + 1]
        module, fn = target.rsplit(".", 1)
        src = _snippet(f"# {module}.py")
        assert f"def {fn}(model, named_tensors)" in src, f"the {module}.py snippet defines no {fn}"
        assert "FPCORE_VECTOR" in c.env
    elif a[:2] == ["pip", "install"]:
        extras = re.findall(r"^(\w+) = \[", (ROOT / "pyproject.toml").read_text(), flags=re.M)
        for spec in a[2:]:
            for extra in re.findall(r"\[([\w,]+)\]", spec):
                assert set(extra.split(",")) <= set(extras), f"pyproject.toml has no extra {extra!r}"
        if "-c" in a:
            assert (ROOT / a[a.index("-c") + 1]).is_file()
    else:
        raise AssertionError(f"parse-only rule {rule!r} has no check for {c.text!r}")


def synopsis(line: str) -> None:
    """A `fpcore ...` line of a ```text block: its command words and every --option exist."""
    from fpcore.cli import build_parser

    words = [w for w in line.split()[1:] if re.fullmatch(r"[a-z][a-z0-9-]*", w)]
    parser, path = build_parser(words), []
    for w in words:
        sub = next((x for x in parser._actions if isinstance(x, argparse._SubParsersAction)), None)
        if sub is None or w not in sub.choices:
            break
        parser, path = sub.choices[w], [*path, w]
    assert path, f"not an fpcore command: {line!r}"
    known = {s for act in parser._actions for s in act.option_strings}
    for opt in set(re.findall(r"(?<![\w-])--?[a-z][a-z0-9-]*", line)):
        assert opt in known, f"`fpcore {' '.join(path)}` has no option {opt} ({line!r})"


def run_page(page: str, where: Path) -> list[str]:
    """Every block of `page`, in order, in the folder `where`: a list of failures (empty when all pass)."""
    failures = []
    for b in blocks(page):
        at = f"{page}:{b.line}"
        try:
            if b.tag in SHELL_TAGS:
                for c in commands(b):
                    rule = parse_only_rule(c)
                    try:
                        if rule:
                            parse(c, rule[0])
                        else:
                            rc, out = run(c, where)
                            assert rc == c.exit, f"exit {rc}, the docs say {c.exit}:\n{out[-3000:]}"
                    except AssertionError as exc:
                        failures.append(f"{c.page}:{c.line}: {c.text}\n  {exc}")
            elif b.tag == "python":
                if (page, b.index) in RUN_ELSEWHERE:
                    continue
                with _in(where, {}), _quiet():
                    exec(compile(b.body, at, "exec"), {"__name__": "__docs__"})
            elif b.tag == "python no-run":
                compile(b.body, at, "exec")
            elif b.tag == "yaml":
                m = re.match(r"#\s*([\w.-]+\.ya?ml)", b.body)
                if m:
                    (where / m.group(1)).write_text(b.body)
            elif b.tag == "text":
                for line in b.body.splitlines():
                    if line.startswith("fpcore "):
                        synopsis(line)
            elif b.tag not in OTHER_TAGS:
                raise AssertionError(f"unknown code fence ```{b.tag}: say how the test should treat it")
        except Exception as exc:  # noqa: BLE001 - a failing block is reported with its place, not raised
            failures.append(f"{at}: ```{b.tag} block: {type(exc).__name__}: {exc}")
    return failures


@pytest.fixture(scope="module")
def after_readme(inputs, tmp_path_factory) -> tuple[Path, list[str]]:
    where = tmp_path_factory.mktemp("readme") / "work"
    shutil.copytree(inputs, where)
    return where, run_page("README.md", where)


# ---- the tests --------------------------------------------------------------------------------------------


def test_readme_runs(after_readme):
    assert not after_readme[1], "\n".join(after_readme[1])


@pytest.mark.parametrize("page", [p for p in PAGES if p != "README.md"])
def test_docs_page_runs(page, after_readme, tmp_path):
    where = tmp_path / "work"
    shutil.copytree(after_readme[0], where, symlinks=True)
    failures = run_page(page, where)
    assert not failures, "\n".join(failures)


def test_every_parse_only_rule_is_used_and_every_command_is_known():
    """The PARSE_ONLY list stays small and true: each of its rules names some command of the docs."""
    cmds = all_commands()
    assert len(cmds) > 50
    used = {r[0] for c in cmds if (r := parse_only_rule(c))}
    assert used == {name for name, _, _ in PARSE_ONLY}, {name for name, _, _ in PARSE_ONLY} - used
    programs = {c.argv[0] for c in cmds if not parse_only_rule(c)}
    assert programs <= {"fpcore", "python"}, programs


def test_blocks_run_elsewhere_are_run_there():
    for (page, index), test in RUN_ELSEWHERE.items():
        assert [b for b in blocks(page) if b.tag == "python"][index]
        assert page in (ROOT / test).read_text(), f"{test} no longer reads {page}"


def _snippet(first_line: str) -> str:
    found = [b.body for b in blocks("docs/serving.md") if b.tag == "python no-run" and b.body.startswith(first_line)]
    assert len(found) == 1, first_line
    return found[0]


def _stand_in(monkeypatch, name: str, **attrs) -> None:
    parts = name.split(".")
    for k in range(1, len(parts) + 1):
        mod = types.ModuleType(".".join(parts[:k]))
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    for k, v in attrs.items():
        setattr(sys.modules[name], k, v)


def _licensed_a(where: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(where / "licensed/customer-a/model.safetensors")


def _serving_env(monkeypatch, where: Path) -> None:
    monkeypatch.setenv("FPCORE_VECTOR", str(where / "fp.safetensors"))
    monkeypatch.setenv("FPCORE_TRACE_KEY", str(where / "trace.key"))
    monkeypatch.setenv("FPCORE_LICENSEE", "acme")


def test_vllm_loader_snippet_wraps_the_default_loaders_weights(after_readme, monkeypatch):
    """docs/serving.md's vLLM loader, against a stand-in of the API read in vllm-project/vllm
    (register_model_loader(name) -> class decorator; DefaultModelLoader(load_config), whose
    get_all_weights(model_config, model) yields (name, tensor) and which refuses unknown load formats):
    registered under the name the docs' `vllm serve --load-format` uses, it yields what
    `fpcore stamp fp.safetensors customer-a/ --trace-key trace.key --licensee acme` wrote."""
    from safetensors.torch import load_file

    where = after_readme[0]
    src = _snippet("# fp_vllm.py")
    assert "from fpcore.serving import stamp_iter" in src
    registry: dict[str, type] = {}

    @dataclass
    class LoadConfig:
        load_format: str = "auto"
        model_loader_extra_config: dict = field(default_factory=dict)

    class DefaultModelLoader:
        def __init__(self, load_config):
            assert load_config.load_format in ("auto", "safetensors"), "Unknown load_format"
            self.load_config = load_config

        def get_all_weights(self, model_config, model):
            yield from load_file(where / "customer-a/model.safetensors").items()

    def register_model_loader(name):
        def wrap(cls):
            assert issubclass(cls, DefaultModelLoader)
            registry[name] = cls
            return cls

        return wrap

    _stand_in(
        monkeypatch,
        "vllm.model_executor.model_loader",
        DefaultModelLoader=DefaultModelLoader,
        register_model_loader=register_model_loader,
    )
    _serving_env(monkeypatch, where)
    ns: dict = {"__name__": "fp_vllm"}
    exec(compile(src, "docs/serving.md", "exec"), ns)
    ns["register"]()
    loader = registry["fpcore"](LoadConfig(load_format="fpcore"))
    got = dict(loader.get_all_weights(None, None))
    want = _licensed_a(where)
    assert got.keys() == want.keys() and all(torch.equal(got[n], want[n]) for n in want)
    assert dataclasses.is_dataclass(loader.load_config) and loader.load_config.load_format == "safetensors"


def test_sglang_loader_snippet_stamps_the_pushed_tensors(after_readme, monkeypatch):
    """docs/serving.md's SGLang custom weight loader, called as SGLang's model runner calls it
    (custom_loader(model, named_tensors) with a list of (name, tensor)), hands model.load_weights the
    stamped tensors; the Engine snippet names the same function."""
    from safetensors.torch import load_file

    where = after_readme[0]
    src = _snippet("# fp_sglang.py")
    assert "from fpcore.serving import stamp_iter" in src
    _serving_env(monkeypatch, where)
    ns: dict = {"__name__": "fp_sglang"}
    exec(compile(src, "docs/serving.md", "exec"), ns)

    class Model:
        def load_weights(self, weights):
            self.loaded = dict(weights)

    model = Model()
    ns["stamped_update"](model, list(load_file(where / "customer-a/model.safetensors").items()))
    want = _licensed_a(where)
    assert model.loaded.keys() == want.keys() and all(torch.equal(model.loaded[n], want[n]) for n in want)
    engine = _snippet("import sglang")
    assert engine.count('"fp_sglang.stamped_update"') == 2


def _slugs(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    seen: dict[str, int] = {}
    out = set()
    for title in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower().replace("`", "")).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_point_to_files_that_exist(page):
    path = ROOT / page
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        dest = (path.parent / target).resolve() if target else path
        assert dest.exists(), f"{page}: {link} -> {dest} does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in _slugs(dest), f"{page}: {link}: no heading #{anchor} in {dest.name}"


SECTIONS = {
    "docs/performance.md": ["cpu", "gpu", "checkpoint", "trace-bench", "pot-bench"],
    "docs/fingerprints.md": ["fpvec-study", "fpvec-demo", "robustness"],
    "docs/tracing.md": ["trace-study"],
    "docs/proof-of-training.md": ["pot-eval"],
}


def test_generated_sections_live_where_their_generators_write():
    from fpcore._markers import markers

    for page in PAGES:
        text = (ROOT / page).read_text(encoding="utf-8")
        found = re.findall(r"^<!-- perf-([\w-]+):start -->$", text, flags=re.M)
        assert sorted(found) == sorted(SECTIONS.get(page, [])), page
        for s in found:
            start, end = markers(s)
            assert text.count(start) == text.count(end) == 1 and text.index(start) < text.index(end)
    make = (ROOT / "Makefile").read_text()
    for page, section in re.findall(r"--update (\S+) --section (\S+)", make):
        assert section in SECTIONS[page], (page, section)
