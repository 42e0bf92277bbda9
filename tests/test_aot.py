"""The ahead-of-time planner: topology names, and a small run compiled for a TPU slice on this CPU host."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import pytest

from primejax.models import ModelConfig, init_params, save_hf_checkpoint
from primejax.models.architectures import architecture
from primejax.tools.aot import Topology, parse_topology

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name, kind, shape, chips", [
    ("v5p-32", "v5p", "2x2x4", 16), ("v5p-8", "v5p", "2x2x1", 4), ("v4-16", "v4", "2x2x2", 8),
    ("v5litepod-16", "v5e", "4x4", 16), ("v5e-4", "v5e", "2x2", 4), ("v6e-8", "v6e", "2x4", 8),
    ("v5p:4x4x4", "v5p", "4x4x4", 64)])
def test_topology_names(name, kind, shape, chips):
    topology = parse_topology(name)
    assert topology == Topology(kind, shape) and topology.chips == chips


@pytest.mark.parametrize("name, message", [("v5p-12", "no v5p slice of 6 chips"), ("v7x-8", "expected e.g."),
                                           ("v5e:2x2x2", "a v5e slice has 2 grid dimensions")])
def test_bad_topologies_are_named(name, message):
    with pytest.raises(ValueError, match=message):
        parse_topology(name)


def test_named_architectures_have_their_published_sizes():
    assert round(architecture("qwen2.5-math-7b").num_params / 1e9, 2) == 7.62
    assert round(architecture("qwen2.5-0.5b").num_params / 1e9, 2) == 0.49
    with pytest.raises(KeyError, match="unknown architecture 'gpt-5'"):
        architecture("gpt-5")


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu is not installed (pip install 'jax[tpu]'; there is no wheel for this platform)")
def test_a_small_run_compiles_for_a_tpu_slice(tmp_path):
    config = ModelConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=16)
    save_hf_checkpoint(tmp_path / "model", init_params(config, jax.random.key(0)), config)
    command = [sys.executable, "-m", "primejax.tools.aot", f"--config={ROOT}/tests/train_config.py",
               "--config.demo.enabled=False", f"--config.model.path={tmp_path}/model", "--topology=v5e-4",
               "--config.mesh.data=1", "--config.mesh.fsdp=2", "--config.mesh.tensor=2", "--config.model.remat=full",
               "--config.rollout.dtype=bfloat16", "--config.rollout.sharding=tp", f"--json={tmp_path}/plan.json"]
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    result = subprocess.run(command, cwd=ROOT, env={**env, "PYTHONPATH": ROOT}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "v5e-4: mesh {'data': 1, 'fsdp': 2, 'tensor': 2} (4 devices, 16 GiB HBM each)" in result.stdout
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert set(plan["programs"]) == {"generate", "score", "advantages", "policy_update", "prm_update"}
    assert set(plan["resident"]) == {"policy params", "policy optimizer", "PRM params", "PRM optimizer",
                                     "reference params", "rollout copy of the policy"}
    # Per device: fsdp 2 × tensor 2 split the float32 weights four ways, the bf16 rollout copy two ways.
    params = config.num_params * 4
    assert abs(plan["resident"]["policy params"] - params / 4) < 0.05 * params
    assert abs(plan["resident"]["rollout copy of the policy"] - params / 2 / 2) < 0.05 * params
    assert plan["resident"]["policy optimizer"] == pytest.approx(2 * plan["resident"]["policy params"], rel=0.01)
    # Generation (its KV cache) and the updates (their backward passes) hold temporaries in HBM; the
    # tiny scoring and advantage programs may run from on-chip memory alone, and report none.
    assert all(plan["programs"][name]["temporaries"] > 0 for name in ("generate", "policy_update", "prm_update"))
    assert all(p["temporaries"] >= 0 for p in plan["programs"].values())
    assert plan["fits"] and plan["flops"]["policy_update"] == 4 * plan["flops"]["score"] / 2  # remat: 4 passes, 2 scored
