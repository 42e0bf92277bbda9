"""Meshes and sharding: rules, placement, and one PRIME update on 8 CPU devices against one device."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from primejax.models import ModelConfig, init_params, load_hf_checkpoint, save_hf_checkpoint
from primejax.models.hf_checkpoint import _read_block
from primejax.models.params import get_path, weight_specs
from primejax.parallel import PARAM_RULES, Layout, MeshError, mesh_shape
from primejax.parallel.mesh import wants_distributed
from primejax.parallel.rules import ACTIVATION_RULES, partition_spec
from primejax.train.config import ConfigError, base_config, validate, validate_for_mesh
from primejax.train.optim import make_optimizer
from tests.multidevice import run_on_cpu_devices

MESH = AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"))


@pytest.mark.parametrize("axes, shape, rules, expected", [
    (("layers", "embed", "heads", "head_dim"), (2, 32, 4, 8), "fsdp_tp", P(None, "fsdp", "tensor")),
    (("vocab", "embed"), (96, 32), "fsdp_tp", P("tensor", "fsdp")),
    (("vocab", "embed"), (95, 32), "fsdp_tp", P(None, "fsdp")),  # 95 rows do not split: replicated
    (("layers", "embed", "kv_heads", "head_dim"), (2, 32, 1, 8), "tp", P()),
    (("layers", "mlp", "embed"), (2, 64, 32), "fsdp", P(None, None, "fsdp")),
    (("layers", "mlp", "embed"), (2, 64, 32), "replicated", P()),
    (("batch", None), (16, 5), "fsdp_tp", P(("data", "fsdp"))),
    (("batch", None), (6, 5), "fsdp_tp", P("data")),  # 6 rows: data (2) divides, data × fsdp (4) does not
    (("batch", "length", "act_mlp"), (8, 3, 64), "fsdp_tp", P(("data", "fsdp"), None, "tensor")),
])
def test_logical_axes_map_to_mesh_axes_that_divide(axes, shape, rules, expected):
    assert partition_spec(axes, shape, PARAM_RULES[rules] + ACTIVATION_RULES, MESH) == expected


def test_a_mesh_axis_shards_one_dimension_and_unknown_names_are_errors():
    rules = (("a", "tensor"), ("b", "tensor"))
    assert partition_spec(("a", "b"), (4, 4), rules, MESH) == P("tensor")
    with pytest.raises(KeyError, match="no sharding rule for logical axis 'oops'"):
        partition_spec(("oops",), (4,), rules, MESH)
    with pytest.raises(KeyError, match="unknown parameter sharding 'zero3'"):
        Layout(MESH).with_params("zero3")


def test_mesh_shape_resolves_the_rest_and_names_bad_sizes():
    assert mesh_shape({"data": -1, "fsdp": 2, "tensor": 2}, 8) == (2, 2, 2)
    assert mesh_shape({"data": 1, "fsdp": -1, "tensor": 1}, 8) == (1, 8, 1)
    with pytest.raises(MeshError, match=r"config.mesh: data × fsdp × tensor = 2 × 2 × 1 = 4, but there are 8"):
        mesh_shape({"data": 2, "fsdp": 2, "tensor": 1}, 8)
    with pytest.raises(MeshError, match=r"config.mesh.data=-1: the other axes' product 3 does not divide"):
        mesh_shape({"data": -1, "fsdp": 3, "tensor": 1}, 8)
    with pytest.raises(MeshError, match=r"config.mesh.fsdp=-1: only one mesh axis may be -1"):
        mesh_shape({"data": -1, "fsdp": -1, "tensor": 1}, 8)


@pytest.mark.parametrize("mode, environ, expected", [
    ("auto", {}, False),
    ("auto", {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
    ("auto", {"SLURM_NTASKS": "1"}, False),
    ("auto", {"SLURM_NTASKS": "4"}, True),
    ("on", {}, True),
    ("off", {"OMPI_COMM_WORLD_SIZE": "8"}, False),
])
def test_distributed_start_follows_the_environment(mode, environ, expected):
    assert wants_distributed(mode, environ) is expected


@pytest.mark.parametrize("overrides, key", [
    ({"mesh.tensor": 0}, "mesh.tensor"),
    ({"mesh.data": -1, "mesh.fsdp": -1}, "mesh"),
    ({"mesh.distributed": "yes"}, "mesh.distributed"),
    ({"model.sharding": "zero3"}, "model.sharding"),
    ({"reference.dtype": "float64"}, "reference.dtype"),
    ({"model.remat": "some"}, "model.remat"),
])
def test_mesh_and_memory_keys_are_checked(overrides, key):
    c = base_config()
    c.demo.enabled = True
    for name, value in overrides.items():
        section, field = name.split(".")
        c[section][field] = value
    with pytest.raises(ConfigError, match=rf"config\.{key}[=:]"):
        validate(c)


def test_batches_must_split_over_the_batch_shards():
    c = base_config()
    c.rollout.batch_size, c.actor.micro_batch_size, c.prm.micro_batch_size, c.eval.batch_size = 16, 8, 8, 100
    validate_for_mesh(c, 8)
    c.actor.micro_batch_size = 4
    with pytest.raises(ConfigError, match=r"config\.actor\.micro_batch_size=4: makes batches of 4 rows, which the "
                                          r"mesh's 8 batch shards"):
        validate_for_mesh(c, 8)


def test_optimizer_state_is_float32_for_bfloat16_params():
    optimizer = make_optimizer(base_config().actor, 10)
    params = {"w": jnp.full((3,), 0.5, jnp.bfloat16)}
    state = optimizer.init(params)
    assert {x.dtype for x in jax.tree.leaves(state) if x.ndim} == {jnp.dtype(jnp.float32)}
    updates, _ = optimizer.update({"w": jnp.ones((3,), jnp.bfloat16)}, state, params)
    assert updates["w"].dtype == jnp.bfloat16


def test_block_reads_equal_slices_of_the_whole_tensor(tmp_path):
    config = ModelConfig(model_type="llama", vocab_size=40, hidden_size=16, intermediate_size=24, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=4, qkv_bias=True, o_bias=True, mlp_bias=True)
    params = init_params(config, jax.random.key(1))
    save_hf_checkpoint(tmp_path, params, config)
    from safetensors import safe_open
    with safe_open(str(tmp_path / "model.safetensors"), framework="numpy") as handle:
        for spec in weight_specs(config):
            whole = np.asarray(get_path(params, spec.path))
            whole = whole[1] if spec.per_layer else whole
            name = spec.hf_name.format(i=1)
            for index in ([slice(None)] * len(spec.shape),
                          [slice(1, 3)] + [slice(None)] * (len(spec.shape) - 1),
                          [slice(None)] + [slice(1, 2)] * (len(spec.shape) - 1)):
                index = tuple(index)
                np.testing.assert_array_equal(_read_block(handle, name, spec, index), whole[index], err_msg=name)
    _, loaded = load_hf_checkpoint(tmp_path)
    jax.tree.map(np.testing.assert_array_equal, loaded, params)


SCRIPT = textwrap.dedent("""
    import tempfile
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    from primejax.models import ModelConfig, init_params, load_hf_checkpoint, save_hf_checkpoint
    from primejax.parallel import (Layout, make_mesh, param_shardings, init_opt_state, init_params_sharded,
                                   opt_state_shardings, put_global)
    from primejax.train.checkpoint import Checkpointer
    from primejax.train.config import base_config
    from primejax.train.logprobs import Sequences
    from primejax.train.optim import make_optimizer
    from primejax.train.packing import capacity
    from primejax.train.steps import (AdvantageOptions, ModelState, Placement, PolicyOptions, PrmOptions,
                                      make_steps, minibatch_order)
    from primejax.sampling import SamplingParams, generate

    assert len(jax.devices()) == 8
    CONFIG = ModelConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=8, max_position_embeddings=64)
    PROMPT, RESPONSE, ROWS, N = 8, 12, 32, 4
    rng = np.random.default_rng(0)
    prompt_mask = (np.arange(PROMPT) >= rng.integers(0, 4, ROWS)[:, None]).astype(np.int32)
    response_mask = (np.arange(RESPONSE) < rng.integers(1, RESPONSE + 1, ROWS)[:, None]).astype(np.int32)
    segments = np.concatenate([prompt_mask, response_mask], 1)
    batch = Sequences(rng.integers(1, 96, (ROWS, PROMPT + RESPONSE)).astype(np.int32) * segments, segments,
                      response_mask)
    acc = rng.integers(0, 2, ROWS).astype(np.float32)
    c = base_config()
    c.actor.lr = c.prm.lr = 1e-3
    policy_optimizer, prm_optimizer = make_optimizer(c.actor, 10), make_optimizer(c.prm, 10)
    params = init_params(CONFIG, jax.random.key(0))
    reference = init_params(CONFIG, jax.random.key(1))

    def update(layout, reference_rules="fsdp_tp", capacity=None):
        placement, states = Placement(), {}
        data = batch, acc
        models = {"policy": params, "prm": params, "reference": reference}
        if layout is not None:
            shardings = {"policy": param_shardings(CONFIG, layout),
                         "reference": param_shardings(CONFIG, layout.with_params(reference_rules))}
            shardings["prm"] = shardings["policy"]
            # A jitted copy into the shardings: device_put would hand the policy and the PRM one buffer.
            models = {k: jax.jit(lambda p: p, out_shardings=shardings[k])(v) for k, v in models.items()}
            opt = {k: opt_state_shardings(o, params, shardings[k], layout)
                   for k, o in (("policy", policy_optimizer), ("prm", prm_optimizer))}
            placement = Placement(layout, policy=ModelState(shardings["policy"], opt["policy"]),
                                  prm=ModelState(shardings["prm"], opt["prm"]))
            data = put_global(data, placement.rows())
            states = {k: ModelState(models[k], init_opt_state(o, models[k], shardings[k], layout))
                      for k, o in (("policy", policy_optimizer), ("prm", prm_optimizer))}
        else:
            states = {k: ModelState(jax.tree.map(jnp.copy, models[k]), o.init(models[k]))
                      for k, o in (("policy", policy_optimizer), ("prm", prm_optimizer))}
        steps = make_steps(policy_config=CONFIG, prm_config=CONFIG, reference_config=CONFIG,
                           policy_optimizer=policy_optimizer, prm_optimizer=prm_optimizer,
                           prm_options=PrmOptions(mini_batch=16, micro_batch=8),
                           advantage_options=AdvantageOptions(n=N),
                           policy_options=PolicyOptions(mini_batch=16, micro_batch=8, epochs=2),
                           chunk=5, placement=placement)
        seqs, acc_d = data
        capacity = capacity or dict.fromkeys(("score", "prm", "policy"))
        scored = steps.score({"policy": states["policy"].params, "reference": models["reference"]}, seqs,
                             capacity=capacity["score"])
        prm, prm_lp, prm_metrics = steps.prm_update(states["prm"], seqs, scored["reference_log_probs"], acc_d,
                                                    None, None, capacity=capacity["prm"])
        adv, adv_metrics = steps.advantages(prm_lp, scored["reference_log_probs"], acc_d, seqs.response_mask)
        policy, actor_metrics = steps.policy_update(states["policy"], seqs, scored["policy_log_probs"], None, adv,
                                                    jax.random.key(3), capacity=capacity["policy"])
        out = {"scored": scored, "prm_lp": prm_lp, "adv": adv,
               "metrics": {**prm_metrics, **adv_metrics, **actor_metrics}, "policy": policy, "prm": prm}
        return out, models

    expected, _ = update(None)
    real = response_mask != 0
    # On each mesh the update equals the one on one device; on (4, 1, 2) it runs packed, each micro-batch's
    # rows in one stream per batch shard, and its per-token outputs are compared on the real tokens.
    for shape, reference_rules, packed in (((2, 2, 2), "replicated", False), ((1, 8, 1), "fsdp_tp", False),
                                           ((4, 1, 2), "tp", True), ((1, 2, 4), "fsdp", False)):
        layout = Layout(make_mesh(dict(zip(("data", "fsdp", "tensor"), shape))))
        plans = None
        if packed:
            policy_order = np.asarray(minibatch_order(jax.random.key(3), ROWS, PolicyOptions(mini_batch=16, epochs=2)))
            orders = {"score": (np.arange(ROWS)[None], ROWS), "prm": (np.arange(ROWS)[None], 8),
                      "policy": (policy_order, 8)}
            plans = {name: capacity(segments, response_mask, order, micro_batch=micro, groups=layout.batch_shards,
                                    buckets=40)
                     for name, (order, micro) in orders.items()}
            assert all(p is not None and p.groups == 4 for p in plans.values()), plans
        got, models = update(layout, reference_rules, capacity=plans)
        if shape == (2, 2, 2):
            checkpointed = got["policy"]  # saved and restored onto another mesh below
        close = lambda a, b, name: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5,
                                                              err_msg=f"{shape}: {name}")
        for name in ("scored", "prm_lp", "adv"):
            tokens = (lambda x: np.asarray(x)[real]) if packed else (lambda x: x)
            jax.tree.map(lambda a, b: close(tokens(a), tokens(b), name), got[name], expected[name])
        jax.tree.map(lambda a, b: close(a, b, "metrics"), got["metrics"], expected["metrics"])
        for name in ("policy", "prm"):
            jax.tree.map(lambda a, b: close(a, b, name), got[name].params, expected[name].params)
        # Shardings are the rules', and updates keep them.
        specs = {(2, 2, 2): P(None, "fsdp", "tensor"), (1, 8, 1): P(None, "fsdp"), (4, 1, 2): P(None, None, "tensor"),
                 (1, 2, 4): P(None, "fsdp", "tensor")}
        for tree in (got["policy"].params, got["prm"].params, got["policy"].opt_state[1][0].mu):
            leaf = tree["layers"]["attn"]["q"]["kernel"]
            assert leaf.sharding.spec == specs[shape], (shape, leaf.sharding.spec)
        kv = got["policy"].params["layers"]["attn"]["k"]["kernel"].sharding.spec
        assert kv == (P(None, "fsdp") if shape == (1, 2, 4) else specs[shape]), (shape, kv)  # 2 kv heads, tensor 4
        assert models["reference"]["embed"]["embedding"].sharding.spec == {
            "replicated": P(), "fsdp_tp": P(None, "fsdp"), "tp": P("tensor"), "fsdp": P(None, "fsdp")}[reference_rules]
        batch_axes = tuple(a for a, s in zip(("data", "fsdp"), shape) if s > 1)
        rows_spec = P(batch_axes if len(batch_axes) > 1 else batch_axes[0])
        assert got["adv"].sharding.spec == rows_spec, got["adv"].sharding.spec
        assert got["scored"]["policy_log_probs"].sharding.spec == rows_spec

    # A checkpoint written on one mesh restores onto another.
    with tempfile.TemporaryDirectory() as tmp:
        first = Layout(make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
        second = Layout(make_mesh({"data": 1, "fsdp": 4, "tensor": 2}))
        with Checkpointer(tmp) as checkpointer:
            checkpointer.save(1, {"policy": checkpointed}, {"step": 1})
            template = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                    {"policy": checkpointed.params},
                                    {"policy": param_shardings(CONFIG, second)})
            template = {"policy": ModelState(template["policy"], jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=second.replicated()),
                checkpointed.opt_state))}
            restored, _ = checkpointer.restore(1, arrays_like=template)
        jax.tree.map(np.testing.assert_array_equal, restored["policy"].params, checkpointed.params)
        leaf = restored["policy"].params["layers"]["mlp"]["up"]["kernel"]
        assert leaf.sharding.spec == P(None, "fsdp", "tensor") and leaf.sharding.mesh.shape["fsdp"] == 4

        # Random init and a Hugging Face checkpoint land straight in their shardings.
        initialised = init_params_sharded(CONFIG, jax.random.key(0), first)  # jitted: the same draws, to rounding
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-7), initialised, params)
        assert initialised["layers"]["mlp"]["down"]["kernel"].sharding.spec == P(None, "tensor", "fsdp")
        save_hf_checkpoint(tmp + "/hf", params, CONFIG)
        _, loaded = load_hf_checkpoint(tmp + "/hf", shardings=lambda config: param_shardings(config, first))
        jax.tree.map(np.testing.assert_array_equal, loaded, params)
        assert loaded["lm_head"]["embedding"].sharding.spec == P("tensor", "fsdp")

    # Sampling on the mesh draws the same tokens as on one device.
    prompts = put_global((batch.tokens[::4, :PROMPT], prompt_mask[::4]), first.rows((8, PROMPT)))
    sampling = SamplingParams(temperature=1.0, n=4, max_new_tokens=12, eos_ids=(3,), pad_id=0)
    local = generate(params, batch.tokens[::4, :PROMPT], prompt_mask[::4], jax.random.key(5), config=CONFIG,
                     sampling=sampling)
    sharded = generate(jax.device_put(params, param_shardings(CONFIG, first)), *prompts, jax.random.key(5),
                       config=CONFIG, sampling=sampling, layout=first)
    np.testing.assert_array_equal(np.asarray(local.response_tokens), np.asarray(sharded.response_tokens))
    assert sharded.response_tokens.sharding.spec == P(("data", "fsdp"))
    print("ok")
""")


def test_one_update_on_meshes_equals_one_device():
    run_on_cpu_devices(SCRIPT, 8)
