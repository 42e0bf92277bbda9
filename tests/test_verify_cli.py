"""`python -m primejax.tools.verify`: rows back in order with every field kept, malformed rows named, a summary."""

import json
import subprocess
import sys

import pytest

from primejax.tools import verify

SUM_TESTS = json.dumps({"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]})
SUM_PROGRAM = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


def test_rows_come_back_in_order_with_scores_and_named_errors(tmp_path, capsys):
    rows = [
        {"id": 1, "response": r"So \boxed{\frac{1}{2}}", "ability": "math", "ground_truth": "0.5", "extra": [1, 2]},
        {"id": 2, "response": r"\boxed{7}", "ability": "math", "ground_truth": "8"},
        {"id": 3, "response": SUM_PROGRAM, "ability": "code", "ground_truth": SUM_TESTS},
        {"id": 4, "response": "```python\nprint(3)\n```", "data_source": "apps", "ground_truth": SUM_TESTS},
        {"id": 5, "response": 42, "ability": "math", "ground_truth": "1"},
        {"id": 6, "response": "x", "ability": "poetry", "ground_truth": "1"},
        {"id": 7, "response": "x", "ability": "math"},
        {"id": 8, "response": "x", "ability": ["math"], "ground_truth": "1"},
        {"id": 9, "response": "x", "ability": "code", "ground_truth": "{}"},
    ]
    lines = [json.dumps(row) for row in rows[:4]] + ["", "{not json", "[1, 2]"] + [json.dumps(r) for r in rows[4:]]
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(source, lines)
    assert verify.main(["--input", str(source), "--output", str(target), "--workers", "2"]) == 0
    out = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(out) == 11
    for row, written in zip(rows[:4], out[:4]):
        assert {k: written[k] for k in row} == row                      # every input field unchanged
    assert [row["score"] for row in out[:4]] == [1.0, 0.0, 1.0, 0.5]
    assert all(row["error"] is None for row in out[:4])
    assert out[4] == {"score": 0.0, "error": out[4]["error"]} and out[4]["error"].startswith("row 6: not valid JSON")
    assert out[5]["error"] == "row 7: not a JSON object but list"
    assert [row.get("id") for row in out[6:]] == [5, 6, 7, 8, 9]
    assert out[6]["error"] == "row 8: field 'response' must be a string, got int"
    assert out[7]["error"].startswith("row 9: field 'ability': no reward function for ability='poetry'")
    assert out[8]["error"] == "row 10: field 'ground_truth' must be a string, got NoneType"
    assert out[9]["error"] == "row 11: field 'ability' must be a string, got list"
    assert out[10]["error"].startswith("malformed ground truth: ground_truth.inputs must be a list")
    assert all(row["score"] == 0.0 for row in out[4:])
    summary = capsys.readouterr().out
    assert summary.startswith("verified 11 rows, mean score 0.2273, timeouts 0, errors 7 in ")
    assert "rows/s" in summary and "  math: 2 rows" in summary and "  code: 3 rows, mean score 0.5000" in summary
    assert "  malformed: 6 rows" in summary and "code sandbox:" in summary


def test_a_missing_input_names_the_path_and_leaves_the_output_alone(tmp_path, capsys):
    target = tmp_path / "out.jsonl"
    target.write_text("precious\n")
    with pytest.raises(SystemExit) as stop:
        verify.main(["--input", str(tmp_path / "absent.jsonl"), "--output", str(target)])
    assert stop.value.code == 2
    assert f"--input: no such file: {tmp_path / 'absent.jsonl'}" in capsys.readouterr().err
    assert target.read_text() == "precious\n"


def test_bad_options_name_the_option(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    write_lines(source, [])
    with pytest.raises(SystemExit):
        verify.main(["--input", str(source), "--output", str(tmp_path / "o.jsonl"), "--math-timeout", "-1"])
    assert "VerifierConfig.math_timeout_seconds must be a positive number, got -1.0" in capsys.readouterr().err


def test_the_module_runs_from_the_command_line(tmp_path):
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(source, [json.dumps({"response": r"\boxed{4}", "ability": "math", "ground_truth": "4"})])
    done = subprocess.run([sys.executable, "-m", "primejax.tools.verify", "--input", str(source), "--output",
                           str(target), "--workers", "1"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(target.read_text()) == {"response": r"\boxed{4}", "ability": "math", "ground_truth": "4",
                                              "score": 1.0, "error": None}
    assert "verified 1 row, mean score 1.0000" in done.stdout
