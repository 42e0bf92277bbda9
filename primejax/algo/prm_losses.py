"""Losses that train the implicit PRM on outcome labels only, and its accuracy metrics (SPEC §3).

Every loss reads the PRM's sequence-level implicit reward

    r_φ(y_i) = β Σ_t q[i, t] m[i, t]                                   (paper Alg. 1, SPEC §3.1)

with q the unnormalised log-ratio, so gradients reach π_φ through q. Losses are selected by name
from `PRM_LOSSES` and share the signature `(q, acc, mask, q_bc=None, acc_bc=None, *, beta)`:

- "ce" (the paper's and the only one in [OFF]): cross-entropy of σ(r_φ(y)) against acc (soft
  labels: fractional code scores are used as they are);
- "dpo", "bon_acc", "bon_rm" ([RCP] `compute_detach_dpo_loss_rm`): a pairwise loss against the
  group's other samples, whose sums q_bc were taken before the update (the [RCP] `update=reverse`
  schedule); build q_bc / acc_bc with `group_statistics`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from primejax.algo.masking import group_broadcast, group_rows, masked_mean, masked_sum
from primejax.algo.registry import PRM_LOSSES

# torch's binary_cross_entropy clamps each log term at -100.
_LOG_FLOOR = -100.0


def sequence_rewards(q: jax.Array, mask: jax.Array, beta: float) -> jax.Array:
    """r_φ(y_i) = β Σ_t q[i, t] m[i, t], float32 [B]."""
    return masked_sum(q.astype(jnp.float32), mask, axis=-1) * beta


def ce_per_sample(q: jax.Array, acc: jax.Array, mask: jax.Array, beta: float) -> jax.Array:
    """ℓ_i = −[acc_i log σ(r_φ(y_i)) + (1 − acc_i) log(1 − σ(r_φ(y_i)))], float32 [B] (SPEC §3.1).

    Each log is floored at −100 as torch's `binary_cross_entropy` does; the logs are computed as
    log σ(±r) directly, which agrees with the reference wherever its float32 σ has not rounded to 1.
    """
    z = sequence_rewards(q, mask, beta)
    acc = acc.astype(jnp.float32)
    log_p = jnp.maximum(jax.nn.log_sigmoid(z), _LOG_FLOOR)
    log_not_p = jnp.maximum(jax.nn.log_sigmoid(-z), _LOG_FLOOR)
    return -(acc * log_p + (1.0 - acc) * log_not_p)


@PRM_LOSSES.register("ce")
def prm_ce_loss(q: jax.Array, acc: jax.Array, mask: jax.Array, q_bc: jax.Array | None = None,
                acc_bc: jax.Array | None = None, *, beta: float = 0.05) -> jax.Array:
    """L_CE = mean_i ℓ_i (`ce_per_sample`); q_bc / acc_bc are not used."""
    del q_bc, acc_bc
    return jnp.mean(ce_per_sample(q, acc, mask, beta))


def group_statistics(q: jax.Array, acc: jax.Array, mask: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """(Q_bc, acc_bc), each [B, n]: row i holds Σ_t q·m and acc of the n samples of its group.

    This is how [RCP] `RayPRIMETrainer.compute_reward` builds them under `update=reverse`, from a
    forward pass of the PRM before its update (SPEC §3.2). Q_bc carries no β.
    """
    return group_broadcast(masked_sum(q.astype(jnp.float32), mask, axis=-1), n), group_broadcast(acc, n)


def dpo_per_sample(q: jax.Array, acc: jax.Array, mask: jax.Array, q_bc: jax.Array, acc_bc: jax.Array,
                   beta: float) -> tuple[jax.Array, jax.Array]:
    """([B] losses, [B] r_φ(y_i)) of the detached pairwise loss (SPEC §3.2).

        other_i = β · mean{Q_bc[i, j] : acc_bc[i, j] < acc_i}   if acc_i > 0
                  β · mean{Q_bc[i, j] : acc_bc[i, j] > acc_i}   otherwise     (0 for an empty set)
        ℓ_i     = −log σ((r_φ(y_i) − other_i) · (+1 if acc_i > 0 else −1))
    """
    current = sequence_rewards(q, mask, beta)
    acc = acc.astype(jnp.float32)
    positive = acc > 0
    chosen = jnp.where(positive[:, None], acc_bc < acc[:, None], acc_bc > acc[:, None])
    other = masked_mean(q_bc, chosen, axis=-1) * beta  # 0 for an empty set
    sign = jnp.where(positive, 1.0, -1.0)
    return -jax.nn.log_sigmoid((current - other) * sign), current


def _require_group_statistics(name: str, q_bc, acc_bc) -> None:
    if q_bc is None or acc_bc is None:
        raise ValueError(f"prm_loss={name!r} needs q_bc and acc_bc from a PRM forward pass before the update "
                         f"(the 'reverse' update schedule; see group_statistics)")


@PRM_LOSSES.register("dpo")
def prm_dpo_loss(q: jax.Array, acc: jax.Array, mask: jax.Array, q_bc: jax.Array | None = None,
                 acc_bc: jax.Array | None = None, *, beta: float = 0.05) -> jax.Array:
    """L_DPO = mean_i ℓ_i (`dpo_per_sample`; [RCP] loss_type 'dpo')."""
    _require_group_statistics("dpo", q_bc, acc_bc)
    return jnp.mean(dpo_per_sample(q, acc, mask, q_bc, acc_bc, beta)[0])


def _best_of_n_sum(losses: jax.Array, at_most: jax.Array) -> jax.Array:
    """Σ_i ℓ_i · n (mean_j at_most[i, j])^{n−1}: each sample weighted by its chance of being the best
    of n draws, with at_most[i, j] = [sample j of i's group ranks no higher than i]."""
    n = at_most.shape[-1]
    return jnp.sum(losses * n * jnp.mean(at_most, axis=-1, dtype=jnp.float32) ** (n - 1))


@PRM_LOSSES.register("bon_acc")
def prm_bon_acc_loss(q: jax.Array, acc: jax.Array, mask: jax.Array, q_bc: jax.Array | None = None,
                     acc_bc: jax.Array | None = None, *, beta: float = 0.05) -> jax.Array:
    """Σ_i ℓ_i w_i with w_i = n (mean_j [acc_bc[i, j] ≤ acc_i])^{n−1}: a best-of-n reweighting by
    accuracy. A sum, not a mean, as in the reference."""
    _require_group_statistics("bon_acc", q_bc, acc_bc)
    losses, _ = dpo_per_sample(q, acc, mask, q_bc, acc_bc, beta)
    return _best_of_n_sum(losses, acc_bc <= acc[:, None])


@PRM_LOSSES.register("bon_rm")
def prm_bon_rm_loss(q: jax.Array, acc: jax.Array, mask: jax.Array, q_bc: jax.Array | None = None,
                    acc_bc: jax.Array | None = None, *, beta: float = 0.05) -> jax.Array:
    """Σ_i ℓ_i w_i with w_i = n (mean_j [β Q_bc[i, j] ≤ r_φ(y_i)])^{n−1}: best-of-n by the PRM's own
    reward. A sum, as in the reference."""
    _require_group_statistics("bon_rm", q_bc, acc_bc)
    losses, current = dpo_per_sample(q, acc, mask, q_bc, acc_bc, beta)
    return _best_of_n_sum(losses, q_bc * beta <= current[:, None])


def pairwise_accuracy(scores: jax.Array, acc: jax.Array, mask: jax.Array, n: int) -> jax.Array:
    """PRM ranking accuracy within groups ([OFF]/[RCP] `compute_dpo_accuracy`, SPEC §3.3).

    With S_i = Σ_t scores·m, over the pairs i < j of a group, Δacc = acc_i − acc_j, ΔS = S_i − S_j:

        acc_g = Σ |Δacc| [(ΔS > 0) = (Δacc > 0)] / Σ |Δacc|     (0.5 when every Δacc is 0)

    and the result is the mean over groups.
    """
    totals = group_rows(masked_sum(scores.astype(jnp.float32), mask, axis=-1), n)
    accs = group_rows(acc.astype(jnp.float32), n)
    d_scores = totals[:, :, None] - totals[:, None, :]
    d_acc = accs[:, :, None] - accs[:, None, :]
    weights = jnp.where(jnp.triu(jnp.ones((n, n), bool), k=1), jnp.abs(d_acc), 0.0)
    agree = (d_scores > 0) == (d_acc > 0)
    total_weight = jnp.sum(weights, axis=(1, 2))
    agreeing = jnp.sum(jnp.where(agree, weights, 0.0), axis=(1, 2))
    return jnp.mean(jnp.where(total_weight == 0, 0.5, agreeing / jnp.where(total_weight == 0, 1.0, total_weight)))


def absolute_accuracy(scores: jax.Array, acc: jax.Array, mask: jax.Array) -> jax.Array:
    """mean_i [sign(S_i) = sign(2 acc_i − 1)] ([RCP] `compute_dpo_abs_accuracy`; sign(0) = 0)."""
    totals = masked_sum(scores.astype(jnp.float32), mask, axis=-1)
    return jnp.mean(jnp.sign(totals) == jnp.sign(2.0 * acc.astype(jnp.float32) - 1.0))
