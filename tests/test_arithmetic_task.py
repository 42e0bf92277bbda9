"""Tests for primejax.data.arithmetic: the generated demo task."""

import ast
import random
import re
import statistics

import pytest

from primejax.data import PromptDataset, load_prompt_records
from primejax.data.arithmetic import (
    Difficulty,
    make_problem,
    make_problems,
    answer_only,
    make_rows,
    sft_examples,
    split_of,
    tokenizer_corpus,
    write_jsonl,
)
from primejax.tokenizer import build_demo_tokenizer
from primejax.verifiers import math_reward

STEP = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)\.")


@pytest.fixture(scope="module")
def train_rows():
    return make_rows(1000, seed=0, split="train")


@pytest.fixture(scope="module")
def eval_rows():
    return make_rows(300, seed=0, split="eval")


def evaluate(expression: str) -> int:
    """The value of an arithmetic expression of integers, +, - and *, by Python's own precedence."""

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        assert isinstance(node, ast.BinOp), ast.dump(node)
        left, right = value(node.left), value(node.right)
        return {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}[type(node.op)]

    return value(ast.parse(expression, mode="eval").body)


def test_the_documented_example_format():
    problem = make_problem(random.Random(5), num_ops=3, max_operand=20)
    assert problem.question == f"Compute {problem.expression}."
    assert problem.solution.endswith(f" The answer is \\boxed{{{problem.answer}}}.")
    assert len(STEP.findall(problem.solution)) == 3


def test_chains_are_worked_left_to_right_with_the_asked_operators():
    problems = make_problems(200, seed=2, split="train", min_ops=4, max_ops=5, max_operand=9, max_value=20,
                             operators="+-", chain=True)
    for problem in problems:
        assert "(" not in problem.expression and "*" not in problem.expression
        assert evaluate(problem.expression) == problem.answer
        numbers = problem.expression.split(" ")[::2]
        steps = STEP.findall(problem.solution)
        assert [a for a, _, _, _ in steps[:1]] == numbers[:1] and [b for _, _, b, _ in steps] == numbers[1:]
        assert all(steps[i][3] == steps[i + 1][0] for i in range(len(steps) - 1))  # each step uses the last result
    assert {len(STEP.findall(p.solution)) for p in problems} == {4, 5}
    with pytest.raises(ValueError, match=r"Difficulty.operators='\+/' must be distinct operators"):
        Difficulty(operators="+/")


def test_problems_are_deterministic_in_the_rng_and_the_seed():
    assert make_problem(random.Random(7), num_ops=3, max_operand=20) == make_problem(
        random.Random(7), num_ops=3, max_operand=20
    )
    assert make_rows(50, seed=3, split="train") == make_rows(50, seed=3, split="train")
    assert make_rows(50, seed=3, split="train") != make_rows(50, seed=4, split="train")


def test_solutions_follow_evaluation_order_and_respect_precedence(train_rows):
    for problem in make_problems(300, seed=1, split="train", min_ops=1, max_ops=5):
        assert evaluate(problem.expression) == problem.answer
        steps = STEP.findall(problem.solution)
        assert 1 <= len(steps) <= 5
        assert len(steps) == problem.expression.count(" ") // 2
        for a, op, b, c in steps:
            assert evaluate(f"{a} {op} {b}") == int(c)
        assert int(steps[-1][3]) == problem.answer
    assert any("(" in row["prompt"][0]["content"] for row in train_rows)


def test_values_stay_in_range():
    difficulty = {"min_ops": 2, "max_ops": 4, "max_operand": 12, "max_value": 200}
    for problem in make_problems(300, seed=2, split="train", **difficulty):
        operands = [int(n) for n in re.findall(r"\d+", problem.expression)]
        assert all(0 <= n <= 12 for n in operands)
        assert 2 <= len(operands) - 1 <= 4
        assert all(0 <= int(c) < 200 for *_, c in STEP.findall(problem.solution))
        assert 0 <= problem.answer < 200


def test_rows_follow_the_eurus_schema(train_rows):
    row = train_rows[5]
    assert set(row) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    assert row["data_source"] == "primejax/arithmetic"
    assert row["ability"] == "math"
    assert row["prompt"][0]["role"] == "user" and len(row["prompt"]) == 1
    assert row["reward_model"]["style"] == "rule"
    assert row["extra_info"]["split"] == "train" and row["extra_info"]["index"] == 5
    assert sft_examples([row]) == [(row["prompt"], row["extra_info"]["solution"])]


def test_answer_only_responses_verify_and_take_the_asked_share(train_rows):
    worked = sft_examples(train_rows)
    mixed = sft_examples(train_rows, answer_only_fraction=0.7, seed=3)
    assert [prompt for prompt, _ in mixed] == [prompt for prompt, _ in worked]
    cut = [i for i, (a, b) in enumerate(zip(worked, mixed)) if a != b]
    assert abs(len(cut) / len(train_rows) - 0.7) < 0.05
    for i in cut:
        row = train_rows[i]
        assert mixed[i][1] == answer_only(row) == f"The answer is \\boxed{{{row['reward_model']['ground_truth']}}}."
        assert math_reward(mixed[i][1], row["reward_model"]["ground_truth"]).score == 1.0
    assert mixed == sft_examples(train_rows, answer_only_fraction=0.7, seed=3)
    assert mixed != sft_examples(train_rows, answer_only_fraction=0.7, seed=4)
    assert all(response == answer_only(row) for (_, response), row in
               zip(sft_examples(train_rows, answer_only_fraction=1.0), train_rows))
    with pytest.raises(ValueError, match=r"answer_only_fraction must lie in \[0, 1\], got 1.5"):
        sft_examples(train_rows, answer_only_fraction=1.5)


def test_train_and_eval_never_share_a_question(train_rows, eval_rows):
    train = {row["prompt"][0]["content"] for row in train_rows}
    evaluation = {row["prompt"][0]["content"] for row in eval_rows}
    assert len(train) == len(train_rows) and len(evaluation) == len(eval_rows)
    assert not train & evaluation
    assert all(split_of(q.removeprefix("Compute ").removesuffix(".")) == "train" for q in train)
    assert all(split_of(q.removeprefix("Compute ").removesuffix(".")) == "eval" for q in evaluation)
    other_seed = {row["prompt"][0]["content"] for row in make_rows(300, seed=9, split="eval")}
    assert not train & other_seed


def test_solutions_verify_and_wrong_answers_do_not(train_rows, eval_rows):
    for row in train_rows + eval_rows:
        truth = row["reward_model"]["ground_truth"]
        solution = row["extra_info"]["solution"]
        assert math_reward(solution, truth).score == 1.0
        wrong = solution.replace(f"\\boxed{{{truth}}}", f"\\boxed{{{int(truth) + 1}}}")
        assert math_reward(wrong, truth).score == 0.0


def test_token_lengths_with_the_demo_tokenizer(train_rows, eval_rows):
    tokenizer = build_demo_tokenizer(tokenizer_corpus(train_rows), vocab_size=512)
    prompts, solutions = [], []
    for messages, solution in sft_examples(eval_rows):
        prompts.append(len(tokenizer.apply_chat_template(messages)))
        ids = tokenizer.encode(solution)
        assert tokenizer.decode(ids) == solution
        solutions.append(len(ids) + 1)  # and <|im_end|>
    assert statistics.median(prompts) <= 30 and max(prompts) <= 40
    assert statistics.median(solutions) <= 50 and max(solutions) <= 70  # digits are single tokens


def test_written_rows_load_as_prompt_records(tmp_path, eval_rows):
    path = write_jsonl(eval_rows[:20], tmp_path / "data" / "eval.jsonl")
    records = load_prompt_records(path)
    assert [r.ground_truth for r in records] == [row["reward_model"]["ground_truth"] for row in eval_rows[:20]]
    assert [r.extra_info for r in records] == [row["extra_info"] for row in eval_rows[:20]]
    tokenizer = build_demo_tokenizer(tokenizer_corpus(eval_rows), vocab_size=300)
    assert len(PromptDataset(records, tokenizer, 64)) == 20


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="split must be one of train, eval, got 'test'"):
        make_rows(3, seed=0, split="test")
    with pytest.raises(ValueError, match="min_ops=3 exceeds max_ops=2"):
        make_rows(3, seed=0, split="train", min_ops=3, max_ops=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_operations'"):
        make_rows(3, seed=0, split="train", num_operations=2)
    with pytest.raises(ValueError, match="found only"):
        make_rows(50, seed=0, split="eval", min_ops=1, max_ops=1, max_operand=2)
    assert Difficulty().max_ops == 4
