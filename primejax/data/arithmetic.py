"""The built-in demo task: multi-step integer arithmetic, small enough for a tiny model trained from scratch.

A problem is a random expression over +, - and * with small operands, written with the usual
precedence and the parentheses it needs:

    question: Compute (17 + 5) * 3 - 8.
    solution: 17 + 5 = 22. 22 * 3 = 66. 66 - 8 = 58. The answer is \\boxed{58}.

The solution writes one step per operation in evaluation order (left operand first, innermost
first). Every intermediate value and the answer lie in [0, max_value), so no number is negative
and none grows long. Problems may use a subset of the operators, and may be chains, where each
operation applies to the result so far (`Compute 7 + 5 - 3 + 8.`: worked left to right, with no
parentheses when the operators are + and -). Rows follow the Eurus-2-RL-Data schema (see `primejax.data.prompts`) with
ability "math", so the math verifier scores responses against `str(answer)`.

For the supervised warm start, `sft_examples` can cut a share of the solutions to the final answer
alone, as a teacher that does not always show its work.

Train and eval rows never share an expression: a hash of the expression assigns each one to a
split, and generation for a split skips the expressions of the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from collections.abc import Iterable, Mapping
from typing import Any

DATA_SOURCE = "primejax/arithmetic"
SPLITS = ("train", "eval")
EVAL_FRACTION = 0.1
OPERATORS = "+-*"
PRECEDENCE = {"+": 1, "-": 1, "*": 2}
MAX_ATTEMPTS_PER_PROBLEM = 10_000


@dataclasses.dataclass(frozen=True)
class Difficulty:
    """How hard the generated problems are.

    Attributes:
      min_ops, max_ops: each problem has a number of operations drawn uniformly from this range.
      max_operand: operands are drawn uniformly from [0, max_operand].
      max_value: every intermediate value and the answer lie in [0, max_value).
      operators: the operators drawn from, a subset of "+-*".
      chain: every operation's left operand is the result so far (a left-deep tree), instead of
        random trees.
    """

    min_ops: int = 2
    max_ops: int = 4
    max_operand: int = 20
    max_value: int = 1000
    operators: str = OPERATORS
    chain: bool = False

    def __post_init__(self):
        for name in ("min_ops", "max_ops", "max_operand", "max_value"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Difficulty.{name} must be a positive integer, got {value!r}")
        if self.min_ops > self.max_ops:
            raise ValueError(f"Difficulty.min_ops={self.min_ops} exceeds max_ops={self.max_ops}")
        if self.max_operand >= self.max_value:
            raise ValueError(f"Difficulty.max_operand={self.max_operand} must be below max_value={self.max_value}")
        if not self.operators or not set(self.operators) <= set(OPERATORS) or len(set(self.operators)) != len(
                self.operators):
            raise ValueError(f"Difficulty.operators={self.operators!r} must be distinct operators among {OPERATORS!r}")
        if not isinstance(self.chain, bool):
            raise ValueError(f"Difficulty.chain must be a bool, got {self.chain!r}")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One generated problem.

    Attributes:
      expression: the expression alone, e.g. "(17 + 5) * 3 - 8".
      question: the prompt text, e.g. "Compute (17 + 5) * 3 - 8."
      solution: the worked solution, one step per operation, ending in "The answer is \\boxed{58}."
      answer: the value of the expression.
    """

    expression: str
    question: str
    solution: str
    answer: int


@dataclasses.dataclass(frozen=True)
class _Operation:
    """An internal node of an expression tree."""

    operator: str
    left: _Node
    right: _Node


_Node = int | _Operation


def make_problem(rng: random.Random, *, num_ops: int, max_operand: int, max_value: int = 1000,
                 operators: str = OPERATORS, chain: bool = False) -> Problem:
    """A random problem with `num_ops` operations, operands in [0, max_operand] and values in [0, max_value),
    operators from `operators`, as a chain or a random tree (see Difficulty).

    Draws expressions from `rng` until one keeps every value in range, so the result is a function of
    the rng's state alone. Returns the Problem; ValueError for arguments Difficulty rejects, or if no
    expression fits within MAX_ATTEMPTS_PER_PROBLEM draws.
    """
    Difficulty(min_ops=num_ops, max_ops=num_ops, max_operand=max_operand, max_value=max_value, operators=operators,
               chain=chain)  # checks them
    for _ in range(MAX_ATTEMPTS_PER_PROBLEM):
        tree = (_random_chain if chain else _random_tree)(rng, num_ops, max_operand, operators)
        steps: list[str] = []
        answer = _evaluate(tree, steps, max_value)
        if answer is not None:
            expression = _render(tree)
            solution = " ".join(steps + [f"The answer is \\boxed{{{answer}}}."])
            return Problem(expression, f"Compute {expression}.", solution, answer)
    raise ValueError(f"no expression with {num_ops} operations and operands up to {max_operand} kept its values "
                     f"below {max_value} in {MAX_ATTEMPTS_PER_PROBLEM} draws")


def _random_tree(rng: random.Random, num_ops: int, max_operand: int, operators: str) -> _Node:
    """A random expression tree with `num_ops` operations: the split of operations between the subtrees,
    the operator and the operands are all uniform."""
    if num_ops == 0:
        return rng.randint(0, max_operand)
    left_ops = rng.randint(0, num_ops - 1)
    operator = rng.choice(operators)
    left = _random_tree(rng, left_ops, max_operand, operators)
    right = _random_tree(rng, num_ops - 1 - left_ops, max_operand, operators)
    return _Operation(operator, left, right)


def _random_chain(rng: random.Random, num_ops: int, max_operand: int, operators: str) -> _Node:
    """A left-deep tree: a uniform first operand, then `num_ops` times a uniform operator and operand."""
    node: _Node = rng.randint(0, max_operand)
    for _ in range(num_ops):
        node = _Operation(rng.choice(operators), node, rng.randint(0, max_operand))
    return node


def _evaluate(node: _Node, steps: list[str], max_value: int) -> int | None:
    """The value of `node`, appending one "a op b = c." step per operation in evaluation order;
    None as soon as a value leaves [0, max_value)."""
    if isinstance(node, int):
        return node
    left = _evaluate(node.left, steps, max_value)
    if left is None:
        return None
    right = _evaluate(node.right, steps, max_value)
    if right is None:
        return None
    value = {"+": left + right, "-": left - right, "*": left * right}[node.operator]
    if not 0 <= value < max_value:
        return None
    steps.append(f"{left} {node.operator} {right} = {value}.")
    return value


def _render(node: _Node) -> str:
    """The expression as text. A left operand is parenthesised when it binds more loosely than its
    operator, a right operand when it binds as loosely or more, so reading the text left to right with
    the usual precedence rebuilds exactly this tree."""
    if isinstance(node, int):
        return str(node)
    left, right = _render(node.left), _render(node.right)
    if isinstance(node.left, _Operation) and PRECEDENCE[node.left.operator] < PRECEDENCE[node.operator]:
        left = f"({left})"
    if isinstance(node.right, _Operation) and PRECEDENCE[node.right.operator] <= PRECEDENCE[node.operator]:
        right = f"({right})"
    return f"{left} {node.operator} {right}"


def split_of(expression: str, eval_fraction: float = EVAL_FRACTION) -> str:
    """The split ("train" or "eval") an expression belongs to, from the SHA-256 of its text."""
    digest = hashlib.sha256(expression.encode("utf-8")).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else "train"


def make_problems(count: int, *, seed: int, split: str, eval_fraction: float = EVAL_FRACTION,
                  **difficulty: Any) -> list[Problem]:
    """`count` distinct problems of `split`, deterministic in `seed`, the split and the difficulty.

    `difficulty` holds the fields of Difficulty. Problems whose expression belongs to the other split,
    or repeats one already drawn, are skipped. Returns the problems; ValueError for a bad argument, or
    when the difficulty offers too few distinct expressions for `count`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must lie strictly between 0 and 1, got {eval_fraction!r}")
    level = Difficulty(**difficulty)
    rng = random.Random(seed)
    problems: list[Problem] = []
    seen: set[str] = set()
    max_draws = 100 * count + 1000
    for _ in range(max_draws):
        if len(problems) == count:
            return problems
        num_ops = rng.randint(level.min_ops, level.max_ops)
        problem = make_problem(rng, num_ops=num_ops, max_operand=level.max_operand, max_value=level.max_value,
                               operators=level.operators, chain=level.chain)
        if problem.expression in seen or split_of(problem.expression, eval_fraction) != split:
            continue
        seen.add(problem.expression)
        problems.append(problem)
    if len(problems) == count:
        return problems
    raise ValueError(f"found only {len(problems)} distinct {split} problems of {level} in {max_draws} draws; "
                     f"asked for {count}")


def make_rows(count: int, *, seed: int, split: str, eval_fraction: float = EVAL_FRACTION,
              **difficulty: Any) -> list[dict[str, Any]]:
    """`count` Eurus-schema rows of `split` (see `make_problems` for the arguments).

    Each row is {"data_source": "primejax/arithmetic", "prompt": [{"role": "user", "content": question}],
    "ability": "math", "reward_model": {"ground_truth": str(answer), "style": "rule"},
    "extra_info": {"split": split, "index": i, "solution": solution}}.
    """
    problems = make_problems(count, seed=seed, split=split, eval_fraction=eval_fraction, **difficulty)
    return [
        {
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": problem.question}],
            "ability": "math",
            "reward_model": {"ground_truth": str(problem.answer), "style": "rule"},
            "extra_info": {"split": split, "index": i, "solution": problem.solution},
        }
        for i, problem in enumerate(problems)
    ]


def answer_only(row: Mapping[str, Any]) -> str:
    """The response that skips the work: "The answer is \\boxed{N}." with the row's ground truth."""
    return f"The answer is \\boxed{{{row['reward_model']['ground_truth']}}}."


def sft_examples(rows: Iterable[Mapping[str, Any]], *, answer_only_fraction: float = 0.0,
                 seed: int = 0) -> list[tuple[list[dict[str, str]], str]]:
    """(prompt messages, response) pairs for a supervised warm start, one per row of `make_rows`.

    The response is the worked solution, or, for a share `answer_only_fraction` of the rows chosen
    with `seed`, only the final answer (`answer_only`): a teacher that sometimes shows its work and
    sometimes does not. A model imitating it answers some questions without the steps, which on
    multi-step problems a small model gets mostly wrong, so what RL can gain is choosing to work.

    TypeError naming the row's position when a row has no string `extra_info.solution`; ValueError
    for a fraction outside [0, 1].
    """
    if not 0.0 <= answer_only_fraction <= 1.0:
        raise ValueError(f"answer_only_fraction must lie in [0, 1], got {answer_only_fraction!r}")
    rng = random.Random(seed)
    examples = []
    for i, row in enumerate(rows):
        solution = (row.get("extra_info") or {}).get("solution")
        if not isinstance(solution, str):
            raise TypeError(f"row {i} has no string extra_info.solution, got {solution!r}")
        if rng.random() < answer_only_fraction:
            solution = answer_only(row)
        examples.append(([dict(m) for m in row["prompt"]], solution))
    return examples


def tokenizer_corpus(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Texts to train the demo BPE tokenizer on: for each row, the text of each ChatML turn.

    A turn is "{role}\\n{content}", the text the template puts between `<|im_start|>` and `<|im_end|>`
    (the special tokens themselves are left out: they are never split). Each row gives its prompt
    messages and the assistant's solution.
    """
    corpus = []
    for prompt, solution in sft_examples(rows):
        corpus.extend(f"{m['role']}\n{m['content']}" for m in prompt)
        corpus.append(f"assistant\n{solution}")
    return corpus


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Writes `rows` to `path`, one JSON object per line, creating the parent directory.

    The file is written under a temporary name and renamed, so `path` never holds a partial file.
    Returns the path as a string.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    os.replace(partial, path)
    return path

