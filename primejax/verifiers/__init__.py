"""Outcome verifiers (SPEC §7): rule-based rewards for math answers and for code run in a sandbox.

| what | module |
| --- | --- |
| the verdict on one response | `verdict`: `Verdict` |
| math: final-answer extraction | `math_answer`: `extract_answer` |
| math: answer equivalence (math-verify and more) | `math_equivalence`: `answers_equivalent` |
| math: the reward | `math_reward`: `math_reward` |
| code: APPS tests, output comparison | `code_tests` |
| code: the reward, run in `primejax.sandbox` | `code_reward`: `code_reward`, `extract_program` |
| which reward scores an example | `rewards`: `REWARD_FUNCTIONS`, `route`, `VerifierConfig` |
| parallel verification with deadlines | `pool`: `VerifierPool`, `Sample` |
"""

from primejax.verifiers.code_reward import code_reward, extract_program
from primejax.verifiers.code_tests import AppsTests, parse_apps_tests, return_value_matches, stdout_matches
from primejax.verifiers.math_answer import extract_answer
from primejax.verifiers.math_equivalence import answers_equivalent
from primejax.verifiers.math_reward import math_reward
from primejax.verifiers.pool import PoolStats, Sample, VerifierPool
from primejax.verifiers.rewards import (
    DATA_SOURCE_ROUTES,
    REWARD_FUNCTIONS,
    BoundReward,
    VerifierConfig,
    add_data_source_route,
    bound_reward,
    route,
)
from primejax.verifiers.verdict import Verdict

__all__ = [
    "DATA_SOURCE_ROUTES",
    "REWARD_FUNCTIONS",
    "AppsTests",
    "BoundReward",
    "PoolStats",
    "Sample",
    "Verdict",
    "VerifierConfig",
    "VerifierPool",
    "add_data_source_route",
    "answers_equivalent",
    "bound_reward",
    "code_reward",
    "extract_answer",
    "extract_program",
    "math_reward",
    "parse_apps_tests",
    "return_value_matches",
    "route",
    "stdout_matches",
]
