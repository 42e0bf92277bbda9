"""Reductions over the last axis in two steps, for XLA on one CPU device.

XLA on CPU reduces an axis longer than 32 through a tree of reduce-windows, which ran at about 3 ns
per element on two cores here. Reducing across slices instead is an elementwise, vectorised pass:

    x [..., N] viewed as [..., k, N / k]   (k ≤ 32 slices of N / k ≥ 16 contiguous elements)
    reduce over k  → [..., N / k] partial results,  then reduce those

An optimization barrier between the steps keeps XLA from merging them back into one reduction.
k is the largest divisor of N that keeps slices of at least 16 elements (one AVX-512 register of
float32): slices of 8 made the first step as slow as the tree. Elsewhere (accelerators, where a
reshape of the last axis can cost a relayout, and meshes, where the axis may be sharded) each is
one reduction.

Measured on two cores of an Intel Xeon (AVX-512):
  * Long rows, the vocabulary: logsumexp of [512, 32000] logits took 51 ms as one reduction and
    8 ms in two. In a PRIME update of the small Qwen2 shape in bfloat16, where XLA's default
    YNNPACK fusions are on, scoring without two steps took 1.37× as long.
  * Short rows, attention's 32-256 keys and 64 head dimensions (`over_short_rows`): with YNNPACK's
    fusions off (the float32 steps' oneDNN options), the logsumexp of [16, 4, 64, 256] scores took
    1.65-1.72 ms as one reduction and 0.74-0.76 ms in two, and a PRIME update 1.02-1.05× less
    time. With them on, YNNPACK reduces these rows itself (0.94-0.96 ms), and two steps made
    bfloat16 scoring 1.12× slower. So short rows take two steps only inside
    `ynnpack_fusions_off()`, which the step functions enter when their XLA options turn the
    fusions off.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import jax

from primejax.parallel.rules import on_one_cpu

_MAX_SLICES = 32  # XLA on CPU reduces an axis of up to 32 elements directly
_MIN_SLICE = 16
_YNNPACK_OFF: contextvars.ContextVar[bool] = contextvars.ContextVar("primejax_ynnpack_off", default=False)


@contextlib.contextmanager
def ynnpack_fusions_off(off: bool = True) -> Iterator[None]:
    """Says, while tracing inside the block, whether the program compiles with YNNPACK's fusions off."""
    token = _YNNPACK_OFF.set(off)
    try:
        yield
    finally:
        _YNNPACK_OFF.reset(token)


def slice_count(size: int) -> int:
    """k, the number of slices an axis of `size` is reduced across first; 1 where it is reduced
    directly (up to 32 elements, or no divisor leaves slices of 16)."""
    if size <= _MAX_SLICES:
        return 1
    return max((k for k in range(1, _MAX_SLICES + 1) if size % k == 0 and size // k >= _MIN_SLICE), default=1)


def over_last_axis(reduce: Callable[..., jax.Array], x: jax.Array) -> jax.Array:
    """reduce(x, axis=-1) for `reduce` jnp.sum or jnp.max, in two steps on one CPU device."""
    size = x.shape[-1]
    slices = slice_count(size)
    if not on_one_cpu() or slices == 1:
        return reduce(x, axis=-1)
    partial_results = reduce(x.reshape(*x.shape[:-1], slices, size // slices), axis=-2)
    return reduce(jax.lax.optimization_barrier(partial_results), axis=-1)


def short_rows_in_two_steps() -> bool:
    """Whether rows of tens to hundreds of elements are reduced in two steps: inside
    `ynnpack_fusions_off()`; YNNPACK, when its fusions are on, reduces them faster in one step."""
    return _YNNPACK_OFF.get()


def over_short_rows(reduce: Callable[..., jax.Array], x: jax.Array) -> jax.Array:
    """`over_last_axis` where `short_rows_in_two_steps()`, one reduction elsewhere."""
    return over_last_axis(reduce, x) if short_rows_in_two_steps() else reduce(x, axis=-1)
