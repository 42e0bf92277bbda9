"""Verifier throughput: math verifications/s, code programs/s, and what the sandbox costs per program.

What it measures (all sides in one process, interleaved round by round, medians over rounds):
  * Math: the 500 MATH-500 reference solutions against their expected answers plus the same solutions
    against the next problem's answer (1000 real-format items, half right), from ../shared/data/eval
    (a synthetic set of 1000 answers when that file is absent). Per round: our `math_reward` serially in
    this process, raw math-verify serially (LaTeX parse of both boxed answers + verify, no normalisation),
    and a `VerifierPool` with one worker per core (items/s including the process round trips).
  * Code: a trivial stdin program (sum of two numbers, one test) scored by `code_reward` through the pool,
    programs/s.
  * Sandbox overhead: the same trivial program run once by `run_program` (supervisor start, namespaces,
    confinement, one forked test) against running it unsandboxed in a fresh interpreter, `python -c` and the
    leaner `python -I -S -c`, per round; overhead = median of per-round differences. The marginal cost of
    one more test is (time of 10 tests - time of 1 test) / 9.

Usage (from the repository root): python bench/verify.py [--rounds 5] [--programs 64]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from math_verify import LatexExtractionConfig, parse, verify

from primejax.sandbox import SandboxLimits, run_program
from primejax.verifiers import Sample, VerifierConfig, VerifierPool, math_reward

MATH500 = os.path.join(ROOT, "..", "shared", "data", "eval", "math500.json")
TRIVIAL = "a, b = map(int, input().split())\nprint(a + b)\n"
TRIVIAL_TESTS = json.dumps({"inputs": ["2 3\n"], "outputs": ["5\n"]})


def log(*args):
    print(*args, flush=True)


def math_items():
    """(response, ground truth) pairs: real solutions with right and with wrong answers."""
    if os.path.exists(MATH500):
        with open(MATH500) as f:
            table = json.load(f)
        keys = list(table["solution"])
        solutions = [table["solution"][k] for k in keys]
        answers = [table["expected_answer"][k] for k in keys]
    else:
        answers = [f"\\frac{{{i}}}{{{i + 1}}}" for i in range(500)]
        solutions = [f"We find the value is $\\boxed{{\\frac{{{2 * i}}}{{{2 * i + 2}}}}}$." for i in range(500)]
    wrong = answers[1:] + answers[:1]
    same = sum(a.replace(" ", "") == w.replace(" ", "") for a, w in zip(answers, wrong))
    return list(zip(solutions, answers)) + list(zip(solutions, wrong)), same


def raw_math_verify(response, ground_truth):
    config = [LatexExtractionConfig()]
    gold = parse("\\boxed{" + ground_truth + "}", extraction_config=config, parsing_timeout=None)
    return float(verify(gold, parse(response, extraction_config=config, parsing_timeout=None), timeout_seconds=None))


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench_math(pool, items, same, rounds):
    samples = [Sample(response, truth, "math") for response, truth in items]
    times = {"ours": [], "raw": [], "pool": []}
    agreement = None
    for _ in range(rounds):
        t, ours = timed(lambda: [math_reward(r, g).score for r, g in items])
        times["ours"].append(t)
        t, raw = timed(lambda: [raw_math_verify(r, g) for r, g in items])
        times["raw"].append(t)
        t, pooled = timed(lambda: [v.score for v in pool.verify(samples)])
        times["pool"].append(t)
        assert pooled == ours, "the pool and the in-process verifier disagree"
        agreement = (sum(ours[: len(items) // 2]), sum(raw[: len(items) // 2]),
                     sum(ours[len(items) // 2:]), sum(raw[len(items) // 2:]))
    n = len(items)
    log(f"math: {n} items ({n // 2} right answers, {n // 2} wrong), {rounds} rounds")
    for side, label in (("ours", "math_reward, serial"), ("raw", "raw math-verify, serial"),
                        ("pool", f"VerifierPool, {pool.num_workers} workers")):
        log(f"  {label:28s} {n / statistics.median(times[side]):8.0f} items/s")
    log(f"  pool / serial speed-up       {statistics.median(o / p for o, p in zip(times['ours'], times['pool'])):.2f}x")
    log(f"  ours / raw math-verify speed {statistics.median(r / o for r, o in zip(times['raw'], times['ours'])):.2f}x")
    log(f"  right answers accepted: ours {agreement[0]:.0f}/{n // 2}, raw {agreement[1]:.0f}/{n // 2}; "
        f"wrong answers accepted: ours {agreement[2]:.0f}, raw {agreement[3]:.0f} "
        f"({same} of the shifted answers are the same answer)")


def bench_code(pool, programs, rounds):
    samples = [Sample(f"```python\n{TRIVIAL}```", TRIVIAL_TESTS, "code")] * programs
    rates = []
    for _ in range(rounds):
        t, verdicts = timed(lambda: pool.verify(samples))
        assert all(v.score == 1.0 for v in verdicts), verdicts[0]
        rates.append(programs / t)
    log(f"code: {programs} trivial programs (1 test each) per round, {rounds} rounds")
    log(f"  VerifierPool, {pool.num_workers} workers   {statistics.median(rates):8.1f} programs/s")
    log(f"  isolation: {verdicts[0].info['isolation']}")


def _plain(*flags):
    def run():
        done = subprocess.run([sys.executable, *flags, "-c", TRIVIAL], input="2 3\n", capture_output=True, text=True,
                              check=True)
        assert done.stdout == "5\n"
    return run


def bench_sandbox(rounds):
    limits = SandboxLimits()
    sides = {"sandbox": lambda: run_program(TRIVIAL, ["2 3\n"], limits=limits),
             "plain": _plain(), "bare": _plain("-I", "-S"),
             "sandbox10": lambda: run_program(TRIVIAL, ["2 3\n"] * 10, limits=limits)}
    times = {side: [] for side in sides}
    for _ in range(rounds):
        for side, fn in sides.items():
            t, run = timed(fn)
            times[side].append(t)
            if side.startswith("sandbox"):
                assert all(test.stdout == "5\n" for test in run.tests), run
                mode = run.isolation.mode
    per_test = statistics.median((t10 - t1) / 9 for t10, t1 in zip(times["sandbox10"], times["sandbox"]))
    log(f"sandbox, one trivial program, {rounds} rounds (isolation: {mode})")
    log(f"  run_program, 1 test               {1e3 * statistics.median(times['sandbox']):8.1f} ms")
    for side, label in (("plain", "python -c subprocess (no sandbox)"), ("bare", "python -I -S -c (no sandbox)")):
        overhead = statistics.median(s - p for s, p in zip(times["sandbox"], times[side]))
        ratio = statistics.median(s / p for s, p in zip(times["sandbox"], times[side]))
        log(f"  {label:33s} {1e3 * statistics.median(times[side]):8.1f} ms; sandbox overhead "
            f"{1e3 * overhead:6.1f} ms ({ratio:.2f}x)")
    log(f"  each further test                 {1e3 * per_test:8.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--programs", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="pool workers (default: every core)")
    args = parser.parse_args()
    log(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    with VerifierPool(VerifierConfig(), num_workers=args.workers) as pool:
        pool.verify([Sample("\\boxed{1}", "1", "math")] * pool.num_workers)          # start the workers
        bench_math(pool, *math_items(), args.rounds)
        bench_code(pool, args.programs, args.rounds)
    bench_sandbox(max(args.rounds, 10))


if __name__ == "__main__":
    main()
