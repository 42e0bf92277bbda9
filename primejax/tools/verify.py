"""Scores a JSONL file of responses with the outcome verifiers.

    python -m primejax.tools.verify --input IN.jsonl --output OUT.jsonl [--workers N] [--math-timeout 1.0]
        [--code-timeout 5.0] [--code-max-tests 10] [--isolation auto]

Each input row is an object {"response": str, "ground_truth": str, "ability": "math" | "code"} (or a
"data_source" such as numina_* / apps / taco instead of "ability"); for code, "ground_truth" is the APPS test
JSON, as in Eurus-2-RL-Data. Each row is written back with every field unchanged, in input order, plus
"score" (float in [0, 1]) and "error" (null, or a short reason: a timeout, a sandbox failure, a malformed row
named by its line number and field). Blank lines are skipped. A malformed row never stops the others. The output
is written to a temporary file and renamed at the end, so an existing OUT.jsonl is replaced only by a complete
one. A summary (rows, mean score, timeouts, errors, rows/s, per ability) goes to stdout.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

from primejax.sandbox import ISOLATION_MODES, SandboxLimits
from primejax.verifiers import Sample, VerifierConfig, VerifierPool, route


def _row_problem(row) -> str | None:
    """What is wrong with a parsed row, naming the field; None when it can be verified."""
    if not isinstance(row, dict):
        return f"not a JSON object but {type(row).__name__}"
    if not isinstance(row.get("response"), str):
        return f"field 'response' must be a string, got {type(row.get('response')).__name__}"
    if not isinstance(row.get("ground_truth"), (str, dict)):
        return f"field 'ground_truth' must be a string, got {type(row.get('ground_truth')).__name__}"
    for field in ("ability", "data_source"):
        if row.get(field) is not None and not isinstance(row[field], str):
            return f"field '{field}' must be a string, got {type(row[field]).__name__}"
    try:
        route(row.get("ability"), row.get("data_source"))
    except ValueError as error:
        return f"field 'ability': {error}"
    return None


def read_rows(path: str) -> list[tuple[int, object, str | None]]:
    """(line number, parsed row or raw text, problem) for every non-blank line of a JSONL file."""
    rows = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                rows.append((number, line.rstrip("\n"), f"row {number}: not valid JSON ({error})"))
                continue
            problem = _row_problem(row)
            rows.append((number, row, None if problem is None else f"row {number}: {problem}"))
    return rows


def _write_atomically(path: str, rows: list[dict]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".verify-", suffix=".jsonl", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _summary(rows: list[dict], abilities: list[str], seconds: float, isolation: set[str]) -> str:
    groups = collections.defaultdict(list)
    for row, ability in zip(rows, abilities):
        groups[ability].append(row)

    def describe(group):
        timeouts = sum(row["error"] == "timeout" for row in group)
        errors = sum(row["error"] is not None for row in group) - timeouts
        mean = sum(row["score"] for row in group) / len(group)
        count = f"{len(group)} row" + ("" if len(group) == 1 else "s")
        return f"{count}, mean score {mean:.4f}, timeouts {timeouts}, errors {errors}"

    rate = len(rows) / max(seconds, 1e-9)
    lines = [f"verified {describe(rows) if rows else '0 rows'} in {seconds:.2f} s ({rate:.1f} rows/s)"]
    lines += [f"  {ability}: {describe(group)}" for ability, group in sorted(groups.items())]
    lines += [f"  code sandbox: {mode}" for mode in sorted(isolation)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m primejax.tools.verify", description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="JSONL rows to score")
    parser.add_argument("--output", required=True, help="where the scored rows go (replaced atomically)")
    parser.add_argument("--workers", type=int, default=None, help="verifier processes (default: every core)")
    parser.add_argument("--math-timeout", type=float, default=1.0, help="seconds per math verification")
    parser.add_argument("--code-timeout", type=float, default=5.0, help="wall seconds per code test")
    parser.add_argument("--code-max-tests", type=int, default=10, help="tests that count (0: all)")
    parser.add_argument("--code-memory-mb", type=int, default=1024, help="address space per code test")
    parser.add_argument("--isolation", choices=ISOLATION_MODES, default="auto", help="code sandbox mode")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.input):
        parser.error(f"--input: no such file: {args.input}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        parser.error(f"--output: the directory of {args.output} does not exist")
    try:
        limits = SandboxLimits(timeout_seconds=args.code_timeout, cpu_seconds=args.code_timeout,
                               memory_mb=args.code_memory_mb)
        config = VerifierConfig(math_timeout_seconds=args.math_timeout, code_limits=limits,
                                code_max_tests=args.code_max_tests or None, code_isolation=args.isolation)
        pool = VerifierPool(config, num_workers=args.workers)
    except ValueError as error:
        parser.error(str(error))

    rows = read_rows(args.input)
    start = time.monotonic()
    good = [(index, row) for index, (_, row, problem) in enumerate(rows) if problem is None]
    with pool:
        verdicts = pool.verify([Sample(row["response"], row["ground_truth"], row.get("ability"),
                                       row.get("data_source")) for _, row in good])
    seconds = time.monotonic() - start
    results: list[dict] = [{} for _ in rows]
    abilities = ["malformed"] * len(rows)
    isolation = set()
    for (index, row), verdict in zip(good, verdicts):
        results[index] = {**row, "score": verdict.score, "error": verdict.error}
        abilities[index] = route(row.get("ability"), row.get("data_source"))
        if "isolation" in verdict.info:
            isolation.add(verdict.info["isolation"])
    for index, (_, row, problem) in enumerate(rows):
        if problem is not None:
            results[index] = {**(row if isinstance(row, dict) else {}), "score": 0.0, "error": problem}
    _write_atomically(args.output, results)
    print(_summary(results, abilities, seconds, isolation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
