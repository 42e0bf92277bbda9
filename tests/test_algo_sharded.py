"""Batch-level reductions on a mesh (8 CPU devices, in a subprocess so the rest of the suite keeps its
single device): a batch sharded over a data axis gives the single-device numbers under automatic
and explicit axis types, so whitening and batch_norm are global; inside shard_map, `axis_name`
makes them global and its absence gives the references' per-rank statistics."""

import textwrap

from tests.multidevice import run_on_cpu_devices

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from primejax import algo

    assert len(jax.devices()) == 8
    rng = np.random.default_rng(0)
    B, R, n = 32, 6, 4
    mask = np.arange(R)[None] < rng.integers(1, R + 1, B)[:, None]
    acc = rng.choice([0.0, 1.0, 0.5], B).astype(np.float32)
    prm, ref, old, new = (rng.normal(-2, 1, (B, R)).astype(np.float32) for _ in range(4))

    def step(prm, ref, old, new, mask, acc):
        scores, q = algo.official_scores(prm, ref, mask)
        rm = algo.normalize_process_rewards(scores)
        out = {"rm": rm, "ce": algo.prm_ce_loss(q, acc, mask), "pairwise": algo.pairwise_accuracy(rm, acc, mask, n)}
        q_bc, acc_bc = algo.group_statistics(q, acc, mask, n)
        out["dpo"] = algo.PRM_LOSSES.get("bon_rm")(q, acc, mask, q_bc, acc_bc)
        for name in algo.ADVANTAGE_ESTIMATORS.names():
            out[name] = algo.ADVANTAGE_ESTIMATORS.get(name)(algo.AdvantageInputs(acc, mask, rm), n)[0]
        for agg in algo.AGGREGATIONS:
            out[agg] = algo.ppo_clip_loss(new, old, out["rloo"], mask, agg=agg)[0]
        keep = algo.accuracy_filter(acc, n) & algo.truncation_filter(algo.response_lengths(mask), n,
                                                                     max_response_length=R)
        out["keep"] = algo.group_rows_mask(keep, n)
        return out

    inputs = (prm, ref, old, new, mask, acc)
    local = jax.jit(step)(*inputs)
    for axis_type in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh((8,), ("data",), axis_types=(axis_type,))
        rows = NamedSharding(mesh, P("data"))
        with jax.set_mesh(mesh):
            sharded = jax.jit(step)(*(jax.device_put(x, rows) for x in inputs))
        assert len(sharded["rloo"].sharding.device_set) == 8, sharded["rloo"].sharding
        for key in local:
            np.testing.assert_allclose(np.asarray(local[key]), np.asarray(sharded[key]), rtol=1e-6, atol=1e-6,
                                       err_msg=f"{axis_type}: {key}")

    # Inside shard_map each device sees its rows only: axis_name makes the statistics global.
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))
    scores = np.where(mask, prm - ref, 0.0).astype(np.float32)

    def per_device(scores, mask, axis_name):
        return (algo.normalize_process_rewards(scores, axis_name=axis_name),
                algo.masked_whiten(scores, mask, axis_name=axis_name))

    for axis_name, expected in (
            ("data", (algo.normalize_process_rewards(scores), algo.masked_whiten(scores, mask))),
            (None, (algo.normalize_process_rewards(scores, shards=8), None))):
        fn = jax.shard_map(lambda s, m: per_device(s, m, axis_name), mesh=mesh, in_specs=(P("data"), P("data")),
                           out_specs=(P("data"), P("data")))
        rows = NamedSharding(mesh, P("data"))
        got = jax.jit(fn)(jax.device_put(scores, rows), jax.device_put(mask, rows))
        np.testing.assert_allclose(np.asarray(got[0]), np.asarray(expected[0]), rtol=1e-6, atol=1e-7)
        if expected[1] is not None:
            np.testing.assert_allclose(np.asarray(got[1]), np.asarray(expected[1]), rtol=1e-5, atol=1e-6)
    print("ok")
""")


def test_batch_reductions_are_global_across_the_mesh():
    run_on_cpu_devices(SCRIPT, 8)
