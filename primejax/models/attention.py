"""Masked softmax attention with grouped kv heads, and its backward pass written out.

With the N query heads grouped per kv head (N = K · G; kv head k's query rows laid out as G · S
rows, one matrix per kv head) and an additive mask M (0 where a query may attend to a key, a
large negative number elsewhere):

    S = q kᵀ / sqrt(D) + M,   P = softmax(S) over keys,   O = P v

The forward pass keeps the row statistics L = logsumexp(S) instead of P, and the backward pass
remakes P = exp(S − L) from q and k; it uses Δ = rowsum(dO ∘ O), which equals rowsum(P ∘ dP), so
that no reduction runs over the [S, T] matrix:

    dv = Pᵀ dO,   dP = dO vᵀ,   dS = P ∘ (dP − Δ),   dq = dS k / sqrt(D),   dk = dSᵀ q / sqrt(D)

Keeping P would hold a float32 [B, N, S, T] array per layer until the backward pass (1 GB for
8 layers of 16 rows × 256 positions × 8 heads, more than all other saved activations together);
remaking it costs one [S, D] × [D, T] product per head.

Autodiff of the same formula reduces P ∘ dP over keys and makes XLA on CPU transpose the [S, T]
matrices between its products; one layer's attention took 1.8× as long forward and 1.9× forward
and backward.

The row reductions (L's maximum and sum over keys, Δ's sum over the head dimension) run in two
steps each where XLA on one CPU device reduces by itself (YNNPACK's fusions off,
`primejax.models.reductions`): one layer's causal attention of 16 rows × 256 positions, forward and
backward with the packing's gathers, took 1.17-1.19× less time than with one reduction each, and a
float32 PRIME update of the small Qwen2 shape 1.02-1.05× less in three A/B runs. Elsewhere L is
`jax.nn.logsumexp`: with YNNPACK's fusions on, bfloat16 scoring was 1.04-1.08× slower with the
same formula written out as one max and one sum.

Every product accumulates in float32 (with bfloat16 operands XLA on CPU multiplies several times
faster into a float32 result than into a bfloat16 one).

A query row whose every key is masked (a pad) gets uniform weights; its output and gradient
are never read by a real token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from primejax.models.reductions import over_last_axis, over_short_rows, short_rows_in_two_steps

MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


def additive_mask(mask: jax.Array) -> jax.Array:
    """float32 M: 0 where `mask` is True, `MASKED` where it is False."""
    return jnp.where(mask, 0.0, MASKED)


def _group(x: jax.Array, kv_heads: int) -> jax.Array:
    """[B, S, N, D] → [B, K, G · S, D], the query heads of each kv head stacked along the rows."""
    b, s, n, d = x.shape
    return x.reshape(b, s, kv_heads, n // kv_heads, d).transpose(0, 2, 3, 1, 4).reshape(b, kv_heads, -1, d)


def _ungroup(x: jax.Array, length: int) -> jax.Array:
    """The inverse of `_group`: [B, K, G · S, D] → [B, S, K · G, D]."""
    b, k, rows, d = x.shape
    return x.reshape(b, k, rows // length, length, d).transpose(0, 3, 1, 2, 4).reshape(b, length, -1, d)


def _forward(q, k, v, bias):
    """(O [B, S, N, D], residuals) of q [B, S, N, D], k, v [B, K, T, D], bias [B, 1, 1, S, T]."""
    length, d = q.shape[1], q.shape[3]
    kv_heads = k.shape[1]
    qg = _group((q.astype(jnp.float32) * d**-0.5).astype(q.dtype), kv_heads)
    scores = _scores(qg, k, bias)
    lse = _logsumexp_rows(scores)
    probs = jnp.exp(scores - lse).astype(v.dtype)
    out = jnp.einsum("bkqt,bktd->bkqd", probs, v, preferred_element_type=jnp.float32).astype(v.dtype)
    return _ungroup(out, length), (qg, k, v, bias, lse, out)


def _logsumexp_rows(scores):
    """L = logsumexp(S) over keys [..., 1]; in two steps per reduction where `short_rows_in_two_steps`."""
    if not short_rows_in_two_steps():
        return jax.nn.logsumexp(scores, axis=-1, keepdims=True)
    peak = over_last_axis(jnp.max, scores)[..., None]
    return peak + jnp.log(over_last_axis(jnp.sum, jnp.exp(scores - peak)))[..., None]


def _scores(qg, k, bias):
    """float32 S = q kᵀ / sqrt(D) + M [B, K, G · S, T] of grouped, pre-scaled queries qg [B, K, G · S, D]."""
    b, kv_heads, rows, _ = qg.shape
    length, keys = bias.shape[-2:]
    scores = jnp.einsum("bkqd,bktd->bkqt", qg, k, preferred_element_type=jnp.float32)
    return (scores.reshape(b, kv_heads, rows // length, length, keys) + bias).reshape(b, kv_heads, rows, keys)


@jax.custom_vjp
def attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array) -> jax.Array:
    """softmax(q kᵀ / sqrt(D) + bias) v per head.

    q: [B, S, N, D]; k, v: [B, K, T, D] with K dividing N (query head n uses kv head n // (N / K));
    bias: float32 [B, 1, 1, S, T], `additive_mask` of where query s may attend to key t. Returns
    [B, S, N, D] in v's dtype; the scores and the softmax are float32.
    """
    return _forward(q, k, v, bias)[0]


def _backward(residuals, d_out):
    qg, k, v, bias, lse, out = residuals
    kv_heads, d = k.shape[1], k.shape[3]
    length = d_out.shape[1]
    d_out = _group(d_out, kv_heads)
    probs = jnp.exp(_scores(qg, k, bias) - lse)
    dv = jnp.einsum("bkqt,bkqd->bktd", probs.astype(v.dtype), d_out, preferred_element_type=jnp.float32)
    dv = dv.astype(v.dtype)
    dp = jnp.einsum("bkqd,bktd->bkqt", d_out, v, preferred_element_type=jnp.float32)
    delta = over_short_rows(jnp.sum, d_out.astype(jnp.float32) * out.astype(jnp.float32))[..., None]
    ds = (probs * (dp - delta)).astype(qg.dtype)
    dq = jnp.einsum("bkqt,bktd->bkqd", ds, k, preferred_element_type=jnp.float32) * d**-0.5
    dk = jnp.einsum("bkqt,bkqd->bktd", ds, qg, preferred_element_type=jnp.float32)
    return _ungroup(dq.astype(qg.dtype), length), dk.astype(k.dtype), dv, None


attention.defvjp(_forward, _backward)


def query_block(length: int) -> int:
    """The query block `causal_attention` uses for sequences of `length`: length / n for the largest n
    of 8, 4, 2 that divides it into blocks of at least 32 positions, else the whole length."""
    for blocks in (8, 4, 2):
        if length % blocks == 0 and length // blocks >= 32:
            return length // blocks
    return length


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array, block: int) -> jax.Array:
    """`attention` of a sequence's positions to the same positions (S = T) under a causal bias, by
    query blocks: the queries of block i, [i · block, (i + 1) · block), see the keys [0, (i + 1) · block)
    only, since every later key is masked for them. With n blocks the score matrices cover
    (n + 1) / 2n of [S, T]. One layer's attention (16 rows × 256 positions, 8 heads / 4 kv heads,
    float32) took 0.65× as long forward and backward with 8 blocks as with one, and as long forward.

    The output of a real query row is that of `attention`. A row with no visible key (padding) gets
    uniform weights over its block's keys instead of all keys; such rows are never read.
    """
    length = q.shape[1]
    if block >= length or length % block:
        return attention(q, k, v, bias)
    blocks = []
    for start in range(0, length, block):
        end = start + block
        blocks.append(attention(q[:, start:end], k[:, :, :end], v[:, :, :end], bias[..., start:end, :end]))
    return jnp.concatenate(blocks, axis=1)
