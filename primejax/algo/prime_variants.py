"""PRIME combined with other RL algorithms (paper App. B.3 and §5.4; SPEC §4.3).

Neither reference codebase implements these; they follow the paper's equations as SPEC §4.3
reconstructs them and are tested against those equations written out by hand on small cases, not
against reference outputs. In all of them r_φ(y_s) is the token process reward passed as
`AdvantageInputs.process` and r_o the verifier score; PRIME changes only the advantage, the policy
loss is unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from primejax.algo.advantages import AdvantageInputs
from primejax.algo.masking import discounted_returns, masked_mean, masked_whiten
from primejax.algo.outcome_advantages import group_mean_std
from primejax.algo.process_rewards import implicit_values
from primejax.algo.registry import ADVANTAGE_ESTIMATORS


def _maybe_whiten(values: jax.Array, mask: jax.Array, whiten: bool) -> jax.Array:
    """values on the mask (0 elsewhere), whitened over the batch's valid tokens when `whiten`."""
    values = jnp.where(mask, values, 0.0)
    return jnp.where(mask, masked_whiten(values, mask), 0.0) if whiten else values


def _process_return(inputs: AdvantageInputs, gamma: float) -> jax.Array:
    if inputs.process is None:
        return jnp.zeros(inputs.response_mask.shape, jnp.float32)
    return discounted_returns(jnp.where(inputs.response_mask, inputs.process, 0.0), gamma)


@ADVANTAGE_ESTIMATORS.register("reinforce_prime")
def reinforce_prime(inputs: AdvantageInputs, n: int, *, gamma: float = 1.0,
                    whiten: bool = True) -> tuple[jax.Array, jax.Array]:
    """REINFORCE with PRIME (paper Eq. 8):

        ret[i, t] = r_o(y^i) + Σ_{s=t}^{L_i−1} γ^{s−t} r_φ(y^i_s)

    and A = masked_whiten(ret) over the batch's valid tokens when `whiten` (else A = ret). Without
    `process` it is plain REINFORCE on the outcome. No baseline, so n is not read.
    """
    del n
    mask = inputs.response_mask
    returns = jnp.where(mask, inputs.outcome.astype(jnp.float32)[:, None] + _process_return(inputs, gamma), 0.0)
    return _maybe_whiten(returns, mask, whiten), returns


@ADVANTAGE_ESTIMATORS.register("grpo_prime")
def grpo_prime(inputs: AdvantageInputs, n: int, *, gamma: float = 1.0, eps: float = 1e-6,
               whiten: bool = False) -> tuple[jax.Array, jax.Array]:
    """GRPO with PRIME (paper Eq. 7), group statistics over the n samples of a prompt:

        A[i, t] = (r_o(y^i) − mean_j r_o(y^j)) / (std_j r_o(y^j) + eps)
                + Σ_{s=t}^{L_i−1} γ^{s−t} (r_φ(y^i_s) − mean_j ρ_j) / (std_j ρ_j + eps)

    with ρ_j = r_φ(y^j)/|y^j| the length-averaged process reward of sample j and std the unbiased
    std (verl's GRPO convention, which also gives mean 0, std 1 for n = 1). Not whitened unless
    `whiten`. Without `process` it equals outcome GRPO ("grpo").
    """
    mask = inputs.response_mask
    mean_o, std_o = group_mean_std(inputs.outcome, n)
    outcome = (inputs.outcome.astype(jnp.float32) - mean_o) / (std_o + eps)
    process = jnp.zeros(mask.shape, jnp.float32)
    if inputs.process is not None:
        rho = masked_mean(inputs.process.astype(jnp.float32), mask, axis=-1)
        mean_p, std_p = group_mean_std(rho, n)
        normalised = (jnp.where(mask, inputs.process, 0.0) - mean_p[:, None]) / (std_p[:, None] + eps)
        process = discounted_returns(jnp.where(mask, normalised, 0.0), gamma)
    returns = jnp.where(mask, outcome[:, None] + process, 0.0)
    return _maybe_whiten(returns, mask, whiten), returns


@ADVANTAGE_ESTIMATORS.register("prime_value")
def prime_as_value(inputs: AdvantageInputs, n: int, *, whiten: bool = True) -> tuple[jax.Array, jax.Array]:
    """PRIME as a value model (paper §5.4 (3)): PPO with γ = λ = 1 whose critic is the implicit PRM,

        A[i, t] = r_o(y^i) − v_φ(y^i_<t),    v_φ(y_<t) = Σ_{s<t} r_φ(y_s)

    so the first token's advantage is r_o and each later token's is lowered by the PRM's value of
    the prefix before it. `process` must hold r_φ in the outcome's units (β·q, not batch-normalised).
    Returns (A, r_o on every valid token); A whitened over the batch when `whiten`. n is not read.
    """
    del n
    if inputs.process is None:
        raise ValueError("advantage='prime_value' needs the process rewards r_phi = beta * q (the implicit value)")
    mask = inputs.response_mask
    outcome = jnp.where(mask, inputs.outcome.astype(jnp.float32)[:, None], 0.0)
    return _maybe_whiten(outcome - implicit_values(inputs.process, mask), mask, whiten), outcome
