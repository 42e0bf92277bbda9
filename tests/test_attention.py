"""The attention with its backward pass written out, against autodiff of the plain formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from primejax.models.attention import MASKED, additive_mask, attention, causal_attention, query_block
from primejax.models.reductions import ynnpack_fusions_off

B, S, N, K, D = 3, 12, 4, 2, 8


def reference(q, k, v, mask):
    """softmax(q kᵀ / sqrt(D), masked) v by autodiff-able jnp, heads grouped as N = K · G."""
    b, s, n, d = q.shape
    q = q.reshape(b, s, k.shape[1], n // k.shape[1], d)
    scores = jnp.einsum("bskgd,bktd->bkgst", q, k, preferred_element_type=jnp.float32) * d**-0.5
    probs = jax.nn.softmax(jnp.where(mask, scores, MASKED), axis=-1)
    return jnp.einsum("bkgst,bktd->bskgd", probs.astype(v.dtype), v).reshape(b, s, n, d)


@pytest.fixture(scope="module")
def inputs():
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (B, S, N, D))
    k = jax.random.normal(keys[1], (B, K, S, D))
    v = jax.random.normal(keys[2], (B, K, S, D))
    # Row 0 whole, row 1 left-padded by 5, row 2 padded on both sides; causal with a window of 6.
    real = np.ones((B, S), bool)
    real[1, :5] = False
    real[2, :2] = real[2, -3:] = False
    pos = np.arange(S)
    causal = (pos[:, None] >= pos[None, :]) & (pos[:, None] - pos[None, :] < 6)
    mask = jnp.asarray((causal[None] & real[:, None, :] & real[:, :, None])[:, None, None])
    weights = jax.random.normal(keys[3], (B, S, N, D)) * real[:, :, None, None]
    return (q, k, v), mask, weights


def test_output_and_gradients_match_autodiff_of_the_formula(inputs):
    qkv, mask, weights = inputs

    def loss(fn, qkv):
        # Reads the real query rows only, as every use in the model does.
        return jnp.sum(jnp.sin(fn(*qkv)) * weights)

    ours = jax.jit(jax.value_and_grad(lambda x: loss(lambda *a: attention(*a, additive_mask(mask)), x)))
    theirs = jax.jit(jax.value_and_grad(lambda x: loss(lambda *a: reference(*a, mask), x)))
    (value, grads), (ref_value, ref_grads) = ours(qkv), theirs(qkv)
    real_rows = np.asarray(mask[:, 0, 0].any(-1))
    np.testing.assert_allclose(np.asarray(attention(*qkv, additive_mask(mask)))[real_rows],
                               np.asarray(reference(*qkv, mask))[real_rows], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for name, ours_grad, ref_grad in zip("qkv", grads, ref_grads):
        assert np.abs(np.asarray(ref_grad)).max() > 0.1, name
        np.testing.assert_allclose(ours_grad, ref_grad, rtol=1e-4, atol=1e-5, err_msg=f"d{name}")


def test_long_rows_reduce_in_slices_and_still_match_autodiff():
    """96 keys and a head dimension of 64: with YNNPACK's fusions off the softmax statistics and Δ
    reduce across slices first on one CPU device, with the same values and gradients."""
    keys = jax.random.split(jax.random.key(1), 4)
    b, s, d = 2, 96, 64
    q = jax.random.normal(keys[0], (b, s, 2, d))
    k, v = (jax.random.normal(key, (b, 1, s, d)) for key in keys[1:3])
    weights = jax.random.normal(keys[3], (b, s, 2, d))
    pos = np.arange(s)
    mask = jnp.asarray(np.broadcast_to(pos[:, None] >= pos[None, :], (b, 1, 1, s, s)))

    def loss(fn, qkv):
        return jnp.sum(jnp.sin(fn(*qkv)) * weights)

    ours = jax.value_and_grad(lambda x: loss(lambda *a: causal_attention(*a, additive_mask(mask), query_block(s)), x))
    theirs = jax.value_and_grad(lambda x: loss(lambda *a: reference(*a, mask), x))
    with ynnpack_fusions_off():
        assert "optimization_barrier" in str(jax.make_jaxpr(ours)((q, k, v)))
        value, grads = jax.jit(ours)((q, k, v))
    ref_value, ref_grads = jax.jit(theirs)((q, k, v))
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for name, ours_grad, ref_grad in zip("qkv", grads, ref_grads):
        np.testing.assert_allclose(ours_grad, ref_grad, rtol=1e-4, atol=1e-5, err_msg=f"d{name}")


def test_bfloat16_stays_close_to_float32(inputs):
    qkv, mask, weights = inputs
    bias = additive_mask(mask)

    def grads(dtype):
        return jax.grad(lambda x: jnp.sum(attention(*x, bias).astype(jnp.float32) * weights))(
            tuple(a.astype(dtype) for a in qkv))

    for name, low, high in zip("qkv", grads(jnp.bfloat16), grads(jnp.float32)):
        assert low.dtype == jnp.bfloat16, name
        np.testing.assert_allclose(np.asarray(low, np.float32), high, rtol=0.1, atol=0.1, err_msg=f"d{name}")


@pytest.mark.parametrize("block", [3, 4, 6])
def test_causal_query_blocks_give_the_real_rows_and_gradients_of_the_whole(inputs, block):
    """Query blocks that see only the keys up to their own end: the fixture's mask is causal (with a
    window), so the real rows' outputs and every gradient the real rows receive are unchanged."""
    qkv, mask, weights = inputs
    bias = additive_mask(mask)

    def loss(fn):
        return jax.value_and_grad(lambda x: jnp.sum(jnp.sin(fn(*x)) * weights))(qkv)

    (value, grads), (whole_value, whole_grads) = jax.jit(
        lambda: (loss(lambda *a: causal_attention(*a, bias, block)), loss(lambda *a: attention(*a, bias))))()
    real_rows = np.asarray(mask[:, 0, 0].any(-1))
    np.testing.assert_allclose(np.asarray(causal_attention(*qkv, bias, block))[real_rows],
                               np.asarray(attention(*qkv, bias))[real_rows], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(value, whole_value, rtol=1e-6)
    for name, ours, whole in zip("qkv", grads, whole_grads):
        np.testing.assert_allclose(ours, whole, rtol=1e-5, atol=1e-6, err_msg=f"d{name}")


def test_query_block_splits_into_at_most_eight_blocks_of_at_least_32():
    assert [query_block(n) for n in (16, 63, 64, 96, 128, 256, 3584)] == [16, 63, 32, 48, 32, 32, 448]
