"""Dense layers and the output head have their backward passes written out; they must equal autodiff
of the plain products (float32) and stay close to it in bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from primejax.models.transformer import _linear, head_logits

TOKENS, VOCAB = (2, 5), 40


def _random(key, shape, dtype=jnp.float32):
    return jax.random.normal(key, shape, jnp.float32).astype(dtype)


def _grads(fn, x, w, weights):
    return jax.grad(lambda x, w: jnp.sum(fn(x, w).astype(jnp.float32) * weights), argnums=(0, 1))(x, w)


@pytest.mark.parametrize("in_out", [(6, 10), (10, 6)], ids=["widening", "narrowing"])
def test_linear_gradients_equal_autodiff_of_the_product(in_out):
    """Both ways of making the kernel's gradient (x^T dy and (dy^T x)^T) are exact."""
    keys = jax.random.split(jax.random.key(0), 3)
    x, kernel = _random(keys[0], (*TOKENS, in_out[0])), _random(keys[1], in_out)
    weights = _random(keys[2], (*TOKENS, in_out[1]))
    ours = _grads(_linear, x, kernel, weights)
    plain = _grads(lambda x, w: jnp.einsum("...i,io->...o", x, w), x, kernel, weights)
    np.testing.assert_allclose(_linear(x, kernel), x @ kernel, rtol=1e-6, atol=1e-6)
    for a, b in zip(ours, plain):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_head_logits_gradients_equal_autodiff_in_float32_and_stay_close_in_bfloat16():
    keys = jax.random.split(jax.random.key(1), 3)
    h, head = _random(keys[0], (*TOKENS, 8)), _random(keys[1], (VOCAB, 8))
    weights = _random(keys[2], (*TOKENS, VOCAB))
    plain = _grads(lambda h, w: jnp.einsum("...h,vh->...v", h, w), h, head, weights)
    ours = _grads(head_logits, h, head, weights)
    assert head_logits(h, head).dtype == jnp.float32
    for a, b in zip(ours, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    h16, head16 = h.astype(jnp.bfloat16), head.astype(jnp.bfloat16)
    assert head_logits(h16, head16).dtype == jnp.float32
    for a, b in zip(_grads(head_logits, h16, head16, weights), plain):
        assert a.dtype == jnp.bfloat16
        scale = float(jnp.max(jnp.abs(b)))
        np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.03 * scale)
