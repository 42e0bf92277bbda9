"""The math verifier on real answers: MATH-500's reference solutions against its expected answers (from the
shared evaluation data next to the repository), and against the next problem's answer."""

import json
import pathlib

import pytest

from primejax.verifiers import math_reward

MATH500 = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "eval" / "math500.json"


@pytest.fixture(scope="module")
def math500():
    if not MATH500.is_file():
        pytest.skip(f"no evaluation data at {MATH500}")
    table = json.loads(MATH500.read_text())
    keys = list(table["solution"])
    return [table["solution"][k] for k in keys], [table["expected_answer"][k] for k in keys]


def test_every_reference_solution_is_accepted(math500):
    solutions, answers = math500
    rejected = [(answer, solution[-80:]) for solution, answer in zip(solutions, answers)
                if math_reward(solution, answer).score != 1.0]
    assert not rejected


def test_the_next_problems_answer_is_rejected(math500):
    solutions, answers = math500
    shifted = answers[1:] + answers[:1]
    accepted = [(a, b) for solution, a, b in zip(solutions, answers, shifted)
                if math_reward(solution, b).score == 1.0 and a.replace(" ", "") != b.replace(" ", "")]
    assert not accepted
