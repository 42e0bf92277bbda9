"""The trainer on a (data=2, fsdp=2, tensor=2) mesh: one process with 8 CPU devices, and two processes
with 4 each joined by `jax.distributed`, must train alike; params are sharded as the rules say."""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import numpy as np
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = os.path.join(ROOT, "tests", "train_config.py")
# Both runs: the tests' tiny config with these keys.
RUN = {"steps": 2, "eval.every": 2, "checkpoint.every": 2, "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2,
       "reference.sharding": "replicated"}


def _env(devices: int, **extra) -> dict:
    return {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **extra}


def _train(workdir, devices: int, **extra):
    command = [sys.executable, "-m", "primejax.train", f"--config={CONFIG_FILE}", f"--workdir={workdir}",
               *(f"--config.{key}={value}" for key, value in RUN.items())]
    return subprocess.Popen(command, env=_env(devices, **extra), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(process) -> str:
    out, err = process.communicate(timeout=900)
    assert process.returncode == 0, err[-3000:]
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The one-process run, through the Python API, so that it can also check where the trained state lives;
# it runs beside the two processes, which run the command line.
TRAINER_ON_A_MESH = textwrap.dedent("""
    import jax
    from jax.sharding import PartitionSpec as P
    from primejax.train.demo import prepare_demo
    from primejax.train.loop import Trainer
    from tests.train_config import get_config

    c = get_config()
    for key, value in RUN.items():
        section, name = key.rsplit(".", 1) if "." in key else ("", key)
        (c[section] if section else c)[name] = value
    trainer = Trainer(prepare_demo(c, WORKDIR), WORKDIR)
    summary = trainer.run()
    assert 0 <= summary["final/eval/pass@1"] <= 1, summary
    policy, prm = trainer.state["policy"], trainer.state["prm"]
    for tree in (policy.params, prm.params, policy.opt_state[1][0].mu):
        assert tree["layers"]["mlp"]["gate"]["kernel"].sharding.spec == P(None, "fsdp", "tensor")
        assert tree["embed"]["embedding"].sharding.spec == P("tensor", "fsdp")
    assert trainer.reference["layers"]["mlp"]["gate"]["kernel"].sharding.spec == P()
    assert all(leaf.sharding.mesh.devices.size == 8 for leaf in jax.tree.leaves(policy))
    print("ok")
""")


def test_two_processes_train_as_one_process_whose_state_is_sharded_by_the_rules(tmp_path):
    demo, one, two = tmp_path / "demo", tmp_path / "one", tmp_path / "two"
    prepare = [sys.executable, "-c", "import sys; from primejax.train.demo import prepare_demo; "
               "from tests.train_config import get_config; prepare_demo(get_config(), sys.argv[1])", str(demo)]
    subprocess.run(prepare, env=_env(1), cwd=ROOT, check=True, capture_output=True, timeout=600)
    for workdir in (one, two):
        shutil.copytree(demo / "demo", workdir / "demo")

    script = f"RUN, WORKDIR = {RUN!r}, {str(one)!r}\n" + TRAINER_ON_A_MESH
    single = subprocess.Popen([sys.executable, "-c", script], env=_env(8), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    port = _free_port()
    processes = [_train(two, 4, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                        JAX_PROCESS_ID=str(i)) for i in range(2)]
    outputs = [_finish(p) for p in processes]
    assert _finish(single).strip().endswith("ok")
    assert "held-out pass@1" in outputs[0] and "held-out pass@1" not in outputs[1]  # process 0 reports

    lines = [[json.loads(line) for line in open(w / "metrics.jsonl")] for w in (one, two)]
    assert [line["step"] for line in lines[1]] == [0, 1, 2]
    for a, b in zip(*lines):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(b)], rtol=1e-4, atol=1e-5,
                                   err_msg=str(sorted(a)))
    # Adam divides by the root of tiny second moments for rarely seen tokens' rows, which turns float
    # noise in their gradients into differences up to a step (lr = 1e-3); elsewhere the params agree.
    exports = [load_file(w / "export" / "model.safetensors") for w in (one, two)]
    for name in exports[0]:
        difference = np.abs(exports[0][name] - exports[1][name])
        assert difference.max() < 1e-3 and difference.mean() < 1e-6, (name, difference.max(), difference.mean())
    assert sorted(os.listdir(two / "checkpoints")) == ["2"]
