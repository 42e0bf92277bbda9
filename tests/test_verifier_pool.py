"""The verifier pool and reward dispatch: order kept, every item bounded in time, one bad item costs only itself."""

import concurrent.futures
import json
import os
import subprocess
import sys
import time

import pytest

from primejax.sandbox import SandboxLimits
from primejax.train.rollouts import PendingScores
from primejax.verifiers import (
    REWARD_FUNCTIONS,
    Sample,
    Verdict,
    VerifierConfig,
    VerifierPool,
    add_data_source_route,
    bound_reward,
    route,
)
from tests import verifier_rewards

MISBEHAVING = {name: {"timeout_seconds": 0.4} for name in REWARD_FUNCTIONS.names() if name.startswith("test_")}
CONFIG = VerifierConfig(math_timeout_seconds=1.0, code_limits=SandboxLimits(timeout_seconds=2.0, cpu_seconds=2.0),
                        worker_memory_mb=512, extra=MISBEHAVING)
SUM_TESTS = json.dumps({"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]})


@pytest.fixture(scope="module")
def pool():
    with VerifierPool(CONFIG, num_workers=2) as shared:
        yield shared


def test_route_by_ability_then_data_source():
    assert route("math", None) == "math"
    assert route("code", "numina_olympiads") == "code"             # ability first, as the official code
    assert route(None, "numina_synthetic_math") == "math"          # else data_source, as verl's recipe
    assert route("", "taco") == "code"
    assert route(None, "apps") == "code"
    with pytest.raises(ValueError, match=r"ability='chemistry', data_source='numinafoo'"):
        route("chemistry", "numinafoo")
    add_data_source_route("lengthbench", "test_length_ratio")
    assert route(None, "lengthbench_v2") == "test_length_ratio"
    with pytest.raises(ValueError, match="unknown reward function 'nothing'"):
        add_data_source_route("x", "nothing")


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="VerifierConfig.math_timeout_seconds must be a positive number, got 0"):
        VerifierConfig(math_timeout_seconds=0)
    with pytest.raises(ValueError, match="VerifierConfig.code_max_tests must be a positive integer or None"):
        VerifierConfig(code_max_tests=0)
    with pytest.raises(ValueError, match="code_isolation must be one of auto, namespaces, process, got 'docker'"):
        VerifierConfig(code_isolation="docker")
    with pytest.raises(ValueError, match="unknown reward function 'nope'"):
        VerifierConfig(extra={"nope": {}})
    with pytest.raises(ValueError, match="reward function 'test_length_ratio' takes no option 'scael'"):
        bound_reward("test_length_ratio", VerifierConfig(extra={"test_length_ratio": {"scael": 2}}))
    with pytest.raises(ValueError, match="num_workers must be a positive integer, got 0"):
        VerifierPool(num_workers=0)


def test_mixed_batch_keeps_order_and_user_options(pool):
    samples = [
        Sample(r"The answer is \boxed{\frac{1}{2}}.", "0.5", "math"),
        Sample("```python\na, b = map(int, input().split())\nprint(a + b)\n```", SUM_TESTS, "code"),
        Sample(r"\boxed{3}", "4", None, "numina_amc_aime"),
        Sample("abcd", "abcdefgh", "test_length_ratio"),
        Sample("```python\nprint(3)\n```", SUM_TESTS, None, "codeforces"),
        Sample("x", "y", "chemistry"),
    ]
    verdicts = pool.verify(samples)
    assert [v.score for v in verdicts] == [1.0, 1.0, 0.0, 0.5, 0.5, 0.0]
    assert [v.error is None for v in verdicts] == [True] * 5 + [False]
    assert "no reward function" in verdicts[5].error
    scaled = VerifierConfig(extra={"test_length_ratio": {"scale": 1.5}})
    with VerifierPool(scaled, num_workers=1) as own:
        assert own.verify([Sample("abcd", "abcdefgh", "test_length_ratio")])[0].score == 0.75


def test_each_failure_costs_only_its_own_item(pool):
    """Timeouts (soft, and stuck in C), a segfault, an exit, a MemoryError and bad return values, each between
    two good items: every good item still scores 1, every bad one 0 with its reason."""
    good = Sample(r"\boxed{2}", "2", "math")
    bad = ["test_sleepy", "test_stuck_in_c", "test_segfault", "test_exit", "test_memory_hog", "test_bad_return",
           "test_out_of_range"]
    samples = [good]
    for name in bad:
        samples += [Sample("r", "g", name), good]
    deaths_before = pool.stats.worker_deaths
    start = time.monotonic()
    verdicts = pool.verify(samples)
    elapsed = time.monotonic() - start
    assert [v.score for v in verdicts[::2]] == [1.0] * (len(bad) + 1)
    errors = dict(zip(bad, (v.error for v in verdicts[1::2])))
    assert all(v.score == 0.0 for v in verdicts[1::2])
    assert errors["test_sleepy"] == "timeout" and errors["test_stuck_in_c"] == "timeout"
    assert errors["test_segfault"] == "worker died (signal 11)"
    assert errors["test_exit"] == "worker died (exit code 3)"
    assert errors["test_memory_hog"] == "memory limit"
    assert errors["test_bad_return"].startswith("error: TypeError: a reward function must return a Verdict")
    assert errors["test_out_of_range"].startswith("error: ValueError: Verdict.score must lie in [0, 1]")
    assert pool.stats.worker_deaths == deaths_before + 2
    assert elapsed < 8.0, elapsed          # two workers, two 0.4 s timeouts (+0.25 s grace), restarts included


@pytest.mark.parametrize("answer", [
    "9^{9^{9^{9}}}",
    "10^{10^{10}}",
    "2^{2^{30}}",
    "1" * 50_000,
    "{" * 20_000 + "1" + "}" * 20_000,
    r"\frac{" * 3_000 + "1" + "}{2}" * 3_000,
    "x" * 999 + "^" * 1,
])
def test_adversarial_math_answers_finish_within_the_bound(pool, answer):
    start = time.monotonic()
    verdict = pool.verify([Sample(rf"So \boxed{{{answer}}}", "1", "math")])[0]
    assert time.monotonic() - start < CONFIG.math_timeout_seconds + 1.5
    assert verdict.score == 0.0


def test_no_answer_in_a_megabyte_response_is_quick(pool):
    start = time.monotonic()
    verdict = pool.verify([Sample("the cat sat on the mat " * 45_000, "1", "math")])[0]
    assert verdict == Verdict(0.0, None, {"answer": None, "reason": "no answer found"})
    assert time.monotonic() - start < 2.0


def test_submit_overlaps_with_the_caller(pool):
    future = pool.submit([Sample("r", "g", "test_sleepy")])
    assert not future.done()                     # the caller goes on while the batch is verified
    assert future.result()[0].error == "timeout"


def test_a_closed_pool_refuses_work():
    closed = VerifierPool(num_workers=1)
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.submit([])


def test_module_registers_its_rewards():
    assert verifier_rewards.sleepy is REWARD_FUNCTIONS.get("test_sleepy")


def _scores(verdicts):
    future = concurrent.futures.Future()
    future.set_result(verdicts)
    return PendingScores(future, len(verdicts)).result()


def test_a_round_where_every_verification_fails_stops_training():
    with pytest.raises(RuntimeError, match=r"every one of the 3 verifications.*worker died \(exit code 1\)"):
        _scores([Verdict.failed("worker died (exit code 1)")] * 3)


def test_timeouts_and_some_failures_score_zero_and_count_as_errors():
    scores, errors = _scores([Verdict(1.0), Verdict.failed("timeout"), Verdict.failed("worker died (signal 9)")])
    assert scores.tolist() == [1.0, 0.0, 0.0]
    assert errors.tolist() == [False, True, True]
    scores, errors = _scores([Verdict.failed("timeout")] * 2)
    assert scores.tolist() == [0.0, 0.0] and errors.all()


SLOW_MAIN = '''
import sys
import time

from primejax.verifiers import Sample, VerifierConfig, VerifierPool

if __name__ != "__main__":
    time.sleep(3)  # a script whose imports are slow: multiprocessing re-imports it in every worker
else:
    with VerifierPool(VerifierConfig(math_timeout_seconds=0.5), num_workers=2) as pool:
        verdicts = pool.verify([Sample("so \\\\boxed{7}", "7", ability="math")] * 4)
    print([(v.score, v.error) for v in verdicts])
    sys.exit(0 if all(v.score == 1.0 for v in verdicts) else 1)
'''


def test_a_script_slow_to_import_does_not_time_its_items_out(tmp_path):
    script = tmp_path / "slow_main.py"
    script.write_text(SLOW_MAIN)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
