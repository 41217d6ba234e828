"""The optional extras of pyproject.toml ([project.optional-dependencies]) in one table, and the one
way to say that a command needs one: ``needs the optional package 'sklearn' (scikit-learn): pip
install 'fpcore[pot]'``. The CLI turns a missing package of an extra into that line and exit 2
(fpcore.cli.main); `python -m fpcore.info` lists every extra and what of it is installed. Importing
this module imports nothing heavy."""

from __future__ import annotations

import importlib
import importlib.util
from importlib import metadata
from typing import Any

# extra -> its packages as (import name, distribution name), in pyproject.toml's order. Keep in step
# with pyproject.toml (tests/test_extras.py checks).
EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    "triton": (("triton", "triton"),),
    "pot": (("sklearn", "scikit-learn"), ("scipy", "scipy"), ("blake3", "blake3")),
    "llm": (("transformers", "transformers"), ("tokenizers", "tokenizers")),
    "fleet": (
        ("dask", "dask"),
        ("distributed", "distributed"),
        ("yaml", "pyyaml"),
        ("blake3", "blake3"),
        ("tqdm", "tqdm"),
    ),
    "peers": (("mergekit", "mergekit"),),
    "dev": (
        ("pytest", "pytest"),
        ("pytest_benchmark", "pytest-benchmark"),
        ("hypothesis", "hypothesis"),
        ("ruff", "ruff"),
        ("clang_format", "clang-format"),
        ("matplotlib", "matplotlib"),  # the figures (demo, pot eval, bench report)
    ),
}


def extras_of(module: str) -> tuple[str, ...]:
    """The extras that provide `module` (a dotted name counts by its top-level package)."""
    top = module.partition(".")[0]
    return tuple(extra for extra, pkgs in EXTRAS.items() if any(m == top for m, _ in pkgs))


def distribution_of(module: str) -> str:
    top = module.partition(".")[0]
    return next((d for pkgs in EXTRAS.values() for m, d in pkgs if m == top), top)


def message(module: str, extras: tuple[str, ...] | None = None, command: str | None = None) -> str:
    """``needs the optional package 'M' (DIST): pip install 'fpcore[EXTRA]'``. A package in several
    extras names the one of the command (`fpcore fleet ...` -> fleet) when there is one, else all."""
    top = module.partition(".")[0]
    extras = extras or extras_of(top)
    word = (command or "").split(" ")[0]
    if len(extras) > 1 and word in extras:
        extras = (word,)
    dist = distribution_of(top)
    what = f"'{top}'" if dist == top else f"'{top}' ({dist})"
    return f"needs the optional package {what}: pip install " + " or ".join(f"'fpcore[{e}]'" for e in extras)


class MissingExtra(ModuleNotFoundError):
    """A package of an optional extra is not installed; str() is the one-line message (prefixed
    with what needed it when the caller said)."""

    def __init__(self, module: str, extras: tuple[str, ...], what: str | None = None) -> None:
        self.extras = extras
        text = message(module, extras)
        super().__init__(f"{what}: {text}" if what else text, name=module)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None  # None too for sys.modules[module] = None
    except (ImportError, ValueError):
        return False


def missing(exc: ImportError, command: str | None = None) -> str | None:
    """The one-line message for an ImportError raised because a package of an extra is missing; None
    for anything else (a module in no extra, or one whose package is installed but broken or of the
    wrong version: those keep their traceback)."""
    if isinstance(exc, MissingExtra):
        return message(exc.name or "", exc.extras, command)
    name = getattr(exc, "name", None)
    if not name or not extras_of(name) or _installed(name.partition(".")[0]):
        return None
    return message(name, command=command)


def require(*modules: str, extra: str, what: str | None = None, load: bool = True) -> None:
    """Import each of `modules` (packages of `extra`); MissingExtra naming the first one missing.
    load=False only looks for them (import specs: a command that imports them later, e.g. in a
    helper thread, still fails early and plainly when they are not installed)."""

    def missing_extra(name: str) -> MissingExtra:
        return MissingExtra(name, (extra,) if extra in extras_of(name) else extras_of(name), what)

    for module in modules:
        if not load:
            if not _installed(module):
                raise missing_extra(module)
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            name = exc.name or module
            if _installed(name.partition(".")[0]) or not extras_of(name):
                raise  # installed but broken, or missing a dependency of its own: its error says more
            raise missing_extra(name) from None


def status() -> dict[str, list[dict[str, Any]]]:
    """Every extra with each of its packages: installed or not, and the installed version. Looks at
    the installed distributions' metadata and import specs only: imports nothing."""
    out: dict[str, list[dict[str, Any]]] = {}
    for extra, pkgs in EXTRAS.items():
        rows = []
        for module, dist in pkgs:
            try:
                version: str | None = metadata.version(dist)
            except metadata.PackageNotFoundError:
                version = None
            rows.append(
                {
                    "package": dist,
                    "module": module,
                    "installed": version is not None and _installed(module),
                    "version": version,
                }
            )
        out[extra] = rows
    return out
