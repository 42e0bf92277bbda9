"""The golden test cannot pass vacuously: run on an empty directory, on a file with an output it does
not compute, or on a file whose output was changed, it fails, while an intact copy passes (each
directory is one pytest run in a subprocess)."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests import test_golden

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_golden_test(directory):
    env = {**os.environ, "PRIMEJAX_GOLDEN_DIR": str(directory)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "tests/test_golden.py"],
                            env=env, cwd=ROOT, capture_output=True, text=True, check=False, timeout=600)
    return result.returncode, result.stdout + result.stderr


def small_golden_file():
    files = [p for p in test_golden.GOLDEN_FILES if p.name.startswith("verl_core_outcome")]
    if not files:
        pytest.fail(f"no verl_core_outcome file in {test_golden.GOLDEN_DIR}")
    return files[0]


def test_an_empty_directory_fails(tmp_path):
    code, output = run_golden_test(tmp_path)
    assert code != 0 and "no golden .npz files" in output


def test_a_file_with_an_unknown_or_changed_output_fails_and_the_original_passes(tmp_path):
    source = small_golden_file()
    with np.load(source) as npz:
        data = {k: npz[k] for k in npz.files}
    shutil.copy(source, tmp_path / "verl_core_outcome_original.npz")
    np.savez(tmp_path / "verl_core_outcome_extra.npz", **data, out_something_new=np.zeros(3, np.float32))
    changed = data["out_verl_grpo_outcome_adv"] + np.float32(1e-4)
    np.savez(tmp_path / "verl_core_outcome_changed.npz", **{**data, "out_verl_grpo_outcome_adv": changed})
    code, output = run_golden_test(tmp_path)
    assert code != 0
    assert "PASSED tests/test_golden.py::test_golden_file[verl_core_outcome_original.npz]" in output, output[-3000:]
    assert "FAILED tests/test_golden.py::test_golden_file[verl_core_outcome_extra.npz]" in output
    assert "outputs not covered: ['out_something_new']" in output
    assert "FAILED tests/test_golden.py::test_golden_file[verl_core_outcome_changed.npz]" in output
    assert "verl_core_outcome_changed.npz [eager] out_verl_grpo_outcome_adv" in output
