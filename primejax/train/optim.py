"""Optimizers of the actor and the PRM: AdamW after global-norm gradient clipping (SPEC §3.3, §5).

    g ← g · min(1, clip / ‖g‖₂);   AdamW(lr_t, β₁, β₂, ε, weight_decay) on every parameter

as torch's AdamW with `clip_grad_norm_` in both references. lr_t is constant (the paper) or a
cosine decay to 0 over the run, after `warmup_steps` of linear warmup from 0.
"""

from __future__ import annotations

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


def make_optimizer(section: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW, from a config section's keys. `total_steps` counts optimizer
    steps (iterations × mini-batches per iteration × epochs)."""
    return optax.chain(
        optax.clip_by_global_norm(section.grad_clip),
        optax.adamw(learning_rate(section, total_steps), b1=section.b1, b2=section.b2, eps=section.eps,
                    weight_decay=section.weight_decay),
    )
