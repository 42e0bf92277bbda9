"""The code outcome reward: run the response's program on the problem's tests, in the sandbox (SPEC §7).

score = (tests passed among the first `max_tests`) / min(#tests, max_tests). With the reference's cap of 10 this
is exactly what its two phases give for a deterministic program (all tests together first, scoring 1.0 if all
pass, else the first 10 one by one): a program that passes the first 10 scores 1.0 either way. `max_tests=None`
runs every test, the paper's #passes / #tests. Each test runs in a fresh confined process
(`primejax.sandbox`); expected outputs stay outside the sandbox and are compared here.
"""

from __future__ import annotations

import re
from collections import Counter

from primejax.sandbox import SandboxLimits, run_program
from primejax.verifiers.code_tests import parse_apps_tests, return_value_matches, stdout_matches
from primejax.verifiers.verdict import Verdict

# The names judges make available without an import (LeetCode-style solutions use `List`, `deque`, `inf` ...);
# the builtins come last so that math's names never shadow them (math.pow against pow).
PRELUDE = """\
import bisect, collections, copy, functools, heapq, itertools, math, operator, random, re, string, sys
from bisect import *
from collections import *
from functools import *
from heapq import *
from itertools import *
from math import *
from typing import *
from builtins import *
"""
PRELUDE_MODULES = ("bisect", "collections", "copy", "functools", "heapq", "itertools", "math", "operator", "random",
                   "re", "string", "typing")

_PYTHON_FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)


def drop_reasoning(response: str) -> str:
    """The response without its <think>...</think> blocks (case-insensitive), in one pass: an opening tag with no
    closing one is left as text."""
    kept, position = [], 0
    while True:
        opening = _THINK_OPEN.search(response, position)
        closing = _THINK_CLOSE.search(response, opening.end()) if opening else None
        if closing is None:
            kept.append(response[position:])
            return "".join(kept)
        kept.append(response[position:opening.start()])
        position = closing.end()


def extract_program(response: str) -> str:
    """The code of the last ```python fence (up to the next ```, or the end of an unclosed fence); without
    such a fence, the whole response. Reasoning inside <think>...</think> is dropped first."""
    response = drop_reasoning(response)
    fences = list(_PYTHON_FENCE.finditer(response))
    if not fences:
        return response
    body = response[fences[-1].end():]
    end = body.find("```")
    return body if end < 0 else body[:end]


def code_reward(response: str, ground_truth, *, limits: SandboxLimits | None = None, max_tests: int | None = 10,
                isolation: str = "auto", total_timeout_seconds: float | None = None) -> Verdict:
    """The fraction of tests the response's program passes; see the module doc for which tests count."""
    try:
        tests = parse_apps_tests(ground_truth)
    except (TypeError, ValueError) as error:
        return Verdict.failed(f"malformed ground truth: {error}")
    count = len(tests) if max_tests is None else min(len(tests), max_tests)
    run = run_program(extract_program(response), list(tests.inputs[:count]), fn_name=tests.fn_name,
                      prelude=PRELUDE, preload=PRELUDE_MODULES, limits=limits, isolation=isolation,
                      total_timeout_seconds=total_timeout_seconds)
    if run.error is not None:
        return Verdict.failed(f"sandbox: {run.error}")
    broken = [outcome for outcome in run.tests if outcome.status == "sandbox_error"]
    if broken:
        return Verdict.failed(f"sandbox: {broken[0].stderr.strip()}")
    passed = 0
    for outcome, expected in zip(run.tests, tests.outputs[:count]):
        if outcome.status != "ok":
            continue
        if tests.fn_name is None:
            passed += stdout_matches(outcome.stdout, expected)
        else:
            passed += outcome.value is not None and return_value_matches(outcome.value, expected)
    statuses = Counter(outcome.status for outcome in run.tests)
    return Verdict(passed / count, None, {"tests_run": count, "tests_passed": passed, "statuses": dict(statuses),
                                         "isolation": str(run.isolation)})
