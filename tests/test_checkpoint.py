"""Checkpointer: bit-exact round trips, the keep/best policy, errors, and atomicity under SIGKILL."""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from primejax.train.checkpoint import Checkpointer

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _state():
    """A training-state-like tree: mixed dtypes, nested dicts and tuples, an optax state, key data."""
    keys = jax.random.split(jax.random.key(0), 4)
    params = {
        "embed": jax.random.normal(keys[0], (8, 4), jnp.float32).at[0, 0].set(jnp.nan).at[0, 1].set(-0.0),
        "layers": (
            {"w": jax.random.normal(keys[1], (4, 4), jnp.bfloat16)},
            {"w": jnp.full((4, 4), 1e-3, jnp.bfloat16)},
        ),
    }
    return {
        "policy": params,
        "policy_opt": optax.adamw(1e-3).init(params),
        "prm_opt": optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-4)).init(params),
        "counters": {"step": jnp.int32(7), "tokens": jnp.uint32(2**32 - 1)},
        "rng": jax.random.key_data(keys[2]),
        "ids": jax.random.randint(keys[3], (5,), -(2**31), 2**31 - 1, jnp.int32),
    }


def _assert_bit_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def _as_structs(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def test_round_trip_is_bit_exact(tmp_path):
    state = _state()
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(state)}
    assert {jnp.dtype(t) for t in ("float32", "bfloat16", "int32", "uint32")} <= dtypes
    host = {"data": {"epoch": 1, "position": 12}, "refill": [3, 1, 4], "step": 7, "config": {"lr": 1e-6}}
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(7, state, host)
        for like in (_as_structs(state), state):
            arrays, restored_host = ckpt.restore(arrays_like=like)
            _assert_bit_equal(arrays, state)
            assert restored_host == host
        arrays, _ = ckpt.restore(7, arrays_like=_as_structs(state))
        assert arrays["policy"]["embed"].sharding == state["policy"]["embed"].sharding
        # The optimizer state comes back as optax's NamedTuples and keeps working.
        assert type(arrays["policy_opt"][0]) is type(state["policy_opt"][0])
        optax.adamw(1e-3).update(arrays["policy"], arrays["policy_opt"], arrays["policy"])


def test_async_save_commits_by_wait_and_relative_paths_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = {"x": jnp.arange(6, dtype=jnp.float32)}
    with Checkpointer("ckpt") as ckpt:
        ckpt.save(1, state, {"step": 1}, blocking=False)
        ckpt.wait()
        assert ckpt.all_steps() == [1]
        ckpt.save(2, state, {"step": 2}, blocking=False)
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        assert ckpt.all_steps() == [1, 2]
        _assert_bit_equal(ckpt.restore(2, arrays_like=state)[0], state)


def _run_policy(ckpt, steps_metrics):
    """Saves one tiny checkpoint per (step, metrics) and returns all_steps after each save."""
    seen = []
    for step, metrics in steps_metrics:
        ckpt.save(step, {"x": jnp.float32(step)}, {"step": step}, metrics)
        seen.append(ckpt.all_steps())
    return seen


def test_keeps_the_latest_plus_the_best(tmp_path):
    nan = float("nan")
    history = [
        (1, {"acc": 0.5}),
        (2, {"acc": 0.9}),
        (3, None),
        (4, {"acc": 0.1}),
        (5, {"acc": nan}),
        (6, {"loss": 1.0}),
    ]
    with Checkpointer(tmp_path, keep=2, best_metric="acc", keep_best=1) as ckpt:
        assert _run_policy(ckpt, history) == [[1], [1, 2], [2, 3], [2, 3, 4], [2, 4, 5], [2, 5, 6]]
        assert ckpt.best_step() == 2
    assert not (tmp_path / "trash").exists()
    # Metrics are read back from disk: a reopened run still knows step 2 is the best.
    with Checkpointer(tmp_path, keep=2, best_metric="acc", keep_best=1) as ckpt:
        assert ckpt.best_step() == 2
        assert _run_policy(ckpt, [(7, {"acc": 0.3}), (8, {"acc": 0.95}), (9, {"acc": 0.2})]) == [
            [2, 6, 7],
            [7, 8],
            [8, 9],
        ]
        assert ckpt.best_step() == 8
        assert sorted(os.listdir(tmp_path)) == ["8", "9"]


def test_min_mode_keeps_several_best_and_ties_go_to_the_earlier_step(tmp_path):
    losses = [3.0, 1.0, 2.0, 1.0, 5.0, 0.5, 4.0]
    with Checkpointer(tmp_path, keep=1, best_metric="loss", best_mode="min", keep_best=2) as ckpt:
        seen = _run_policy(ckpt, [(10 * (i + 1), {"loss": v}) for i, v in enumerate(losses)])
        # At step 60, 20 and 40 tie for second best: 20 stays.
        assert seen == [[10], [10, 20], [20, 30], [20, 40], [20, 40, 50], [20, 60], [20, 60, 70]]
        assert ckpt.best_step() == 60


def test_without_a_metric_only_the_latest_are_kept(tmp_path):
    with Checkpointer(tmp_path, keep=2) as ckpt:
        assert _run_policy(ckpt, [(s, {"acc": 1.0 / s}) for s in range(1, 5)])[-1] == [3, 4]
        assert ckpt.best_step() is None
        assert ckpt.latest_step() == 4


def test_errors_name_the_path_and_the_steps(tmp_path):
    like = {"x": jnp.zeros(2)}
    missing = tmp_path / "missing"
    with Checkpointer(missing) as ckpt:
        assert ckpt.latest_step() is None and ckpt.all_steps() == [] and ckpt.best_step() is None
        with pytest.raises(FileNotFoundError, match=str(missing)):
            ckpt.restore(arrays_like=like)
    (tmp_path / "ckpt").mkdir()
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        with pytest.raises(FileNotFoundError, match="no checkpoint in .*ckpt"):
            ckpt.restore(arrays_like=like)
        ckpt.save(3, like, {})
        ckpt.save(5, like, {})
        with pytest.raises(FileNotFoundError, match=r"step 4 in .*ckpt; available steps: \[3, 5\]"):
            ckpt.restore(4, arrays_like=like)
        with pytest.raises(FileExistsError, match="step 5"):
            ckpt.save(5, like, {})
        with pytest.raises(TypeError, match=r"\['rng'\].*key_data"):
            ckpt.save(6, {"rng": jax.random.key(0)}, {})
    for bad in ({"keep": 0}, {"keep_best": -1}, {"best_mode": "best"}):
        with pytest.raises(ValueError):
            Checkpointer(tmp_path / "other", **bad)


# Saves 200 MB checkpoints forever, announcing each save; the parent kills it mid-save.
_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from primejax.train.checkpoint import Checkpointer

    base = np.frombuffer(np.random.default_rng(0).bytes(200_000_000), np.uint32)
    ckpt = Checkpointer(sys.argv[1], keep=2)
    step = 1
    while True:
        arrays = {"x": base ^ np.uint32(step), "step": np.int32(step)}
        print("saving", step, flush=True)
        ckpt.save(step, arrays, {"step": step})
        print("saved", step, flush=True)
        step += 1
    """
)


def _save_and_kill(directory, target, fraction, log):
    """Runs the writer and kills it `fraction` of its first save's duration into the save of step `target`."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory)], stdout=subprocess.PIPE, stderr=log, text=True, env=env
    )
    try:
        times = {}
        for step in range(1, target + 1):
            for event in ("saving", "saved"):
                line = proc.stdout.readline().strip()
                assert line == f"{event} {step}", f"writer said {line!r}; see {log.name}"
                times[line] = time.monotonic()
                if line == f"saving {target}":
                    break
        time.sleep(fraction * (times["saved 1"] - times["saving 1"]))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    return sorted(os.listdir(directory))


def test_sigkill_mid_save_leaves_only_complete_checkpoints(tmp_path):
    base = np.frombuffer(np.random.default_rng(0).bytes(200_000_000), np.uint32)
    like = {"x": jax.ShapeDtypeStruct(base.shape, base.dtype), "step": jax.ShapeDtypeStruct((), jnp.int32)}
    leftovers = []
    # Early and midway through a save, and near its end (commit, then retiring step 1 with keep=2).
    for i, (target, fraction) in enumerate(((2, 0.1), (2, 0.6), (3, 0.97))):
        directory = tmp_path / f"run{i}"
        with open(tmp_path / f"writer{i}.log", "w") as log:
            listing = _save_and_kill(directory, target, fraction, log)
        leftovers += [name for name in listing if ".orbax-checkpoint-tmp" in name]
        with Checkpointer(directory, keep=2) as ckpt:
            steps = ckpt.all_steps()
            # The writer may have gone on past `target` when that save was quick.
            assert steps and steps[-1] >= target - 1, listing
            for step in steps:
                arrays, host = ckpt.restore(step, arrays_like=like)
                assert host == {"step": step}
                assert int(arrays["step"]) == step
                assert np.array_equal(np.asarray(arrays["x"]), base ^ np.uint32(step))
        assert all(".orbax-checkpoint-tmp" not in name and name != "trash" for name in os.listdir(directory))
    # At least one kill landed mid-save, or the test proved nothing.
    assert leftovers
