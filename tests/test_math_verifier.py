"""The math outcome verifier: answer extraction, equivalence (the table in `math_cases`), the reward, and its
behaviour on hostile answers (huge, deeply nested, or written as Python code)."""

from __future__ import annotations

import importlib
import logging
import time

import math_verify.grader
import math_verify.parser
import pytest

from primejax.verifiers.math_answer import extract_answer
from primejax.verifiers.math_equivalence import answers_equivalent, normalize_answer
from primejax.verifiers.math_reward import math_reward
from tests.math_cases import EQUIVALENCE_CASES, EXTRACTION_CASES

FAST_SECONDS = 0.5


def equivalence_params():
    """The table's rows, each with an id naming its row number, category and claim."""
    return [
        pytest.param(pred, gold, expected, id=f"{index:03d}-{category}: {pred} {'==' if expected else '!='} {gold}")
        for index, (pred, gold, expected, category) in enumerate(EQUIVALENCE_CASES)
    ]


def seconds_taken(function, *args):
    """(result, wall seconds) of one call."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


# --- the equivalence table ---


@pytest.mark.parametrize("pred, gold, expected", equivalence_params())
def test_table_through_answers_equivalent(pred, gold, expected):
    assert answers_equivalent(pred, gold) is expected


@pytest.mark.parametrize("pred, gold, expected", equivalence_params())
def test_table_through_math_reward(pred, gold, expected):
    verdict = math_reward(f"Some working... so the answer is \\boxed{{{pred}}}.", gold)
    assert verdict.error is None
    assert verdict.score == (1.0 if expected else 0.0)


# --- extraction ---


@pytest.mark.parametrize(
    "response, expected",
    [
        pytest.param(response, expected, id=f"{index:02d}")
        for index, (response, expected) in enumerate(EXTRACTION_CASES)
    ],
)
def test_extraction_table(response, expected):
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    "response, expected",
    [
        (r"\boxed{2} then \fbox{1}", "1"),
        (r"\boxed{\left\{ x \right.}", r"\left\{ x \right."),
        (r"\boxed {  3 }", "3"),
        (r"\boxedfoo", None),
        (r"\boxed{1} and at the end \boxed{", None),
        (r"\boxed{1} and the final answer is 2", "1"),
        ("The answer is \\(\\frac{1}{2}\\). Done.", r"\frac{1}{2}"),
        ("**Final Answer:** 42", "42"),
        ("The answer is 1.5 and then 2. More text", "1.5 and then 2"),
        ("The answer is 7.\nLater: the answer is 8.", "8"),
    ],
)
def test_extraction_rules(response, expected):
    assert extract_answer(response) == expected


# --- normalisation ---


@pytest.mark.parametrize(
    "answer, normalized",
    [
        ("(1,2)", "(1,2)"),
        ("1, 2, 3", "1,2,3"),
        ("(100,200)", "(100,200)"),
        ("1,000", "1000"),
        ("1{,}000", "1000"),
        (r"1\,000", "1000"),
        ("1 000 000", "1000000"),
        ("1 2 3", "1 2 3"),
        ("1 000 0000", "1 000 0000"),
        ("1.5e3", r"1.5\times10^{3}"),
        ("2e-5", r"2\times10^{-5}"),
        (r"\varnothing", r"\emptyset"),
        (r"\left( 3, -\dfrac{1}{2} \right)", r"(3,-\frac{1}{2})"),
        (r"\$1,250.", "1250"),
        (r"20 \text{ square units}", "20"),
        (r"4\pi r^2", r"4\pi r^2"),
        (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),
        ("Yes", "yes"),
        ("x_1 = 4", "4"),
        ("x = 1, y = 2", "x=1,y=2"),
    ],
)
def test_normalize_answer(answer, normalized):
    assert normalize_answer(answer) == normalized


def test_relative_tolerance_is_a_parameter():
    assert not answers_equivalent("3.001", "3")
    assert answers_equivalent("3.001", "3", rel_tol=1e-3)
    assert not answers_equivalent("3001", "3000", rel_tol=1e-3)


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("1, 2, 3", "2", False),
        (r"2 \text{ or } 3", "2", False),
        (r"e^{i\pi} + 1", "0", True),
        ("i", "-1", False),
        (r"33.333\%", r"\frac{1}{3}", True),
        (r"10^{100}", r"1.0 \times 10^{100}", True),
        (r"\frac{1}{0}", "0.0", False),
        (r"\infty", "1.0", False),
    ],
)
def test_equivalence_edge_cases(pred, gold, expected):
    assert answers_equivalent(pred, gold) is expected


# --- the reward ---


def test_reward_right_and_wrong_answers_are_judged():
    right = math_reward(r"Thus \boxed{\frac{1}{2}}.", "0.5")
    wrong = math_reward(r"Thus \boxed{\frac{1}{3}}.", "0.5")
    assert (right.score, right.error, right.info["answer"]) == (1.0, None, r"\frac{1}{2}")
    assert (wrong.score, wrong.error, wrong.info["answer"]) == (0.0, None, r"\frac{1}{3}")


def test_reward_without_answer_is_a_judged_zero():
    verdict = math_reward("I have no idea.", "5")
    assert (verdict.score, verdict.error) == (0.0, None)
    assert verdict.info == {"answer": None, "reason": "no answer found"}


@pytest.mark.parametrize("ground_truth", [None, 5, ["5"], "", "   "])
def test_reward_with_malformed_ground_truth_fails(ground_truth):
    verdict = math_reward(r"\boxed{5}", ground_truth)
    assert verdict.score == 0.0
    assert verdict.error.startswith("malformed ground truth")


def test_reward_on_overlong_answer_is_zero_without_parsing(monkeypatch):
    def fail_if_called(*args, **kwargs):
        raise AssertionError("an over-long answer must not be compared")

    # The package re-exports the function under the module's name, so the module is fetched by import.
    monkeypatch.setattr(importlib.import_module("primejax.verifiers.math_reward"), "answers_equivalent", fail_if_called)
    answer = "1+" * 600 + "1"
    verdict, seconds = seconds_taken(math_reward, f"\\boxed{{{answer}}}", "1201")
    assert (verdict.score, verdict.error) == (0.0, None)
    assert verdict.info["reason"] == "answer longer than 1000 characters"
    assert seconds < FAST_SECONDS


# --- hostile input: size ---


def test_extraction_of_a_50k_character_answer_is_fast():
    answer = "1+" * 25_000
    extracted, seconds = seconds_taken(extract_answer, f"We find \\boxed{{{answer}}}.")
    assert extracted == answer.strip()
    assert seconds < FAST_SECONDS


def test_extraction_from_20k_nested_braces_is_fast():
    inner = "{" * 20_000 + "7" + "}" * 20_000
    extracted, seconds = seconds_taken(extract_answer, f"\\boxed{{{inner}}}")
    assert extracted == inner
    assert seconds < FAST_SECONDS
    unbalanced, seconds = seconds_taken(extract_answer, "\\boxed{" + "{" * 20_000)
    assert unbalanced is None
    assert seconds < FAST_SECONDS


def test_extraction_from_a_1mb_response_without_answer_is_fast():
    response = "the value is probably close to something, " * (1_000_000 // 43)
    extracted, seconds = seconds_taken(extract_answer, response)
    assert extracted is None
    assert seconds < FAST_SECONDS
    verdict, seconds = seconds_taken(math_reward, response, "5")
    assert verdict.info["reason"] == "no answer found"
    assert seconds < FAST_SECONDS


@pytest.mark.parametrize(
    "unit",
    ["1+", "1 ", "1,", "1 000 ", "1{,}", "\\text{", "\\text{a", "1.5e", "5 cm ", "x=", "\\\\", "\\,", "^{", "a ", "."],
)
def test_normalization_of_50k_characters_is_fast(unit):
    answer = (unit * (50_000 // len(unit) + 1))[:50_000]
    for text in (answer, answer + " cm^2", "5" + answer + "1e5"):
        _, seconds = seconds_taken(normalize_answer, text)
        assert seconds < FAST_SECONDS
        _, seconds = seconds_taken(extract_answer, f"The answer is {text}")
        assert seconds < FAST_SECONDS


# --- hostile input: code ---


def hostile_answers(marker: str) -> list[tuple[str, str]]:
    """(answer, the ground truth it would match if it were run as Python)."""
    touch = f"__import__('os').system('touch {marker}')"
    return [
        (touch, "0"),
        ("().__class__.__mro__[1].__subclasses__()", "0"),
        (f"exec(\"open('{marker}', 'w').close()\")", "0"),
        (f'eval("{touch}")', "0"),
        ("lambda: 1", "1"),
        (f"(lambda: {touch})()", "0"),
        (f"{touch} if 1 else 0", "0"),
    ]


def test_answers_are_never_run_as_code(tmp_path):
    marker = tmp_path.resolve() / "MARKER"
    for answer, gold in hostile_answers(str(marker)):
        for response in (f"So \\boxed{{{answer}}}", f"The final answer is {answer}"):
            assert math_reward(response, gold).score == 0.0, answer
        assert not answers_equivalent(answer, gold), answer
    assert not marker.exists()


# --- the process pool's contract ---


class PoolDeadline(BaseException):
    """Stands in for the pool's signal-raised deadline exception."""


def test_a_deadline_exception_is_never_swallowed(monkeypatch):
    def out_of_time(*args, **kwargs):
        raise PoolDeadline

    monkeypatch.setattr(math_verify.parser, "extract_target_from_pred", out_of_time)
    with pytest.raises(PoolDeadline):
        answers_equivalent("1.5", "2")


def test_timeout_disabled_warning_is_silenced(monkeypatch, caplog):
    monkeypatch.setattr(math_verify.parser, "TIMEOUT_WARNING_SHOWN", False)
    monkeypatch.setattr(math_verify.grader, "TIMEOUT_WARNING_SHOWN", False)
    with caplog.at_level(logging.WARNING):
        assert answers_equivalent("7/2", "3.5")
    assert not [record for record in caplog.records if "Timeout is disabled" in record.getMessage()]
