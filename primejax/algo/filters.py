"""Prompt filters on group scores (SPEC §6): pure functions of the verifier scores and lengths.

A filter returns a keep-mask per group [G]; `group_rows_mask` spreads it to the group's n rows.
Only whole groups are kept. The [OFF] refill loop (generate more prompts until enough groups pass)
lives in the training loop; `oversample_select` is the [RCP] alternative, one pass with a fixed
output size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from primejax.algo.masking import check_groups, expand_groups, group_rows

TRUNCATION_RULES = ("official", "recipe")


def group_accuracy(acc: jax.Array, n: int) -> jax.Array:
    """a_g = mean of the group's n verifier scores, float32 [G]."""
    return jnp.mean(group_rows(acc.astype(jnp.float32), n), axis=-1)


def accuracy_filter(acc: jax.Array, n: int, *, lower: float = 0.2, upper: float = 0.8) -> jax.Array:
    """Keep group g iff lower ≤ a_g ≤ upper, bounds inclusive (both references; with n = 4 and
    [0.2, 0.8] the kept accuracies are 0.25, 0.5, 0.75). bool [G]."""
    if not 0.0 <= lower <= upper <= 1.0:
        raise ValueError(f"accuracy bounds lower={lower!r}, upper={upper!r} must satisfy 0 <= lower <= upper <= 1")
    accuracy = group_accuracy(acc, n)
    return jnp.logical_and(accuracy >= lower, accuracy <= upper)


def truncation_filter(lengths: jax.Array, n: int, *, max_response_length: int, rule: str = "official") -> jax.Array:
    """Drop groups with a response that hit the length limit. bool [G] (True = keep).

        official ([OFF] `filter_truncated`): drop if any L_i ≥ max_response_length
        recipe   ([RCP] `filter_truncate`):  drop if max_i L_i ≥ max_response_length − 1
    """
    if rule not in TRUNCATION_RULES:
        raise ValueError(f"truncation rule={rule!r} must be one of {TRUNCATION_RULES}")
    limit = max_response_length if rule == "official" else max_response_length - 1
    return jnp.max(group_rows(lengths, n), axis=-1) < limit


def group_rows_mask(group_keep: jax.Array, n: int) -> jax.Array:
    """[G] -> [B]: each group's decision on its n rows."""
    return expand_groups(group_keep, n)


def oversample_select(group_keep: jax.Array, n: int, *, oversample_factor: float) -> jax.Array:
    """[RCP] `filter_and_downsample`: row indices [k] of the batch to keep, k = ⌊B / oversample_factor⌋.

    Groups that pass come first, then failing groups fill the rest if too few pass (no refill).
    Within each part the original order is kept (the reference's sort is not stable, so its order
    there is arbitrary). As in the reference, k can end inside a group when the group count is not
    a multiple of the factor.
    """
    groups = group_keep.shape[0]
    batch = groups * n
    check_groups(batch, n)
    if not oversample_factor >= 1:
        raise ValueError(f"oversample_factor={oversample_factor!r} must be >= 1")
    keep_rows = int(batch // oversample_factor)
    order = jnp.argsort(jnp.logical_not(group_keep), stable=True)
    rows = (order[:, None] * n + jnp.arange(n)[None, :]).reshape(-1)
    return rows[:keep_rows].astype(jnp.int32)
