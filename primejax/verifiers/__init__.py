"""Outcome verifiers (SPEC §7): rule-based rewards for math answers and for code run in a sandbox."""

from primejax.verifiers.math_answer import extract_answer
from primejax.verifiers.math_equivalence import answers_equivalent
from primejax.verifiers.math_reward import math_reward
from primejax.verifiers.verdict import Verdict

__all__ = ["Verdict", "answers_equivalent", "extract_answer", "math_reward"]
