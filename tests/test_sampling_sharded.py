"""The sampler on a batch laid over a mesh's data axis (2 CPU devices, in a subprocess so the
rest of the suite keeps its single device)."""

import textwrap

from tests.multidevice import run_on_cpu_devices

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from primejax.models import ModelConfig, init_params
    from primejax.sampling import SamplingParams, generate
    from primejax.tools.check_logits import random_batch

    assert len(jax.devices()) == 2
    config = ModelConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2,
                         num_kv_heads=1, head_dim=16)
    params = init_params(config, jax.random.key(0))
    tokens, mask = random_batch(config.vocab_size, batch=4, length=12, seed=3)
    sampling = SamplingParams(temperature=1.0, n=2, max_new_tokens=10)
    local = generate(params, tokens, mask, jax.random.key(1), config=config, sampling=sampling)
    # GSPMD (automatic) sharding: shardings are given with the inputs, XLA propagates them.
    batch = NamedSharding(jax.make_mesh((2,), ("data",), axis_types=(AxisType.Auto,)), P("data"))
    sharded = generate(params, jax.device_put(tokens, batch), jax.device_put(mask, batch), jax.random.key(1),
                       config=config, sampling=sampling)
    assert len(sharded.response_tokens.sharding.device_set) == 2, sharded.response_tokens.sharding
    for a, b in zip(jax.tree.leaves(local), jax.tree.leaves(sharded)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    print("ok")
""")


def test_batch_sharded_over_data_axis_samples_the_same():
    run_on_cpu_devices(SCRIPT, 2)
