"""The code verifier: program extraction, APPS test parsing, lenient comparison, and scores from sandboxed runs."""

import json
import os
import time

import pytest

from primejax.sandbox import SandboxLimits
from primejax.verifiers import code_reward, extract_program, parse_apps_tests, return_value_matches, stdout_matches
from tests import sandbox_scenarios

LIMITS = SandboxLimits(timeout_seconds=2.0, cpu_seconds=2.0, memory_mb=512)

STDIO_TESTS = json.dumps({"inputs": ["1 2\n", "10 -3\n", "0 0\n", "7 8\n"], "outputs": ["3\n", "7\n", "0\n", "15\n"]})
CALL_TESTS = json.dumps({"fn_name": "two_sum", "inputs": [[[2, 7, 11, 15], 9], [[3, 2, 4], 6], [[3, 3], 6]],
                         "outputs": [[[0, 1]], [[1, 2]], [[0, 1]]]})


def fenced(code: str) -> str:
    return f"Here is my solution.\n\n```python\n{code}\n```\nIt reads the input and prints the sum."


def test_extract_program_takes_the_last_python_fence():
    response = "```python\nprint(1)\n```\nBetter:\n```Python3\nprint(2)\n```\n```text\nnot code\n```"
    assert extract_program(response) == "print(2)\n"
    assert extract_program("```py\nx = 1\n") == "x = 1\n"                  # an unclosed last fence runs to the end
    assert extract_program("print(3)") == "print(3)"                        # no fence: the whole response
    assert extract_program("<think>```python\nprint(0)\n```</think>print(4)") == "print(4)"


def test_parse_apps_tests_in_both_formats():
    stdio = parse_apps_tests({"inputs": [["1 2", "3"], "4\n"], "outputs": [["3", "3"], "4\n"]})
    assert stdio.fn_name is None and stdio.inputs == ("1 2\n3", "4\n") and stdio.outputs == ("3\n3", "4\n")
    call = parse_apps_tests(json.dumps({"fn_name": "f", "inputs": [[1, [2]], "3\n[4, 5]"], "outputs": [[7], "[1]"]}))
    assert call.fn_name == "f" and call.inputs == ([1, [2]], [3, [4, 5]]) and call.outputs == ([7], [1])
    assert len(call) == 2


@pytest.mark.parametrize("ground_truth, message", [
    ("not json", "ground_truth is not JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"outputs": ["1"]}', "ground_truth.inputs must be a list"),
    ('{"inputs": ["1"], "outputs": ["1", "2"]}', "1 inputs but 2 outputs"),
    ('{"inputs": [], "outputs": []}', "no tests"),
    ('{"inputs": [3], "outputs": ["1"]}', r"ground_truth.inputs\[0\] must be a string or a list of lines"),
    ('{"inputs": ["{x"], "outputs": [1], "fn_name": "f"}', r"inputs\[0\] is a string but not one JSON value"),
    ('{"inputs": [[1]], "outputs": [1], "fn_name": "os.system"}', "must be a Python identifier"),
])
def test_malformed_tests_name_the_field(ground_truth, message):
    with pytest.raises((TypeError, ValueError), match=message):
        parse_apps_tests(ground_truth)


@pytest.mark.parametrize("actual, expected, same", [
    ("3\n", "3", True),
    ("  3  \n\n", "3\n", True),
    ("1 2\n3\n", "1 2\n3", True),
    ("1  2\r\n3", "1 2\n3\n", True),
    ("0.3333333\n", "0.33333333", True),
    ("1e-9", "0", True),
    ("0.334", "0.333", False),
    ("3\n4\n", "3\n", False),
    ("YES", "yes", False),
    ("123457", "123456", False),          # integers compare exactly; only real numbers get the tolerance
    ("YES 100001", "YES 100000", False),
    ("007 -0", "7 0", True),
    ("1.0000001", "1", True),
    ("nan", "nan", True),
    ("inf", "1e400", False),
    ("", "", True),
    ("", "0", False),
])
def test_stdout_comparison_is_lenient_about_whitespace_and_float_noise(actual, expected, same):
    assert stdout_matches(actual, expected) is same


@pytest.mark.parametrize("actual, expected, same", [
    ("[0, 1]", [0, 1], True),
    ("[0, 1]", [[0, 1]], True),           # APPS wraps the expected value in a one-element list
    ("[[1, 2], [3, 4]]", [(1, 2), (3, 4)], True),
    ("5", [5], True),
    ("5", [5, 6], False),
    ("true", True, True),
    ('{"a": [1]}', {"a": (1,)}, True),
    ("[1, 0]", [0, 1], False),
    ("not json", "not json", False),
])
def test_return_value_comparison(actual, expected, same):
    assert return_value_matches(actual, expected) is same


@pytest.mark.parametrize("program, score", [
    ("a, b = map(int, input().split())\nprint(a + b)", 1.0),
    ("import sys\nfor line in sys.stdin:\n    print(sum(map(int, line.split())))", 1.0),
    ("a, b = map(int, input().split())\nprint(a + b if a != 10 else 0)", 0.75),
    ("a, b = map(int, input().split())\nprint(a * b)", 0.25),
    ("print(", 0.0),
    ("raise SystemExit(1)", 0.0),
])
def test_stdin_programs_score_the_fraction_of_tests_passed(program, score):
    verdict = code_reward(fenced(program), STDIO_TESTS, limits=LIMITS)
    assert verdict.error is None and verdict.score == pytest.approx(score)
    assert verdict.info["tests_run"] == 4


TWO_SUM = """\
class Solution:
    def two_sum(self, nums: List[int], target: int) -> List[int]:
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return (seen[target - x], i)
            seen[x] = i
"""


@pytest.mark.parametrize("program, score", [
    (TWO_SUM, 1.0),
    ("def two_sum(nums, target):\n    return [0, 1]", 2 / 3),
    ("def two_sum(nums, target):\n    return None", 0.0),
    ("def other(nums, target):\n    return [0, 1]", 0.0),
])
def test_call_based_programs_score_the_fraction_of_tests_passed(program, score):
    verdict = code_reward(fenced(program), CALL_TESTS, limits=LIMITS)
    assert verdict.error is None and verdict.score == pytest.approx(score)


def test_a_returned_object_cannot_fake_equality():
    """The value crosses the sandbox as JSON: an object whose __eq__ always says yes is never compared."""
    cheat = ("class Anything:\n    def __eq__(self, other):\n        return True\n    def tolist(self):\n"
             "        return 'anything'\n\ndef two_sum(nums, target):\n    return Anything()")
    assert code_reward(fenced(cheat), CALL_TESTS, limits=LIMITS).score == 0.0


def test_a_return_value_nested_past_python_limits_is_just_wrong():
    deep = "import os\ndef two_sum(nums, target):\n    os.write(3, b'[' * 100000 + b']' * 100000)\n    os._exit(0)"
    assert code_reward(fenced(deep), CALL_TESTS, limits=LIMITS).score == 0.0


def test_a_program_cannot_pass_itself_off_as_a_sandbox_failure():
    fake = "import os\nos.write(2, b'sandbox setup failed: injected')\nos._exit(125)"
    verdict = code_reward(fenced(fake), STDIO_TESTS, limits=LIMITS)
    assert verdict.score == 0.0 and verdict.error is None and verdict.info["statuses"] == {"runtime_error": 4}


def test_reasoning_is_dropped_in_linear_time():
    start = time.perf_counter()
    assert extract_program("<think>" * 200_000) == "<think>" * 200_000
    assert extract_program("<THINK>```python\nprint(0)\n```</think>" * 20_000 + "print(1)") == "print(1)"
    assert time.perf_counter() - start < 1.0


def test_only_the_first_max_tests_count():
    tests = json.dumps({"inputs": [f"{i}\n" for i in range(12)], "outputs": [f"{i}\n" for i in range(11)] + ["x"]})
    echo = fenced("print(input())")
    capped = code_reward(echo, tests, limits=LIMITS)
    assert capped.score == 1.0 and capped.info["tests_run"] == 10       # the reference's cap of 10: test 12 unseen
    every = code_reward(echo, tests, limits=LIMITS, max_tests=None)
    assert every.score == pytest.approx(11 / 12) and every.info["tests_run"] == 12


def test_a_program_that_never_ends_scores_zero_within_its_budget():
    verdict = code_reward(fenced("while True:\n    pass"), STDIO_TESTS,
                          limits=SandboxLimits(timeout_seconds=0.5, cpu_seconds=0.5), total_timeout_seconds=1.2)
    assert verdict.score == 0.0 and verdict.error is None
    assert set(verdict.info["statuses"]) <= {"timeout", "cpu_limit", "not_run"}


def test_malformed_ground_truth_is_an_error_not_a_crash():
    verdict = code_reward(fenced("print(1)"), '{"inputs": ["1"]}', limits=LIMITS)
    assert verdict.score == 0.0 and verdict.error.startswith("malformed ground truth: ground_truth.outputs")


@pytest.mark.parametrize("name", [name for name in sandbox_scenarios.SCENARIOS if name != "honest_program"])
def test_hostile_programs_score_zero_and_leave_nothing_behind(name):
    with sandbox_scenarios.Context() as context:
        source, _ = sandbox_scenarios.scenarios(context)[name]
        tests = json.dumps({"inputs": ["\n"], "outputs": ["all tests passed"]})
        verdict = code_reward(fenced(source), tests, limits=sandbox_scenarios.LIMITS)
        assert verdict.score == 0.0 and verdict.error is None
        assert not sandbox_scenarios.leftover_processes()
        assert not any(os.path.exists(marker) for marker in context.markers())
        assert not context.anything_received()
