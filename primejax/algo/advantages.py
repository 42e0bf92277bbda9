"""PRIME's advantage: leave-one-out per reward source, returns, sum, whitening (SPEC §4.1–4.2).

An advantage estimator takes `AdvantageInputs` and the group size n (static) and returns
`(advantages, returns)`, both float32 [B, R]. Estimators are selected by name from
`ADVANTAGE_ESTIMATORS`; this module holds "rloo", PRIME's own. `outcome_advantages` holds the
outcome-only estimators of verl core and `prime_variants` the paper's other combinations.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from primejax.algo.masking import (
    check_leave_one_out,
    discounted_returns,
    expand_groups,
    group_rows,
    last_token_mask,
    masked_mean,
    masked_whiten,
    place_at_last_token,
)
from primejax.algo.registry import ADVANTAGE_ESTIMATORS


class AdvantageInputs(NamedTuple):
    """What every estimator reads. Rows are grouped by prompt: rows [g·n, (g+1)·n).

    outcome: [B] verifier scores r^o_i ∈ [0, 1] (`acc`).
    response_mask: [B, R] response mask m (1 up to and including the end token).
    process: [B, R] token process rewards (e.g. normalised `rm_scores`), or None for outcome-only.
    """

    outcome: jax.Array
    response_mask: jax.Array
    process: jax.Array | None = None


def leave_one_out(x: jax.Array, mask: jax.Array, n: int) -> jax.Array:
    """The references' leave-one-out operator LOO(x, M) on one reward source (SPEC §4.2).

        μ_j = mean_t {x[j, t] : M[j, t]}             (per row, over its masked entries)
        b_g = Σ_{j in group g} μ_j / (n − 1)          (the row's own μ included)
        x̃[i, t] = x[i, t] · n / (n − 1) − b_g        for M[i, t], else 0

    Equivalently x̃[i, t] = (x[i, t] − mean_{j≠i} μ_j) + (x[i, t] − μ_i)/(n − 1): exactly the
    paper's Eq. 4 for a one-entry outcome source, and Eq. 5 summed over a response. Raises for
    n < 2 or a batch that is not whole groups.
    """
    check_leave_one_out(x.shape[0], n)
    x = jnp.where(mask, x, 0.0).astype(jnp.float32)
    row_means = masked_mean(x, mask, axis=-1)
    baseline = expand_groups(jnp.sum(group_rows(row_means, n), axis=-1) / (n - 1), n)
    return jnp.where(mask, x * (n / (n - 1)) - baseline[:, None], 0.0)


@ADVANTAGE_ESTIMATORS.register("rloo")
def prime_rloo(inputs: AdvantageInputs, n: int, *, process_coef: float = 1.0, outcome_coef: float = 1.0,
               process_gamma: float = 1.0, outcome_gamma: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """PRIME's RLOO advantage ([OFF] `compute_rloo_returns`, [RCP] `compute_rloo_advantage_return`).

        ret = c_p · disc_γp(LOO(process, m)) + c_o · disc_γo(LOO(r^o at L−1, onehot(L−1)))
        A   = masked_whiten(ret, m)            over every valid token of the batch

    with disc_γ(x)[t] = Σ_{s≥t} γ^{s−t} x[s]. A source whose coefficient is 0 (or a missing process
    source) is left out; outcome-only RLOO is this estimator without `process`.

    The two references differ only in the options:
    - [OFF] (paper, default): c_p = c_o = 1 (`rm_coef` and `reward_coef` are not applied to the
      advantage); γ per source (`reward_model_gamma`, `verifier_gamma`), both 1 in the paper.
    - [RCP]: c_p = `reward_dpo_coef`, c_o = `reward_gt_coef` (5 and 5); γ fixed at 1.
    Whitening makes a common scale of c_p and c_o irrelevant; only their ratio matters. Sources
    that share γ are added before discounting: one scan instead of two, rounded in [RCP]'s order.
    """
    mask = inputs.response_mask
    if outcome_coef == 0 and (inputs.process is None or process_coef == 0):
        raise ValueError("rloo has no reward source: outcome_coef is 0 and there is no process reward "
                         f"(process given: {inputs.process is not None}, process_coef={process_coef})")
    sources = []  # (c · LOO(source), γ)
    if inputs.process is not None and process_coef != 0:
        sources.append((process_coef * leave_one_out(inputs.process, mask, n), process_gamma))
    if outcome_coef != 0:
        outcome = leave_one_out(place_at_last_token(inputs.outcome, mask), last_token_mask(mask), n)
        sources.append((outcome_coef * outcome, outcome_gamma))
    if len({gamma for _, gamma in sources}) == 1:
        returns = discounted_returns(sum(rewards for rewards, _ in sources), sources[0][1])
    else:
        returns = sum(discounted_returns(rewards, gamma) for rewards, gamma in sources)
    return masked_whiten(returns, mask), returns
