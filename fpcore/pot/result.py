"""Verdict objects of proof-of-training verification: one CheckResult per check, combined in a Verdict.

They stand in a module of their own so that every check (binding, matching, verify's own) can return one
without importing the verifier that combines them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CheckResult:
    name: str
    passed: bool | None  # None: skipped
    reason: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Verdict:
    record: str
    accepted: bool
    checks: dict[str, CheckResult]
    model: str | None = None  # the model the record was bound to; None: no model was checked

    def as_dict(self) -> dict[str, Any]:
        """What `--json` prints: the record, the model it was bound to (or that none was checked), the
        verdict, and every check with its figures."""
        return {
            "record": self.record,
            "model": self.model,
            "model_checked": self.model is not None,
            "accepted": self.accepted,
            "checks": {
                n: {"passed": c.passed, "reason": c.reason, "seconds": c.seconds, **c.figures}
                for n, c in self.checks.items()
            },
        }

    def reasons(self) -> list[str]:
        return [f"{c.name}: {c.reason}" for c in self.checks.values() if c.passed is False]
