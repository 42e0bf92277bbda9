"""The verdict of an outcome verifier on one response."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One response's outcome reward r_o in [0, 1] (SPEC §7).

    `error` is None when the verifier reached a judgement, right or wrong; otherwise a short reason
    ("timeout", "worker died: signal 9", "malformed ground truth: ...") and the score is 0. `info`
    holds JSON-able details for metrics and debugging: the extracted answer, tests passed, and so on.
    """

    score: float
    error: str | None = None
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"Verdict.score must lie in [0, 1], got {self.score!r}")

    @classmethod
    def failed(cls, reason: str, **info: Any) -> Verdict:
        """A verification that reached no judgement: score 0 with the reason kept."""
        return cls(0.0, reason, info)
