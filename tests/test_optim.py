"""The optimizer: one step of `make_optimizer` against optax's clip-then-AdamW chain."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from primejax.train.config import base_config
from primejax.train.optim import make_optimizer

TREE = {"kernel": jax.random.normal(jax.random.key(0), (20, 32)), "bias": jax.random.normal(jax.random.key(1), (96,)),
        "scale": jnp.arange(7.0)}


def test_optimizer_step_equals_optax_clip_then_adamw():
    section = base_config().actor
    section.update({"lr": 1e-2, "grad_clip": 1.0, "weight_decay": 0.1})
    ours = make_optimizer(section, 10)
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2, b1=section.b1, b2=section.b2,
                                                                      eps=section.eps, weight_decay=0.1))
    params = jax.tree.map(lambda x: x * 0.1, TREE)
    got, _ = ours.update(TREE, ours.init(params), params)
    expected, _ = theirs.update(TREE, theirs.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), got, expected)
