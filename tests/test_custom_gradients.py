"""Dense layers, the gated MLP, RMSNorm, the output head and the head's token log-probs and entropy
have their backward passes written out; they must equal autodiff of the plain formulas (float32)
and stay close to it in bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from primejax.algo.logprobs import entropy_from_logits, token_log_probs
from primejax.models.linear import ACTIVATIONS, head_logits, head_logits_t, kernel_gradient, linear
from primejax.models.mlp import gated_mlp
from primejax.models.transformer import rms_norm
from primejax.train.logprobs import token_statistics

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
    ours = _grads(linear, x, kernel, weights)
    plain = _grads(lambda x, w: jnp.einsum("...i,io->...o", x, w), x, kernel, weights)
    np.testing.assert_allclose(linear(x, kernel), x @ kernel, rtol=1e-6, atol=1e-6)
    for a, b in zip(ours, plain):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transposed", [False, True], ids=["head", "transposed-head"])
def test_head_logits_gradients_equal_autodiff_in_float32_and_stay_close_in_bfloat16(transposed):
    keys = jax.random.split(jax.random.key(1), 3)
    h, head = _random(keys[0], (*TOKENS, 8)), _random(keys[1], (VOCAB, 8))
    weights = _random(keys[2], (*TOKENS, VOCAB))
    spec, fn = ("...h,hv->...v", head_logits_t) if transposed else ("...h,vh->...v", head_logits)
    head = head.T if transposed else head
    plain = _grads(lambda h, w: jnp.einsum(spec, h, w), h, head, weights)
    ours = _grads(fn, h, head, weights)
    assert fn(h, head).dtype == jnp.float32
    for a, b in zip(ours, plain):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    h16, head16 = h.astype(jnp.bfloat16), head.astype(jnp.bfloat16)
    assert fn(h16, head16).dtype == jnp.float32
    for a, b in zip(_grads(fn, h16, head16, weights), plain):
        assert a.dtype == jnp.bfloat16
        scale = float(jnp.max(jnp.abs(b)))
        np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.03 * scale)


def _plain_mlp(act, x, gate, up, down):
    """The gated MLP as written in the model card: down(act(gate(x)) * up(x)), biases where given."""
    def dense(x, p):
        return x @ p["kernel"] + p.get("bias", 0.0)

    return dense(ACTIVATIONS[act](dense(x, gate)) * dense(x, up), down)


@pytest.mark.parametrize("act,bias", [("silu", False), ("gelu_pytorch_tanh", True)])
def test_gated_mlp_value_and_gradients_equal_autodiff_of_the_formula(act, bias):
    hidden, inner = 6, 10
    keys = iter(jax.random.split(jax.random.key(2), 8))

    def dense(shape):
        p = {"kernel": _random(next(keys), shape)}
        return {**p, "bias": _random(next(keys), shape[1:])} if bias else p

    x, weights = _random(next(keys), (*TOKENS, hidden)), _random(next(keys), (*TOKENS, hidden))
    params = (dense((hidden, inner)), dense((hidden, inner)), dense((inner, hidden)))

    def loss(fn):
        return jax.value_and_grad(lambda x, p: jnp.sum(fn(act, x, *p).astype(jnp.float32) * weights),
                                  argnums=(0, 1))

    (value, ours), (plain_value, plain) = loss(gated_mlp)(x, params), loss(_plain_mlp)(x, params)
    np.testing.assert_allclose(value, plain_value, rtol=1e-5)
    assert jax.tree.structure(ours) == jax.tree.structure(plain)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

    x16, params16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), (x, params))
    _, ours16 = loss(gated_mlp)(x16, params16)
    for a, b in zip(jax.tree.leaves(ours16), jax.tree.leaves(plain)):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.03 * float(jnp.max(jnp.abs(b))))


def test_rms_norm_gradients_equal_autodiff_of_the_formula():
    keys = jax.random.split(jax.random.key(3), 3)
    x, weights = _random(keys[0], (*TOKENS, 8)), _random(keys[1], (*TOKENS, 8))
    scale = 1.0 + 0.1 * _random(keys[2], (8,))

    def plain(x, scale, eps):
        return scale * x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)

    ours = _grads(lambda x, s: rms_norm(x, s, 1e-6), x, scale, weights)
    expected = _grads(lambda x, s: plain(x, s, 1e-6), x, scale, weights)
    np.testing.assert_allclose(rms_norm(x, scale, 1e-6), plain(x, scale, 1e-6), rtol=1e-6, atol=1e-6)
    for a, b in zip(ours, expected):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _statistics_objective(fn, weights):
    """Σ w_lp · lp + Σ w_H · H of fn(h, head) = (lp, H or None): every cotangent is non-trivial."""
    def objective(h, head):
        log_probs, entropy = fn(h, head)
        total = jnp.sum(weights[0] * log_probs)
        return total if entropy is None else total + jnp.sum(weights[1] * entropy)

    return objective


@pytest.mark.parametrize("with_entropy", [True, False], ids=["entropy", "log-probs"])
@pytest.mark.parametrize("keep_logits", [True, False], ids=["kept", "remade"])
def test_token_statistics_gradients_equal_autodiff_of_log_softmax(with_entropy, keep_logits):
    keys = jax.random.split(jax.random.key(4), 5)
    h, head = _random(keys[0], (*TOKENS, 8)), _random(keys[1], (8, VOCAB))
    targets = jax.random.randint(keys[2], TOKENS, 0, VOCAB)
    weights = (_random(keys[3], TOKENS), _random(keys[4], TOKENS))

    def plain(h, head):
        logits = jnp.einsum("...h,hv->...v", h, head)
        return token_log_probs(logits, targets), entropy_from_logits(logits) if with_entropy else None

    def ours(h, head):
        return token_statistics(h, head, targets, with_entropy, keep_logits)

    for a, b in zip(jax.tree.leaves(ours(h, head)), jax.tree.leaves(plain(h, head))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    expected = jax.grad(_statistics_objective(plain, weights), argnums=(0, 1))(h, head)
    got = jax.jit(jax.grad(_statistics_objective(ours, weights), argnums=(0, 1)))(h, head)
    for a, b in zip(got, expected):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    h16, head16 = h.astype(jnp.bfloat16), head.astype(jnp.bfloat16)
    got16 = jax.jit(jax.grad(_statistics_objective(ours, weights), argnums=(0, 1)))(h16, head16)
    for a, b in zip(got16, expected):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.03 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize(("vocab", "sliced"), [(40, True), (41, False)])
def test_token_statistics_reduce_the_vocabulary_in_slices_when_it_divides(vocab, sliced):
    keys = jax.random.split(jax.random.key(5), 3)
    h, head = _random(keys[0], (*TOKENS, 8)), _random(keys[1], (8, vocab)) * 8
    targets = jax.random.randint(keys[2], TOKENS, 0, vocab)
    logits = np.asarray(jnp.einsum("...h,hv->...v", h, head), np.float64)  # spread: |l| up to ~60
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    got = token_statistics(h, head, targets, True, False)
    np.testing.assert_allclose(got[0], np.take_along_axis(log_p, np.asarray(targets)[..., None], -1)[..., 0],
                               rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(got[1], -(np.exp(log_p) * log_p).sum(-1), rtol=1e-6, atol=1e-6)
    # On one CPU device the sums and the max run across slices first, kept apart by a barrier.
    jaxpr = str(jax.make_jaxpr(lambda h, head: token_statistics(h, head, targets, True, False))(h, head))
    assert ("optimization_barrier" in jaxpr) == sliced


def test_kernel_gradient_over_packed_streams_contracts_one_token_axis():
    """x [streams, slots, in] made by a fusion: the kernel's gradient is one product over the tokens
    with x as it was made, not a product over two axes that XLA on CPU feeds a transposed copy of x."""
    keys = jax.random.split(jax.random.key(0), 3)
    h, dy = _random(keys[0], (2, 24, 16)), _random(keys[1], (2, 24, 40))

    def fn(h, dy):
        return kernel_gradient(jnp.tanh(h), dy, jnp.float32)

    text = jax.jit(fn, compiler_options={"xla_cpu_experimental_ynn_fusion_type": ""}).lower(h, dy).compile().as_text()
    assert "transpose(" not in text
    np.testing.assert_allclose(fn(h, dy), jnp.einsum("gti,gto->io", jnp.tanh(h), dy), rtol=1e-5, atol=1e-5)
