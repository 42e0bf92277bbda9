"""The policy's loss: PPO clip, loss aggregation, entropy bonus and KL to the reference (SPEC §5).

With ratio ρ = exp(lp_θ − lp_θold) and advantage A per token,

    ℓ_t = max(−A ρ, −A clip(ρ, 1 − ε_low, 1 + ε_high))                    (PPO clip)
    ℓ_t = min(ℓ_t, −A c)   where A < 0                                     (dual clip, c > 1)

then `aggregate_loss` reduces ℓ over the batch. The two references differ in the options:
- [OFF] `compute_policy_loss` (paper, default): ε_low = ε_high = 0.2, no dual clip, no clamp of
  lp_θ − lp_θold. Its micro-batch of one sequence per GPU makes the loss "seq-mean-token-mean".
- [RCP] `compute_policy_loss_vanilla`: dual clip c = 3, log-ratio clamped to [−20, 20], optional
  asymmetric ε_low / ε_high, and `loss_agg_mode` (default "token-mean").
The total actor loss is  pg_loss + kl_coef · kl_loss − entropy_coef · entropy_bonus.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from primejax.algo.masking import masked_mean, masked_sum
from primejax.algo.registry import KL_ESTIMATORS, POLICY_LOSSES

AGGREGATIONS = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def aggregate_loss(token_losses: jax.Array, mask: jax.Array, agg: str = "seq-mean-token-mean", *,
                   num_tokens: jax.Array | float | None = None, num_sequences: jax.Array | float | None = None,
                   loss_scale_factor: float | None = None) -> jax.Array:
    """Reduces a [B, R] token loss to a scalar (verl `agg_loss`):

        token-mean:              Σ_{i,t} ℓ m / N_tokens
        seq-mean-token-sum:      Σ_i (Σ_t ℓ m) / N_seqs
        seq-mean-token-mean:     Σ_i (Σ_t ℓ m / Σ_t m) / N_seqs
        seq-mean-token-sum-norm: Σ_i Σ_t ℓ m / loss_scale_factor   (R when not given)

    N_tokens and N_seqs default to this batch's valid tokens and non-empty sequences. Pass the
    counts of the whole mini-batch as `num_tokens` / `num_sequences` when it is split into
    micro-batches for gradient accumulation, so the summed micro-batch losses equal the mini-batch's.
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"loss aggregation agg={agg!r} must be one of {AGGREGATIONS}")
    token_losses = token_losses.astype(jnp.float32)
    if agg == "token-mean":
        count = jnp.sum(mask, dtype=jnp.float32) if num_tokens is None else num_tokens
        return masked_sum(token_losses, mask) / jnp.maximum(count, 1.0)
    sequence_sums = masked_sum(token_losses, mask, axis=-1)
    if agg == "seq-mean-token-sum-norm":
        return jnp.sum(sequence_sums) / (mask.shape[-1] if loss_scale_factor is None else loss_scale_factor)
    lengths = jnp.sum(mask, axis=-1, dtype=jnp.float32)
    if agg == "seq-mean-token-mean":
        sequence_sums = sequence_sums / jnp.maximum(lengths, 1.0)
    count = jnp.sum(lengths > 0, dtype=jnp.float32) if num_sequences is None else num_sequences
    return jnp.sum(sequence_sums) / jnp.maximum(count, 1.0)


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip_loss(log_probs: jax.Array, old_log_probs: jax.Array, advantages: jax.Array, mask: jax.Array, *,
                  clip_ratio: float = 0.2, clip_ratio_low: float | None = None, clip_ratio_high: float | None = None,
                  dual_clip: float | None = None, log_ratio_clamp: float | None = None,
                  agg: str = "seq-mean-token-mean", loss_scale_factor: float | None = None,
                  num_tokens: jax.Array | float | None = None,
                  num_sequences: jax.Array | float | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO clipped surrogate (module doc), aggregated with `aggregate_loss`. Returns (loss, metrics):

        pg_clipfrac       = mean over valid tokens of [−A clip(ρ) > −A ρ]
        ppo_kl            = mean over valid tokens of lp_θold − lp_θ   (approximate KL, after the clamp)
        pg_clipfrac_lower = mean over valid tokens of [A < 0 and the dual clip bound]  (0 without it)

    clip_ratio_low / clip_ratio_high default to clip_ratio.
    """
    low = clip_ratio if clip_ratio_low is None else clip_ratio_low
    high = clip_ratio if clip_ratio_high is None else clip_ratio_high
    if dual_clip is not None and not dual_clip > 1.0:
        raise ValueError(f"dual_clip={dual_clip!r} must be > 1 (the dual-clip bound -A*c on negative advantages)")
    log_ratio = log_probs.astype(jnp.float32) - old_log_probs.astype(jnp.float32)
    if log_ratio_clamp is not None:
        log_ratio = jnp.clip(log_ratio, -log_ratio_clamp, log_ratio_clamp)
    ratio = jnp.exp(log_ratio)
    advantages = advantages.astype(jnp.float32)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - low, 1.0 + high)
    losses = jnp.maximum(unclipped, clipped)
    metrics = {"pg_clipfrac": masked_mean(clipped > unclipped, mask), "ppo_kl": masked_mean(-log_ratio, mask)}
    if dual_clip is None:
        metrics["pg_clipfrac_lower"] = jnp.zeros((), jnp.float32)
    else:
        bound = -advantages * dual_clip
        metrics["pg_clipfrac_lower"] = masked_mean(jnp.logical_and(losses > bound, advantages < 0), mask)
        losses = jnp.where(advantages < 0, jnp.minimum(losses, bound), losses)
    loss = aggregate_loss(losses, mask, agg, num_tokens=num_tokens, num_sequences=num_sequences,
                          loss_scale_factor=loss_scale_factor)
    return loss, metrics


@KL_ESTIMATORS.register("k1")
def kl_k1(log_probs: jax.Array, ref_log_probs: jax.Array) -> jax.Array:
    """k1 = log π_θ − log π_ref (unbiased, high variance, can be negative)."""
    return log_probs.astype(jnp.float32) - ref_log_probs.astype(jnp.float32)


@KL_ESTIMATORS.register("k2")
def kl_k2(log_probs: jax.Array, ref_log_probs: jax.Array) -> jax.Array:
    """k2 = ½ (log π_θ − log π_ref)²."""
    return 0.5 * jnp.square(kl_k1(log_probs, ref_log_probs))


@KL_ESTIMATORS.register("k3")
def kl_k3(log_probs: jax.Array, ref_log_probs: jax.Array) -> jax.Array:
    """k3 = e^d − d − 1 with d = log π_ref − log π_θ clamped to [−20, 20], the result to [−10, 10]
    (verl's "low_var_kl": unbiased, non-negative, low variance)."""
    d = jnp.clip(-kl_k1(log_probs, ref_log_probs), -20.0, 20.0)
    return jnp.clip(jnp.exp(d) - d - 1.0, -10.0, 10.0)


def kl_loss(log_probs: jax.Array, ref_log_probs: jax.Array, mask: jax.Array, *, estimator: str = "k3",
            agg: str = "seq-mean-token-mean", **counts) -> jax.Array:
    """The KL-to-reference term of the actor loss: aggregate of the estimator over valid tokens.
    `counts`: num_tokens / num_sequences / loss_scale_factor, as for `aggregate_loss`."""
    return aggregate_loss(KL_ESTIMATORS.get(estimator)(log_probs, ref_log_probs), mask, agg, **counts)


def entropy_bonus(entropy: jax.Array, mask: jax.Array, *, agg: str = "seq-mean-token-mean", **counts) -> jax.Array:
    """The aggregated policy entropy; the actor loss subtracts entropy_coef times it."""
    return aggregate_loss(entropy, mask, agg, **counts)


def kl_penalty_rewards(old_log_probs: jax.Array, ref_log_probs: jax.Array, mask: jax.Array, *, coef: float,
                       estimator: str = "k1") -> jax.Array:
    """KL as a reward penalty instead of a loss: −coef · KL_t on valid tokens, 0 elsewhere, [B, R].

    Add it to the dense (process) reward source before the advantage, or sum it into the outcome
    score for outcome-only estimators (verl's `apply_kl_penalty`). The paper uses coef = 0.
    """
    return jnp.where(mask, -coef * KL_ESTIMATORS.get(estimator)(old_log_probs, ref_log_probs), 0.0)
