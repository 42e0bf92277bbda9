"""Implicit process rewards from PRM and reference log-probs (SPEC §2).

The implicit PRM π_φ and the reference π_ref score the same response; their log-ratio per token

    q[i, t] = log π_φ(y_t | y_<t) − log π_ref(y_t | y_<t)                       (SPEC §2.2)

is turned into a token reward tensor s [B, R] ("scores") in one of two conventions, selected by name
from `PROCESS_REWARDS`:

- "official" ([OFF] PRIME-RL/PRIME `DataParallelPRIME.compute_implicit_reward`, the paper's): raw
  log-ratios, no β; every valid token, the end token included, gets its own reward.
- "recipe" ([RCP] verl `recipe/prime`, `DataParallelPRIMERewardModel._forward_micro_batch`): β·q,
  optionally smoothed into λ-returns; the last valid token gets 0.

`normalize_process_rewards` then applies `prime_norm` (SPEC §2.4). Under batch_norm, β cancels, so
both conventions give the same rewards except at the last token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from primejax.algo.masking import discounted_returns, expand_groups, last_token_mask, masked_sum
from primejax.algo.registry import PROCESS_REWARDS

GRANULARITIES = ("token", "whole")
NORMS = ("batch_norm", "none")


def log_ratio(prm_log_probs: jax.Array, ref_log_probs: jax.Array) -> jax.Array:
    """q = log π_φ − log π_ref, float32 [B, R], on every column (SPEC §2.2; [OFF] keeps padding's)."""
    return prm_log_probs.astype(jnp.float32) - ref_log_probs.astype(jnp.float32)


def _check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity={granularity!r} must be one of {GRANULARITIES}")


@PROCESS_REWARDS.register("official")
def official_scores(prm_log_probs: jax.Array, ref_log_probs: jax.Array, mask: jax.Array,
                    acc: jax.Array | None = None, *, granularity: str = "token") -> tuple[jax.Array, jax.Array]:
    """[OFF] token scores (SPEC §2.3), without β.

        token: s[i, t] = q[i, t] for t < L_i, else 0
        whole: s[i, L_i − 1] = Σ_{t<L_i} q[i, t], else 0     (an outcome-style reward on the last token)

    Returns (s, q) with q unmasked, as the reference has it. `acc` is unused (uniform signature).
    """
    del acc
    _check_granularity(granularity)
    q = log_ratio(prm_log_probs, ref_log_probs)
    if granularity == "token":
        return jnp.where(mask, q, 0.0), q
    return jnp.where(last_token_mask(mask), masked_sum(q, mask, axis=-1)[:, None], 0.0), q


@PROCESS_REWARDS.register("recipe")
def recipe_scores(prm_log_probs: jax.Array, ref_log_probs: jax.Array, mask: jax.Array,
                  acc: jax.Array | None = None, *, granularity: str = "token", beta: float = 0.05,
                  lam: float = 0.0, use_gt: bool = False) -> tuple[jax.Array, jax.Array]:
    """[RCP] token scores (SPEC §2.3): β·q, or its λ-return, with the last valid token at 0.

        q'[i, t] = β q[i, t] for t < L_i, else 0
        use_gt (needs acc): q'[i, L_i − 1] = acc_i − Σ_{t<L_i−1} q'[i, t]
        r[i, t]  = Σ_{s≥t} λ^{s−t} q'[i, s]          (r = q' when λ = 0)
        s[i, t]  = r[i, t] for t < L_i − 1, else 0   (the end token gets no process reward)

    Returns (s, q) with q zeroed past each response, as the reference has it. `granularity="whole"`
    crashes in the reference for any response longer than one token (verl issue #1322), so it is
    refused here: use the "official" convention for whole-response rewards.
    """
    _check_granularity(granularity)
    if granularity == "whole":
        raise ValueError("granularity='whole' has no working definition under process_reward='recipe' (the "
                         "reference crashes, verl #1322); use process_reward='official' for whole-response rewards")
    q = jnp.where(mask, log_ratio(prm_log_probs, ref_log_probs), 0.0)
    scaled = beta * q
    last = last_token_mask(mask)
    before_last = jnp.logical_and(mask, jnp.logical_not(last))
    if use_gt:
        if acc is None:
            raise ValueError("use_gt=True (prime_use_gt) needs the outcome scores acc")
        scaled = jnp.where(last, acc[:, None] - masked_sum(scaled, before_last, axis=-1)[:, None], scaled)
    r = discounted_returns(scaled, lam) if lam else scaled
    return jnp.where(before_last, r, 0.0), q


def normalize_process_rewards(scores: jax.Array, *, norm: str = "batch_norm", shards: int = 1,
                              axis_name: str | None = None, eps: float = 1e-6) -> jax.Array:
    """`prime_norm` (SPEC §2.4).

        batch_norm: ŝ = s / (max_{i,t} |C[i, t]| + eps),  C[i, t] = Σ_{u≥t} s[i, u]
        none:       ŝ = s

    so every response's process return has |·| ≤ 1 at every position. Scores must be 0 outside the
    response mask (every convention above makes them so).

    Scope of the max, made explicit: by default the whole [B, R] array passed in. Under `jit` on a
    mesh that is the global batch (XLA reduces across shards). `shards=k` reproduces the references,
    which take the max per data-parallel rank: the rows are split into k contiguous blocks, each
    normalised by its own max. Inside `shard_map`, `axis_name` takes the max over that mesh axis too.
    """
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} must be one of {NORMS}")
    if norm == "none":
        return scores
    batch = scores.shape[0]
    if shards != 1 and axis_name is not None:
        raise ValueError(f"shards={shards} and axis_name={axis_name!r} both set the scope of batch_norm; give one")
    if not isinstance(shards, int) or shards < 1 or batch % shards:
        raise ValueError(f"shards={shards!r} must be a positive integer dividing the batch of {batch} rows")
    row_max = jnp.max(jnp.abs(discounted_returns(scores, 1.0)), axis=-1)
    if shards == 1:
        scale = jnp.max(row_max)
    else:
        scale = expand_groups(jnp.max(row_max.reshape(shards, batch // shards), axis=-1), batch // shards)[:, None]
    if axis_name is not None:
        scale = jax.lax.pmax(scale, axis_name)
    return scores / (scale + eps)


def implicit_values(process_rewards: jax.Array, mask: jax.Array) -> jax.Array:
    """v_φ(y_<t) = Σ_{s<t} r_φ(y_s), float32 [B, R] (paper §5.4; SPEC §2.1).

    With token rewards r_φ(y_s) = β q[s] this is the implicit PRM's value of the prefix before token
    t, so r_φ(y_t) = v_φ(y_<t+1) − v_φ(y_<t); v_φ(y_<0) = 0. 0 outside the mask.
    """
    rewards = jnp.where(mask, process_rewards, 0.0).astype(jnp.float32)
    exclusive = jnp.pad(jnp.cumsum(rewards, axis=-1)[:, :-1], ((0, 0), (1, 0)))
    return jnp.where(mask, exclusive, 0.0)
