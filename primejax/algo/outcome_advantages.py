"""Outcome-only advantage estimators of verl core, for comparison with PRIME (SPEC §4.3).

Each uses only the verifier score r^o_i, one number per response, and broadcasts the advantage to
every valid token. They match verl's `compute_rloo_outcome_advantage`,
`compute_grpo_outcome_advantage` and `compute_reinforce_plus_plus_outcome_advantage` (golden
`verl_core_outcome_*`), except that groups are the contiguous rows [g·n, (g+1)·n) instead of a
`uid` column. Like verl, n = 1 is allowed (RLOO returns the raw score, GRPO score/(1 + eps)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from primejax.algo.advantages import AdvantageInputs
from primejax.algo.masking import discounted_returns, expand_groups, group_rows, masked_whiten, place_at_last_token
from primejax.algo.registry import ADVANTAGE_ESTIMATORS


def _per_token(scores: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.where(mask, scores[:, None].astype(jnp.float32), 0.0)


def group_mean_std(values: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Per-row mean and unbiased std of the row's group, [B] each; (0, 1) when n = 1, as in verl."""
    grouped = group_rows(values.astype(jnp.float32), n)
    if n == 1:
        return jnp.zeros_like(values, jnp.float32), jnp.ones_like(values, jnp.float32)
    mean = jnp.mean(grouped, axis=-1)
    std = jnp.sqrt(jnp.sum(jnp.square(grouped - mean[:, None]), axis=-1) / (n - 1))
    return expand_groups(mean, n), expand_groups(std, n)


@ADVANTAGE_ESTIMATORS.register("rloo_outcome")
def rloo_outcome(inputs: AdvantageInputs, n: int) -> tuple[jax.Array, jax.Array]:
    """A_i = r^o_i − mean_{j≠i} r^o_j = (r^o_i − mean_g r^o) · n/(n − 1) on every valid token.

    Not whitened. n = 1 gives r^o_i (verl). `process` is ignored. Returns (A, A), as verl does.
    """
    mean, _ = group_mean_std(inputs.outcome, n)
    scores = inputs.outcome.astype(jnp.float32)
    if n > 1:
        scores = scores * n / (n - 1) - mean * n / (n - 1)
    advantages = _per_token(scores, inputs.response_mask)
    return advantages, advantages


@ADVANTAGE_ESTIMATORS.register("grpo")
def grpo_outcome(inputs: AdvantageInputs, n: int, *, norm_by_std: bool = True,
                 eps: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """GRPO: A_i = (r^o_i − mean_g r^o) / (std_g r^o + eps) on every valid token (unbiased std).

    `norm_by_std=False` is Dr.GRPO (A_i = r^o_i − mean_g r^o), also registered as "drgrpo".
    Not whitened; `process` is ignored. Returns (A, A), as verl does.
    """
    mean, std = group_mean_std(inputs.outcome, n)
    centred = inputs.outcome.astype(jnp.float32) - mean
    scores = centred / (std + eps) if norm_by_std else centred
    advantages = _per_token(scores, inputs.response_mask)
    return advantages, advantages


@ADVANTAGE_ESTIMATORS.register("drgrpo")
def drgrpo_outcome(inputs: AdvantageInputs, n: int) -> tuple[jax.Array, jax.Array]:
    """Dr.GRPO: GRPO without the division by the group's std."""
    return grpo_outcome(inputs, n, norm_by_std=False)


@ADVANTAGE_ESTIMATORS.register("reinforce_pp")
def reinforce_pp_outcome(inputs: AdvantageInputs, n: int, *, gamma: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """REINFORCE++: ret[i, t] = γ^{L_i−1−t} r^o_i (the outcome at the last token, discounted), and
    A = masked_whiten(ret, m) over the whole batch, 0 outside the mask. No groups: n is not read."""
    del n
    mask = inputs.response_mask
    returns = discounted_returns(place_at_last_token(inputs.outcome, mask), gamma)
    return jnp.where(mask, masked_whiten(returns, mask), 0.0), returns
