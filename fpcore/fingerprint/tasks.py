"""Downstream tasks for the demo, all from text that ships with Python, each with a held-out metric:

- text domains (metric: held-out perplexity, lower is better): `code` (standard-library source
  files) and `docstrings` (docstrings of standard-library modules);
- instruction tasks (metric: exact-match accuracy in %, on held-out items): `classify` (which
  source a 12-word snippet comes from: documentation, code or docstring), `repeat` ("Repeat: w1 w2
  w3 w4" -> the same words) and `reverse` (-> the words in reverse order), words drawn from the
  documentation's vocabulary.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import random
import re
import sysconfig
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fpcore.fingerprint import data
from fpcore.fingerprint.lm import LM, answer_batch, generate, lm_loss, perplexity, windows_of

CODE_MODULES = (
    "textwrap", "string", "fnmatch", "glob", "shlex", "heapq", "bisect", "colorsys", "calendar", "csv",
    "json.decoder", "json.encoder", "fractions", "statistics", "ipaddress",
)  # fmt: skip
DOC_MODULES = ("os", "os.path", "math", "itertools", "collections", "re", "pathlib", "functools", "random", "string")


def code_texts() -> list[str]:
    """Source files of some standard-library modules."""
    out = []
    for m in CODE_MODULES:
        spec = importlib.util.find_spec(m)
        if spec and spec.origin and spec.origin.endswith(".py"):
            with open(spec.origin, encoding="utf-8") as f:
                out.append(f.read())
    return out


def pretrain_code_texts(chars: int = 460_000, per_file: int = 20_000) -> list[str]:
    """Python source for pretraining (a real LLM has seen code): public top-level standard-library
    modules (`sysconfig.get_paths()['stdlib']`, no network) in a fixed pseudo-random order (sha256 of
    the file name), at most `per_file` characters of each, `chars` in all. Disjoint from the
    downstream tasks' data: the `code` task's modules are left out, and so is every file that holds a
    docstring of the `docstrings` task."""
    root = sysconfig.get_paths()["stdlib"]
    task_files = set()
    for m in CODE_MODULES:
        spec = importlib.util.find_spec(m)
        if spec and spec.origin:
            task_files.add(os.path.realpath(spec.origin))
    probes = {d.split("\n", 2)[1].strip() for d in docstring_texts()}  # first line of each docstring
    probes = {p for p in probes if len(p) >= 20}
    names = [n for n in os.listdir(root) if n.endswith(".py") and not n.startswith("_")]
    out: list[str] = []
    total = 0
    for name in sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest()):
        path = os.path.join(root, name)
        if os.path.realpath(path) in task_files:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            continue
        if any(p in text for p in probes):
            continue
        text = text[: min(per_file, chars - total)]
        out.append(text)
        total += len(text)
        if total >= chars:
            break
    return out


def docstring_texts() -> list[str]:
    """Docstrings of the public members of some standard-library modules (and of str, list, dict)."""
    out: list[str] = []
    objs: list[Any] = [importlib.import_module(m) for m in DOC_MODULES] + [str, list, dict, set, bytes]
    for obj in objs:
        for name, member in sorted(vars(obj).items()):
            doc = inspect.getdoc(member) if not name.startswith("_") else None
            if doc and len(doc) > 40:
                out.append(f"{name}\n{doc}")
    return out


def vocabulary(n: int = 400) -> list[str]:
    """The n most frequent lower-case words (3-8 letters) of the documentation."""
    words = Counter(w for p in data.paragraphs() for w in re.findall(r"\b[a-z]{3,8}\b", p))
    return [w for w, _ in words.most_common(n)]


@dataclass
class Task:
    """A downstream task: `loss(model, step)` trains it, `evaluate(lm)` measures it on held-out data."""

    name: str
    metric_name: str
    higher_is_better: bool
    loss: Callable[[Any, int], torch.Tensor]
    evaluate: Callable[[LM], float]


def text_task(name: str, texts: list[str], lm: LM, *, window: int = 128, batch: int = 16, seed: int = 0) -> Task:
    """Next-token training on a text domain; metric: perplexity on every 10th window (held out)."""
    w = windows_of([lm.encode(t) for t in texts], min(window, lm.context), lm.bos, lm.eos)
    held = torch.arange(w.shape[0]) % 10 == 0
    train, test = w[~held], w[held]
    g = torch.Generator().manual_seed(seed)

    def loss(model: Any, _: int) -> torch.Tensor:
        x = train[torch.randint(0, train.shape[0], (batch,), generator=g)]
        return lm_loss(model, {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x})

    return Task(name, f"{name} perplexity", False, loss, lambda m: perplexity(m.model, test))


def word_task(name: str, lm: LM, *, reverse: bool, n_words: int = 4, batch: int = 32, seed: int = 0) -> Task:
    """ "Repeat:"/"Reverse:" four words; metric: exact-match accuracy (%) on 200 held-out items whose
    word sequences never occur in training (4000 training items)."""
    vocab = vocabulary()
    rng = random.Random(seed)
    verb = "Reverse" if reverse else "Repeat"
    items: dict[str, str] = {}
    while len(items) < 4200:
        ws = rng.sample(vocab, n_words)
        items[f"{verb}: {' '.join(ws)}\n"] = " " + " ".join(reversed(ws) if reverse else ws)
    pairs = [(lm.encode(p), lm.encode(a)) for p, a in items.items()]
    return _answer_task(name, lm, pairs[200:], pairs[:200], batch, seed)


def _snippets(texts: list[str], words: int) -> list[str]:
    out = []
    for t in texts:
        w = t.split()
        out += [" ".join(w[i : i + words]) for i in range(0, len(w) - words + 1, words)]
    return out


def classify_task(name: str, lm: LM, *, words: int = 12, batch: int = 32, seed: int = 0) -> Task:
    """ "Text: <12 words>\nSource:" -> " documentation" | " code" | " docstring"; metric: exact-match
    accuracy (%) on 300 held-out snippets (every 5th snippet of each source is held out)."""
    sources = {
        "documentation": _snippets(data.paragraphs(), words),
        "code": _snippets(code_texts(), words),
        "docstring": _snippets(docstring_texts(), words),
    }
    rng = random.Random(seed)
    train: list[tuple[list[int], list[int]]] = []
    test: list[tuple[list[int], list[int]]] = []
    for label, snips in sources.items():
        ans = lm.encode(" " + label)
        items = [(lm.encode(f"Text: {s}\nSource:"), ans) for s in snips]
        test += rng.sample(items[::5], 100)
        train += [x for i, x in enumerate(items) if i % 5]
    return _answer_task(name, lm, train, test, batch, seed)


def _answer_task(
    name: str, lm: LM, train: list[tuple[list[int], list[int]]], test: list[tuple[list[int], list[int]]],
    batch: int, seed: int,
) -> Task:  # fmt: skip
    """Prompt -> answer training on `train`; metric: exact-match accuracy (%) of the greedy answer on `test`."""
    g = random.Random(seed + 1)

    def loss(model: Any, _: int) -> torch.Tensor:
        return lm_loss(model, answer_batch(g.sample(train, batch), lm.bos, lm.eos, lm.pad))

    def evaluate(m: LM) -> float:
        outs = generate(m, [p for p, _ in test], max(len(a) for _, a in test) + 2, batch_size=100)
        return 100.0 * sum(o == a for o, (_, a) in zip(outs, test, strict=True)) / len(test)

    return Task(name, f"{name} exact-match accuracy (%)", True, loss, evaluate)
