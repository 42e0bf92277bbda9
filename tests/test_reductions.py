"""Reductions over the last axis in two steps on one CPU device: the same sums and maxima."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from primejax.models.reductions import over_last_axis, over_short_rows, slice_count, ynnpack_fusions_off


@pytest.mark.parametrize(("size", "slices"), [(12, 1), (32, 1), (41, 1), (48, 3), (64, 4), (224, 14), (256, 16),
                                              (512, 32), (32000, 32)])
def test_slice_count_keeps_at_most_32_slices_of_at_least_16(size, slices):
    assert slice_count(size) == slices


@pytest.mark.parametrize("size", [41, 224])
def test_sums_and_maxima_equal_one_reduction(size):
    x = jax.random.normal(jax.random.key(0), (3, 5, size)) * 10
    for reduce in (jnp.sum, jnp.max):
        got = jax.jit(lambda x, reduce=reduce: over_last_axis(reduce, x))(x)
        np.testing.assert_allclose(got, reduce(x, axis=-1), rtol=1e-6, atol=1e-5)
    # The barrier keeps XLA from merging the two steps back into one reduction.
    jaxpr = str(jax.make_jaxpr(lambda x: over_last_axis(jnp.sum, x))(x))
    assert ("optimization_barrier" in jaxpr) == (slice_count(size) > 1)


def test_short_rows_take_two_steps_only_where_ynnpack_fusions_are_off():
    x = jax.random.normal(jax.random.key(1), (4, 224))

    def barrier(fn):  # traced afresh each time: a function traced before keeps its first trace
        return "optimization_barrier" in str(jax.make_jaxpr(lambda x: fn(x))(x))

    def short(x):
        return over_short_rows(jnp.max, x)

    assert not barrier(short)
    with ynnpack_fusions_off():
        assert barrier(short)
        with ynnpack_fusions_off(False):
            assert not barrier(short)
        np.testing.assert_array_equal(jax.jit(short)(x), jnp.max(x, axis=-1))
