"""The trace key: the owner's secret behind every licensee code, and what is derived from it.

The file (``fpcore trace-key new -o trace.key``) is JSON: 256 random bits, the scheme's parameters,
a version, and a checksum over all of it so that a damaged file is refused rather than tracing with
the wrong code. It is written with mode 0600, never overwritten, and never stored in a model or a
vector. Derivations (keyed BLAKE2b, so nothing about one tensor or licensee tells another):

    tensor keys (k1, k2, k3) = BLAKE2b-96(key=secret, "fpcore-trace tensor\\0" + name)
    symbols of a licensee    = the 2^seg_bits nibbles of BLAKE2b-256(key=secret, "fpcore-trace licensee\\0" + id)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpcore._code import TensorCode

FORMAT = "fpcore-trace-key"
VERSION = 1
SECRET_BYTES = 32
SEG_BITS = 6  # 64 segments, 4 bits (one of 16 patterns) each: 256 bits of BLAKE2b per licensee
MAX_ID_BYTES = 256
DEFAULT_FP32_SHIFT = 14


class TraceKeyError(ValueError):
    """A trace key file that cannot be used (damaged, another version, wrong parameters)."""


def check_licensee(licensee: str, where: str = "licensee") -> bytes:
    """The id's UTF-8 bytes; raises ValueError for an empty id, one over 256 bytes, or one with a
    line break (ids are listed one per line)."""
    if not isinstance(licensee, str) or not licensee:
        raise ValueError(f"{where}: a licensee id must be a non-empty string, got {licensee!r}")
    raw = licensee.encode("utf-8")
    if len(raw) > MAX_ID_BYTES:
        raise ValueError(f"{where}: licensee id {licensee[:40]!r}... is {len(raw)} bytes; at most {MAX_ID_BYTES}")
    if "\n" in licensee or "\r" in licensee:
        raise ValueError(f"{where}: licensee id {licensee!r} contains a line break")
    return raw


@dataclass(frozen=True)
class TraceKey:
    secret: bytes
    seg_bits: int = SEG_BITS
    fp32_shift: int = DEFAULT_FP32_SHIFT
    path: Path | None = None

    # ---- the file -------------------------------------------------------------------------------
    @classmethod
    def generate(cls, *, fp32_shift: int = DEFAULT_FP32_SHIFT) -> TraceKey:
        return cls(os.urandom(SECRET_BYTES), SEG_BITS, fp32_shift)

    def _body(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "scheme": "segments-of-16-patterns",
            "secret": self.secret.hex(),
            "seg_bits": self.seg_bits,
            "fp32_shift": self.fp32_shift,
        }

    @property
    def key_id(self) -> str:
        """A public name for this key (a keyed hash of nothing: reveals nothing of the secret), for records
        such as the fleet ledger that must say which key coded a copy."""
        return hashlib.blake2b(b"fpcore-trace key id", key=self.secret, digest_size=12).hexdigest()

    @staticmethod
    def _checksum(body: dict) -> str:
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def save(self, path: str | Path) -> Path:
        """Writes the key file; refuses an existing path. Appears whole or not at all (temp + link)."""
        dest = Path(path)
        if dest.exists():
            raise FileExistsError(f"{dest}: already exists; a trace key is never overwritten")
        if not dest.parent.is_dir():
            raise FileNotFoundError(f"{dest}: parent folder {dest.parent} does not exist")
        body = self._body()
        text = json.dumps({**body, "checksum": self._checksum(body)}, indent=1) + "\n"
        tmp = dest.parent / f".fpcore-tmp-{os.getpid()}-{dest.name}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, dest)  # fails if dest appeared meanwhile: never overwrites
        except FileExistsError:
            raise FileExistsError(f"{dest}: already exists; a trace key is never overwritten") from None
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    @classmethod
    def load(cls, path: str | Path) -> TraceKey:
        """Reads and checks a key file. Raises FileNotFoundError, or TraceKeyError naming the file."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such trace key file")
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TraceKeyError(f"{p}: not a trace key (damaged or another kind of file: {exc})") from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise TraceKeyError(
                f"{p}: not an fpcore trace key (format {obj.get('format') if isinstance(obj, dict) else None!r})"
            )
        if obj.get("version") != VERSION:
            raise TraceKeyError(f"{p}: trace key version {obj.get('version')!r}; this fpcore reads version {VERSION}")
        body = {k: v for k, v in obj.items() if k != "checksum"}
        if obj.get("checksum") != cls._checksum(body):
            raise TraceKeyError(f"{p}: trace key checksum does not match: the file is damaged")
        try:
            secret = bytes.fromhex(obj["secret"])
            seg_bits, shift = int(obj["seg_bits"]), int(obj["fp32_shift"])
        except (KeyError, ValueError, TypeError) as exc:
            raise TraceKeyError(f"{p}: trace key field missing or malformed ({exc})") from None
        if len(secret) < SECRET_BYTES or seg_bits != SEG_BITS or not 0 <= shift <= 20:
            raise TraceKeyError(
                f"{p}: trace key parameters out of range (secret {len(secret) * 8} bits, seg_bits {seg_bits}, "
                f"fp32_shift {shift})"
            )
        return cls(secret, seg_bits, shift, p)

    # ---- derivations ----------------------------------------------------------------------------
    @property
    def segments(self) -> int:
        return 1 << self.seg_bits

    def tensor_keys(self, name: str) -> tuple[int, int, int]:
        d = hashlib.blake2b(b"fpcore-trace tensor\0" + name.encode("utf-8"), key=self.secret, digest_size=12).digest()
        return (
            int.from_bytes(d[0:4], "little"),
            int.from_bytes(d[4:8], "little"),
            int.from_bytes(d[8:12], "little"),
        )

    def symbols(self, licensee: str) -> bytes:
        return bytes(x for b in self._digest(licensee) for x in (b & 15, b >> 4))

    def _digest(self, licensee: str) -> bytes:
        raw = check_licensee(licensee)
        return hashlib.blake2b(
            b"fpcore-trace licensee\0" + raw, key=self.secret, digest_size=self.segments // 2
        ).digest()

    def symbol_matrix(self, licensees: Sequence[str] | Iterable[str]) -> Any:
        """(N, S) uint8: every candidate's pattern per segment (the rows of `symbols`, vectorised)."""
        import numpy as np

        digests = b"".join(self._digest(c) for c in licensees)
        d = np.frombuffer(digests, dtype=np.uint8).reshape(-1, self.segments // 2)
        out = np.empty((d.shape[0], self.segments), dtype=np.uint8)
        out[:, 0::2] = d & 15
        out[:, 1::2] = d >> 4
        return out

    def code(self, licensee: str, name: str, offset: int = 0) -> TensorCode:
        return TensorCode(self.tensor_keys(name), self.symbols(licensee), self.fp32_shift, offset)

    def scoring_code(self, name: str, offset: int = 0) -> TensorCode:
        """The tensor's code without a licensee (trace scores all 16 patterns per segment)."""
        return TensorCode(self.tensor_keys(name), bytes(self.segments), self.fp32_shift, offset)
