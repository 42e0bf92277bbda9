"""Outcome verifiers (SPEC §7): rule-based rewards for math answers and for code run in a sandbox."""

from primejax.verifiers.code_reward import code_reward, extract_program
from primejax.verifiers.code_tests import AppsTests, parse_apps_tests, return_value_matches, stdout_matches
from primejax.verifiers.math_answer import extract_answer
from primejax.verifiers.math_equivalence import answers_equivalent
from primejax.verifiers.math_reward import math_reward
from primejax.verifiers.verdict import Verdict

__all__ = ["AppsTests", "Verdict", "answers_equivalent", "code_reward", "extract_answer", "extract_program",
           "math_reward", "parse_apps_tests", "return_value_matches", "stdout_matches"]
