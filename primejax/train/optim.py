"""Optimizers of the actor and the PRM: AdamW after global-norm gradient clipping (SPEC §3.3, §5).

    g ← g · min(1, clip / ‖g‖₂);   AdamW(lr_t, β₁, β₂, ε, weight_decay) on every parameter

as torch's AdamW with `clip_grad_norm_` in both references. lr_t is constant (the paper) or a
cosine decay to 0 over the run, after `warmup_steps` of linear warmup from 0.

The optimizer computes in float32 and keeps its moments in float32 whatever the params' dtype:
bfloat16 params get float32 Adam moments, and their update is rounded to bfloat16 once, when it is
applied. (An update smaller than half a bfloat16 step of a weight is then lost; with the paper's
learning rates keep float32 params, `model.dtype`, and compute in bfloat16, `model.compute_dtype`.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate(section: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """lr_t of a config section (`actor` or `prm`): warmup, then constant or cosine decay."""
    warmup = section.warmup_steps
    if section.lr_schedule == "constant":
        main = optax.constant_schedule(section.lr)
    else:
        main = optax.cosine_decay_schedule(section.lr, max(total_steps - warmup, 1))
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, section.lr, warmup), main], [warmup])


def _float32(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def in_float32(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`inner` run on float32 copies of the gradients and params: its state is float32, and the
    updates come back in each gradient's dtype. The identity for float32 params."""

    def init(params):
        return inner.init(_float32(params))

    def update(grads, state, params=None):
        updates, state = inner.update(_float32(grads), state, _float32(params))
        return jax.tree.map(lambda u, g: u.astype(g.dtype), updates, grads), state

    return optax.GradientTransformation(init, update)


def make_optimizer(section: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW, from a config section's keys, in float32 (module doc).
    `total_steps` counts optimizer steps (iterations × mini-batches per iteration × epochs)."""
    return in_float32(optax.chain(
        optax.clip_by_global_norm(section.grad_clip),
        optax.adamw(learning_rate(section, total_steps), b1=section.b1, b2=section.b2, eps=section.eps,
                    weight_decay=section.weight_decay),
    ))
