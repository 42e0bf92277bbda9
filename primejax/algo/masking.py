"""Masked reductions and the response-layout helpers every PRIME function shares (SPEC §0, §4.2).

Layout: B = G prompts × n samples, rows of a prompt contiguous (`[g·n, (g+1)·n)`); responses
right-padded to R columns; the response mask m is 1 up to and including the first end token (all
ones when truncated), so the last valid token of row i is L_i − 1 with L_i = Σ_t m_{i,t}.

Masked positions never influence a result: values there are replaced (`jnp.where`), never
multiplied by the mask, so NaN or inf in padding stays out of every valid output.

On a mesh, pass the batch sharded over its rows and call the functions under `jit`: batch-level
statistics (whitening, batch_norm, losses) are then taken over the global batch. Under explicit
axis types each device must hold whole groups (the group count divisible by the data-axis size);
under automatic axes any layout works.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_sum(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    """Σ x·m over `axis`, reading x only where m is set."""
    return jnp.sum(jnp.where(mask, x, 0), axis=axis)


def masked_mean(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    """Σ x·m / Σ m over `axis`; 0 where the mask selects nothing (the references give NaN)."""
    count = jnp.sum(mask, axis=axis, dtype=jnp.float32)
    return masked_sum(x, mask, axis) / jnp.maximum(count, 1.0)


def masked_whiten(x: jax.Array, mask: jax.Array, *, eps: float = 1e-8, axis_name: str | None = None) -> jax.Array:
    """Whitens x with the statistics of its valid entries (SPEC §4.2, verl `masked_whiten`).

        μ = Σ x·m / N,   σ² = Σ (x − μ)²·m / (N − 1),   out = (x·m − μ) / sqrt(σ² + eps)

    over every valid entry of the array (N = Σ m; the unbiased variance of the references). Masked
    entries come out as (0 − μ)/σ, as in the references; losses mask them. The scope is the whole
    array: under `jit` a batch sharded over a mesh is reduced globally by XLA. Inside `shard_map`,
    pass `axis_name` to sum the statistics over that mesh axis as well. With N ≤ 1 the references
    raise; here σ² is taken as 0, so the valid entry gets 0.
    """
    x = jnp.where(mask, x, 0).astype(jnp.float32)
    total, count = jnp.sum(x), jnp.sum(mask, dtype=jnp.float32)
    if axis_name is not None:
        total, count = jax.lax.psum(total, axis_name), jax.lax.psum(count, axis_name)
    mean = total / jnp.maximum(count, 1.0)
    squares = masked_sum(jnp.square(x - mean), mask)
    if axis_name is not None:
        squares = jax.lax.psum(squares, axis_name)
    var = squares / jnp.maximum(count - 1.0, 1.0)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def discounted_returns(rewards: jax.Array, gamma: float = 1.0) -> jax.Array:
    """ret[:, t] = Σ_{s=t}^{R−1} γ^{s−t} rewards[:, s] over the last axis (a reverse scan).

    Rewards past a response's end must already be 0 (every caller zeroes them).
    """
    rewards = rewards.astype(jnp.float32)
    if gamma == 1.0:
        return jnp.flip(jnp.cumsum(jnp.flip(rewards, -1), axis=-1), -1)

    def step(carry, r_t):
        carry = r_t + gamma * carry
        return carry, carry

    _, returns = jax.lax.scan(step, jnp.zeros(rewards.shape[:-1], jnp.float32), jnp.moveaxis(rewards, -1, 0),
                              reverse=True)
    return jnp.moveaxis(returns, 0, -1)


def response_lengths(mask: jax.Array) -> jax.Array:
    """L_i = Σ_t m_{i,t} (int32 [B])."""
    return jnp.sum(mask, axis=-1, dtype=jnp.int32)


def last_token_mask(mask: jax.Array) -> jax.Array:
    """One-hot [B, R] at the last valid token L_i − 1 (all zeros for an empty row)."""
    lengths = response_lengths(mask)
    return jnp.arange(mask.shape[-1]) == (lengths - 1)[:, None]


def place_at_last_token(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Token tensor [B, R] holding values[i] at L_i − 1 and 0 elsewhere (the outcome reward layout)."""
    return jnp.where(last_token_mask(mask), values[:, None].astype(jnp.float32), 0.0)


def check_groups(batch: int, n: int) -> int:
    """Validates the grouping of `batch` rows into prompts of `n` samples; returns the group count.

    Leave-one-out needs n ≥ 2 (the references divide by n − 1 = 0) and whole groups (they index past
    the end otherwise). Shapes are static, so this raises at trace time.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n_samples={n!r} must be a positive integer (samples per prompt)")
    if batch % n:
        raise ValueError(f"batch of {batch} rows is not a whole number of groups of n_samples={n}: "
                         f"rows [g*n, (g+1)*n) must hold the n responses of prompt g")
    return batch // n


def check_leave_one_out(batch: int, n: int) -> int:
    """`check_groups`, plus n ≥ 2: a leave-one-out baseline needs another sample of the prompt."""
    groups = check_groups(batch, n)
    if n < 2:
        raise ValueError(f"n_samples={n} leaves no other sample for the leave-one-out baseline; "
                         f"use n_samples >= 2 (the references divide by n - 1 = 0 here)")
    return groups


def group_rows(x: jax.Array, n: int) -> jax.Array:
    """[B, ...] -> [G, n, ...] (rows of a prompt together)."""
    groups = check_groups(x.shape[0], n)
    return x.reshape(groups, n, *x.shape[1:])


def expand_groups(values: jax.Array, n: int) -> jax.Array:
    """[G, ...] -> [G·n, ...]: each group's value on each of its n rows.

    (A broadcast and a reshape rather than `jnp.repeat`, so a batch sharded over a mesh keeps its
    sharding under explicit axis types too.)
    """
    groups = values.shape[0]
    return jnp.broadcast_to(values[:, None], (groups, n, *values.shape[1:])).reshape(groups * n, *values.shape[1:])


def group_broadcast(values: jax.Array, n: int) -> jax.Array:
    """[B] -> [B, n]: row i holds the n values of its own group (SPEC §3.2's Q_bc / acc_bc layout)."""
    return expand_groups(group_rows(values, n), n)
