"""Long reductions that XLA on one CPU device runs slowly, in two steps.

XLA on CPU reduces an axis longer than 32 through a tree of reduce-windows, which ran at about 3 ns
per element on two cores here. Reducing across slices instead is an elementwise, vectorised pass:

    x [..., N] viewed as [..., k, N / k]   (k the largest divisor of N up to 32)
    reduce over k  → [..., N / k] partial results,  then reduce those

An optimization barrier between the steps keeps XLA from merging them back into one reduction.
Measured on two cores: logsumexp of [512, 32000] logits 51 ms → 8 ms. Elsewhere (accelerators, where
a reshape of the last axis can cost a relayout, and meshes, where the axis may be sharded) each is
one reduction.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from primejax.parallel.rules import on_one_cpu


def over_last_axis(reduce: Callable[..., jax.Array], x: jax.Array) -> jax.Array:
    """reduce(x, axis=-1) for `reduce` jnp.sum or jnp.max, in two steps on one CPU device."""
    size = x.shape[-1]
    slices = max(k for k in range(1, 33) if size % k == 0)
    if not on_one_cpu() or slices == 1:
        return reduce(x, axis=-1)
    partial_results = reduce(x.reshape(*x.shape[:-1], slices, size // slices), axis=-2)
    return reduce(jax.lax.optimization_barrier(partial_results), axis=-1)
