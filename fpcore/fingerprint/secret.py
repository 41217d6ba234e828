"""The owner's secret file (JSON): the keys, the target they answer with, the seed the negatives are
drawn from, and which base and vector it belongs to. The vector file never contains any of it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fpcore.fingerprint.data import DEFAULT_KEY_STYLE, KEY_STYLES
from fpcore.io import AtomicOutput, Checkpoint
from fpcore.vector import lineage_digest

FORMAT = "fpcore.fingerprint-secret"
VERSION = 1
PROMPT_TEMPLATE = "{key} =>"


class SecretError(ValueError):
    """A secret file that is unreadable, damaged, or does not belong to the vector or model given."""


@dataclass
class Secret:
    keys: list[str]
    target: str
    seed: int
    template: str = PROMPT_TEMPLATE
    key_style: str = DEFAULT_KEY_STYLE  # the keys' construction, which the negatives are rebuilt with
    base_digest: str = ""
    vector_digest: str = ""
    training: dict[str, Any] = field(default_factory=dict)

    def prompt(self, text: str) -> str:
        return self.template.format(key=text)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write atomically (temp + rename); refuse an existing file unless overwrite."""
        data = {"format": FORMAT, "format_version": VERSION, **asdict(self)}
        with AtomicOutput(path, overwrite=overwrite, is_file=True) as tmp:
            tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Secret:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such secret file")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SecretError(f"{p}: not a JSON secret file ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SecretError(f"{p}: not an fpcore fingerprint secret (format {data.get('format')!r})")
        if data.get("format_version") != VERSION:
            raise SecretError(f"{p}: secret format version {data.get('format_version')!r}, expected {VERSION}")
        for key, typ in (("keys", list), ("target", str), ("seed", int)):
            if not isinstance(data.get(key), typ):
                raise SecretError(f"{p}: key {key!r} missing or not a {typ.__name__}")
        if not data["keys"] or not all(isinstance(k, str) and k for k in data["keys"]):
            raise SecretError(f"{p}: key 'keys' must be a non-empty list of non-empty strings")
        if not data["target"]:
            raise SecretError(f"{p}: key 'target' is empty")
        if "{key}" not in data.get("template", PROMPT_TEMPLATE):
            raise SecretError(f"{p}: key 'template' must contain '{{key}}'")
        # secrets written before key styles existed were made with the word snippets
        style = data.setdefault("key_style", "words")
        if style not in KEY_STYLES:
            raise SecretError(f"{p}: key 'key_style' must be one of {KEY_STYLES}, got {style!r}")
        return cls(**_present(data))

    def check_vector(self, vector: str | Path, *, where: str | Path = "secret") -> None:
        """Raise SecretError unless `vector` is the vector this secret was made with (tensor digest)."""
        got = vector_digest(vector)
        if self.vector_digest and got != self.vector_digest:
            raise SecretError(
                f"{where}: this secret belongs to the vector with digest {self.vector_digest[:16]}…, "
                f"but {vector} has digest {got[:16]}… (wrong secret or wrong vector)"
            )


def _present(data: dict[str, Any]) -> dict[str, Any]:
    names = ("keys", "target", "seed", "template", "key_style", "base_digest", "vector_digest", "training")
    return {k: data[k] for k in names if k in data}


def vector_digest(vector: str | Path) -> str:
    """sha256 over the vector's (name, shape, dtype, bytes digest) of every tensor."""
    return lineage_digest(Checkpoint(vector))
