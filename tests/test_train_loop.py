"""The training program end to end on the built-in task: one iteration, learning, exact resume, errors."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from primejax.data import DataError
from primejax.models import load_hf_checkpoint
from primejax.train.config import ConfigError, validate
from primejax.train.demo import prepare_demo
from primejax.train.loop import Trainer, TrainingError
from tests import train_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = os.path.join(ROOT, "tests", "train_config.py")


def _config(**overrides) -> ml_collections.ConfigDict:
    c = train_config.get_config()
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        (c[section] if section else c)[name] = value
    return c


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """The tiny demo's data and SFT model, made once for the module."""
    workdir = str(tmp_path_factory.mktemp("demo"))
    prepare_demo(_config(), workdir)
    return workdir


def _trainer(demo_dir, tmp_path, **overrides) -> Trainer:
    config = prepare_demo(_config(**overrides), demo_dir)
    return Trainer(config, str(tmp_path))


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_one_iteration_end_to_end(demo_dir, tmp_path, packed):
    trainer = _trainer(demo_dir, tmp_path, **{"packing.enabled": packed})
    with trainer.session() as start:
        assert start == 0
        batch = trainer.collector.collect(trainer.state["policy"].params, jax.random.key(0))
        rows = 4 * 4
        assert len(batch.prompts) == 4
        assert batch.sequences.tokens.shape == (rows, 32 + 32)
        assert batch.sequences.response_mask.shape == (rows, 32) and batch.acc.shape == (rows,)
        before = jax.tree.map(np.asarray, trainer.state["policy"].params)
        metrics, timings = trainer.iteration(1)
    for key in ("actor/pg_loss", "actor/grad_norm", "prm/loss", "prm/accuracy", "reward/outcome_mean",
                "reward/process_mean", "advantage/mean", "actor/entropy", "actor/kl_ref", "filter/pass_rate",
                "response_length/mean", "train/outcome_reward", "actor/pg_clipfrac"):
        assert np.isfinite(metrics[key]), key
    assert all(np.isfinite(v) and v >= 0 for v in timings.values())
    after = trainer.state["policy"].params
    assert jax.tree.structure(before) == jax.tree.structure(after)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def test_run_writes_metrics_checkpoints_and_an_export(demo_dir, tmp_path):
    summary = _trainer(demo_dir, tmp_path).run()
    lines = _lines(tmp_path / "metrics.jsonl")
    assert [line["step"] for line in lines] == [0, 1, 2, 3]
    assert "eval/pass@1" in lines[0] and "eval/pass@1" in lines[2] and "eval/pass@1" in lines[3]
    assert summary["start/eval/pass@1"] == lines[0]["eval/pass@1"]
    assert summary["final/eval/pass@1"] == lines[3]["eval/pass@1"]
    assert [line["step"] for line in _lines(tmp_path / "perf.jsonl")] == [1, 2, 3]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2", "3"]
    assert os.listdir(tmp_path / "tensorboard")
    config, params = load_hf_checkpoint(tmp_path / "export")
    assert os.path.isfile(tmp_path / "export" / "tokenizer.json")
    assert config.num_layers == 2 and params["embed"]["embedding"].shape[0] == config.vocab_size


def test_prm_accuracy_and_outcome_reward_rise_over_a_few_iterations(tmp_path):
    # Eight prompts seen every iteration (one addition or subtraction of digits), a partial warm start,
    # eight samples each and two PPO epochs at a fast learning rate: within ten iterations the policy
    # solves more of them and the PRM ranks its responses better. Seeds 0, 1, 2 and 4 of this setup pass;
    # with seed 3 the outcome reward rises (0.10 -> 0.23) but the PRM's accuracy ends 0.01 below its start.
    config = _config(**{"seed": 2, "steps": 10, "demo.min_ops": 1, "demo.max_ops": 1, "demo.max_operand": 9,
                        "demo.max_value": 20, "demo.operators": "+-", "demo.train_size": 8, "demo.sft_size": 100,
                        "demo.hidden_size": 64, "demo.intermediate_size": 128, "sft.steps": 250, "sft.lr": 1e-2,
                        "sft.mini_batch_size": 32, "sft.micro_batch_size": 32, "rollout.batch_size": 8,
                        "rollout.n": 8, "rollout.max_rounds": 1, "filter.accuracy": False, "actor.lr": 3e-4,
                        "actor.epochs": 2, "actor.mini_batch_size": 64, "actor.micro_batch_size": 32,
                        "prm.lr": 1e-3, "prm.mini_batch_size": 16, "prm.micro_batch_size": 16,
                        "checkpoint.every": 10, "eval.every": 10})
    Trainer(prepare_demo(config, str(tmp_path)), str(tmp_path)).run()
    lines = _lines(tmp_path / "metrics.jsonl")[1:]

    def mean(key, part):
        return np.mean([line[key] for line in part])

    for key in ("train/outcome_reward", "prm/accuracy"):
        assert mean(key, lines[-3:]) > mean(key, lines[:3]), [round(line[key], 3) for line in lines]


def _run_cli(workdir, *flags, wait=True):
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "primejax.train", f"--config={CONFIG_FILE}", f"--workdir={workdir}",
               "--config.steps=4", "--config.eval.every=2", *flags]
    if not wait:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)


def test_resume_after_sigkill_is_bit_exact(demo_dir, tmp_path):
    """With packed steps, whose stream sizes follow each batch."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for workdir in (straight, killed):  # the demo's files, which the runs would otherwise make alike
        shutil.copytree(os.path.join(demo_dir, "demo"), workdir / "demo")
    # The uninterrupted run goes on beside the killed one: their starts overlap on the cores.
    uninterrupted = _run_cli(straight, "--config.packing.enabled=True", wait=False)
    kill_after = random.Random().randint(1, 3)  # iterations completed before the kill
    process = _run_cli(killed, "--config.packing.enabled=True", wait=False)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) > kill_after:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    lines = len(metrics.read_text().splitlines())
    assert lines <= 5, "killed after the run finished"
    result = _run_cli(killed, "--config.packing.enabled=True")
    assert result.returncode == 0, result.stderr[-3000:]
    _, stderr = uninterrupted.communicate(timeout=900)
    assert uninterrupted.returncode == 0, stderr.decode()[-3000:]
    assert (straight / "metrics.jsonl").read_bytes() == (killed / "metrics.jsonl").read_bytes()
    assert (straight / "export" / "model.safetensors").read_bytes() == \
        (killed / "export" / "model.safetensors").read_bytes()


@pytest.mark.parametrize(("overrides", "key"), [
    ({"rollout.n": 1}, "rollout.n"),
    ({"actor.mini_batch_size": 5}, "actor.mini_batch_size"),
    ({"prm.micro_batch_size": 3}, "prm.micro_batch_size"),
    ({"algo.advantage": "grpo_typo"}, "algo.advantage"),
    ({"prm.loss": "dpo"}, "prm.loss"),
    ({"algo.process_gamma": 0.9, "algo.advantage": "grpo"}, "algo.process_gamma"),
    ({"actor.lr": -1.0}, "actor.lr"),
    ({"packing.buckets": 0}, "packing.buckets"),
    ({"cpu_products": "mkl"}, "cpu_products"),
    ({"update_layers": "loop"}, "update_layers"),
    ({"demo.enabled": False}, "model.path"),
    ({"demo.answer_only_fraction": 1.2}, "demo.answer_only_fraction"),
])
def test_incompatible_options_fail_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"config\.{key}="):
        validate(_config(**overrides))


def test_unknown_keys_and_wrong_types_fail_before_compute(tmp_path):
    config = _config()
    config.actor.unknown_option = 1
    with pytest.raises(ConfigError, match=r"config\.actor\.unknown_option: unknown key"):
        validate(config)
    fields = _config().to_dict()
    fields["rollout"]["n"] = "four"
    config = ml_collections.ConfigDict(fields)
    with pytest.raises(ConfigError, match=r"config\.rollout\.n='four': must be a int"):
        validate(config)
    for flag, message in (("--config.actor.unknown_option=1", "unknown_option"),
                          ("--config.rollout.n=four", "rollout.n")):
        result = _run_cli(tmp_path, flag)
        assert result.returncode != 0 and message in result.stderr
        assert not (tmp_path / "demo").exists()


def test_missing_files_are_named(demo_dir, tmp_path):
    config = prepare_demo(_config(), demo_dir)
    missing = str(tmp_path / "nowhere.jsonl")
    config.data.train_files = missing
    with pytest.raises(DataError, match="nowhere.jsonl: prompt file not found"):
        Trainer(config, str(tmp_path))
    config = prepare_demo(_config(), demo_dir)
    config.reference.path = str(tmp_path / "no_model")
    with pytest.raises(FileNotFoundError, match="no_model"):
        Trainer(config, str(tmp_path))


def test_non_finite_update_stops_and_is_never_saved(demo_dir, tmp_path):
    # The first optimizer step has a warmup learning rate of 0; the second blows the params up.
    trainer = _trainer(demo_dir, tmp_path, **{"actor.lr": 1e38, "actor.warmup_steps": 2, "actor.mini_batch_size": 16,
                                              "steps": 3})
    with pytest.raises(TrainingError, match=r"at step 2: .*last good checkpoint: step 1 in "):
        trainer.run()
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
