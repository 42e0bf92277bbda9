"""APPS-format test cases: parsing the ground truth and judging one test's output against it.

The ground truth is JSON `{"inputs": [...], "outputs": [...], "fn_name"?: str}` (as in Eurus-2-RL-Data,
APPS, TACO, CodeContests):
- without `fn_name` (standard input): `inputs[i]` is the text fed to stdin and `outputs[i]` the expected stdout;
  either may also be a list of lines.
- with `fn_name` (call-based): `inputs[i]` is the list of positional arguments (or, as PRIME's data writes it,
  a string holding one JSON value per line) and `outputs[i]` the expected return value; a one-element list
  wrapping it is accepted too, as APPS writes it, and a string holding JSON is decoded.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any


@dataclasses.dataclass(frozen=True)
class AppsTests:
    inputs: tuple            # stdin strings, or argument lists when call-based
    outputs: tuple           # expected stdout strings, or expected return values
    fn_name: str | None

    def __len__(self) -> int:
        return len(self.inputs)


def _text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(line, str) for line in value):
        return "\n".join(value)
    raise ValueError(f"{where} must be a string or a list of lines, got {type(value).__name__}")


def _arguments(value: Any, where: str) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        try:
            return [json.loads(line) for line in value.splitlines() if line.strip()]
        except ValueError as error:
            raise ValueError(f"{where} is a string but not one JSON value per line: {error}") from None
    raise ValueError(f"{where} must be a list of arguments, got {type(value).__name__}")


def _expected_value(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def parse_apps_tests(ground_truth: str | dict) -> AppsTests:
    """Reads APPS-format tests; raises ValueError or TypeError naming the field that is wrong."""
    if isinstance(ground_truth, str):
        try:
            ground_truth = json.loads(ground_truth)
        except ValueError as error:
            raise ValueError(f"ground_truth is not JSON: {error}") from None
    if not isinstance(ground_truth, dict):
        raise TypeError(f"ground_truth must be a JSON object, got {type(ground_truth).__name__}")
    inputs, outputs = ground_truth.get("inputs"), ground_truth.get("outputs")
    for name, value in (("inputs", inputs), ("outputs", outputs)):
        if not isinstance(value, list):
            raise TypeError(f"ground_truth.{name} must be a list, got {type(value).__name__}")
    if len(inputs) != len(outputs):
        raise ValueError(f"ground_truth has {len(inputs)} inputs but {len(outputs)} outputs")
    if not inputs:
        raise ValueError("ground_truth has no tests")
    fn_name = ground_truth.get("fn_name") or None
    if fn_name is not None and not (isinstance(fn_name, str) and fn_name.isidentifier()):
        raise ValueError(f"ground_truth.fn_name must be a Python identifier, got {fn_name!r}")
    if fn_name is None:
        return AppsTests(tuple(_text(v, f"ground_truth.inputs[{i}]") for i, v in enumerate(inputs)),
                         tuple(_text(v, f"ground_truth.outputs[{i}]") for i, v in enumerate(outputs)), None)
    return AppsTests(tuple(_arguments(v, f"ground_truth.inputs[{i}]") for i, v in enumerate(inputs)),
                     tuple(_expected_value(v) for v in outputs), fn_name)


def _is_integer(token: str) -> bool:
    return token.lstrip("+-").isdigit()


def _numbers_close(actual: str, expected: str, rel_tol: float, abs_tol: float) -> bool:
    if _is_integer(actual) and _is_integer(expected):
        return int(actual) == int(expected)
    try:
        a, b = float(actual), float(expected)
    except ValueError:
        return False
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= abs_tol + rel_tol * abs(b)


def stdout_matches(actual: str, expected: str, *, rel_tol: float = 1e-5, abs_tol: float = 1e-8) -> bool:
    """Lenient stdout comparison (SPEC §7): the whitespace-separated tokens must agree one for one, where two
    integers must be equal as numbers ("007" = "7") and a pair of other numbers may differ as numpy's allclose
    allows (|a - b| <= abs_tol + rel_tol * |b|), so only real-valued answers get a tolerance.

    Leading, trailing and repeated whitespace and blank lines therefore never matter.
    """
    actual_tokens, expected_tokens = actual.split(), expected.split()
    if actual_tokens == expected_tokens:
        return True
    if len(actual_tokens) != len(expected_tokens):
        return False
    return all(a == b or _numbers_close(a, b, rel_tol, abs_tol) for a, b in zip(actual_tokens, expected_tokens))


def _as_lists(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_as_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_lists(item) for key, item in value.items()}
    return value


def return_value_matches(actual_json: str, expected: Any) -> bool:
    """Call-based comparison: the returned value (sent back as JSON, so tuples are already lists) equals the
    expected value, or the single element of an expected one-element list."""
    try:
        actual = json.loads(actual_json)
        expected = _as_lists(expected)
        if actual == expected:
            return True
        return isinstance(expected, list) and len(expected) == 1 and actual == expected[0]
    except (ValueError, RecursionError):    # not JSON, or nested deeper than Python will follow: not a match
        return False
