"""The math outcome reward (SPEC §7): 1 when the response's final answer equals the ground truth, else 0."""

from __future__ import annotations

from primejax.verifiers.math_answer import extract_answer
from primejax.verifiers.math_equivalence import answers_equivalent
from primejax.verifiers.verdict import Verdict


def math_reward(response: str, ground_truth: str, *, rel_tol: float = 1e-4, max_answer_chars: int = 1000) -> Verdict:
    """Scores one response against its ground-truth answer.

    The answer is `extract_answer`'s (last box, else an "answer is" form) and is compared with
    `answers_equivalent`. A missing answer, or one longer than `max_answer_chars` (never parsed), is a
    judged wrong answer: score 0, no error, the reason in `info`. Only a ground truth that is not a
    non-empty string is an error.
    """
    if not isinstance(ground_truth, str):
        return Verdict.failed(f"malformed ground truth: expected a string, got {type(ground_truth).__name__}")
    if not ground_truth.strip():
        return Verdict.failed("malformed ground truth: empty string")
    answer = extract_answer(response)
    if answer is None:
        return Verdict(0.0, info={"answer": None, "reason": "no answer found"})
    if len(answer) > max_answer_chars:
        return Verdict(
            0.0,
            info={
                "answer": None,
                "answer_chars": len(answer),
                "reason": f"answer longer than {max_answer_chars} characters",
            },
        )
    score = 1.0 if answers_equivalent(answer, ground_truth, rel_tol=rel_tol) else 0.0
    return Verdict(score, info={"answer": answer})
