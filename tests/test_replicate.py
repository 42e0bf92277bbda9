"""The replication experiment's smoke run: every variant trains a few steps from one SFT start and the
report's tables and plots are written (no claims are checked here; bench/REPLICATION.md has the runs)."""

import json
import os
import subprocess
import sys

from primejax.experiments.replication import VARIANTS, smoothed, steps_to_reach
from primejax.train.config import load_config, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_variant_is_a_valid_config():
    for variant, overrides in VARIANTS.items():
        config = load_config(os.path.join(ROOT, "configs", "replication.py"), variant)
        validate(config)
        assert config.demo.seed == 0
        for key, value in overrides.items():
            section, name = key.split(".")
            assert config[section][name] == value


def test_smoothing_and_steps_to_reach():
    assert smoothed([0, 2, 4, 6], 2).tolist() == [0, 1, 3, 5]
    assert steps_to_reach([0, 2, 4, 6], 3, 2) == 3 and steps_to_reach([0, 1], 5, 2) is None


def test_smoke_run_of_every_variant(tmp_path):
    command = [sys.executable, os.path.join(ROOT, "bench", "replicate.py"), "--smoke", "--seeds", "1", "--steps", "1",
               "--workdir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(results) == sorted(VARIANTS)
    assert all(len(run["reward"]) == 1 for runs in results.values() for run in runs.values())
    assert results["prime"]["0"]["prm_accuracy"] and not results["rloo_outcome"]["0"]["prm_accuracy"]
    for name in ("tables.md", "curves.png", "algorithms.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
