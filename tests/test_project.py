"""The project's contract: CI runs exactly the README's test command."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    assert len(ci_lines) == 1
    readme_lines = (ROOT / "README.md").read_text().splitlines()
    assert ci_lines[0] in readme_lines
    assert "pytest" in ci_lines[0] and ci_lines[0].startswith("pip install torch==2.13.0 && ")
