"""Decoder-only transformer (Qwen2 / Llama) as pure functions over a params pytree.

    h_0 = E[tokens]
    h' = h + Attn(RMSNorm(h))          attention with RoPE, GQA, optional q/k/v/o biases
    h  = h' + W_down(act(W_gate x) * W_up x),  x = RMSNorm(h')
    logits = RMSNorm(h_L) @ W_lm   (W_lm = E^T with tied embeddings)

Masking is by segment ids: token j is visible to token i iff both carry the same non-zero segment
id, j is not later than i, and (sliding-window layers) i - j < window. An attention mask of 0/1 is
a valid segment-id array, so left-padded batches pass their mask: pads (id 0) never attend and
are never attended to. Positions are given by the caller (`positions_from_segment_ids` derives
them from a mask or a packed layout).

The same function runs with a `KVCache`: the new tokens' keys and values are written at cache
slots [end, end + S) and the queries attend over the whole cache. Prefill is a call on the
prompt with an empty cache; decoding is a call with one token per row.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp

from primejax.models.config import ModelConfig
from primejax.models.params import Params
from primejax.models.rope import apply_rope, rope_tables

_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


@partial(jax.tree_util.register_dataclass, data_fields=["k", "v", "segment_ids", "end"], meta_fields=[])
@dataclasses.dataclass
class KVCache:
    """Dense per-layer key/value cache.

    k, v: [layers, batch, max_len, kv_heads, head_dim]; segment_ids: [batch, max_len] of the
    cached tokens (0 for empty or padded slots); end: int32 scalar, slots [0, end) are filled.
    """

    k: jax.Array
    v: jax.Array
    segment_ids: jax.Array
    end: jax.Array

    @property
    def max_len(self) -> int:
        return self.k.shape[2]


def init_cache(config: ModelConfig, batch: int, max_len: int, dtype: str | jnp.dtype | None = None) -> KVCache:
    """An empty cache for `batch` rows of up to `max_len` tokens (prompt and generated)."""
    shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
    dtype = jnp.dtype(dtype or config.compute_dtype)
    return KVCache(
        k=jnp.zeros(shape, dtype),
        v=jnp.zeros(shape, dtype),
        segment_ids=jnp.zeros((batch, max_len), jnp.int32),
        end=jnp.zeros((), jnp.int32),
    )


def cache_axes() -> KVCache:
    """Logical axis names of the cache leaves, for sharding rules."""
    kv = ("layers", "batch", "cache_len", "kv_heads", "head_dim")
    return KVCache(k=kv, v=kv, segment_ids=("batch", "cache_len"), end=())


def positions_from_segment_ids(segment_ids: jax.Array) -> jax.Array:
    """Position of every token within its segment: 0, 1, 2... restarting where the id changes.

    For a left-padded 0/1 mask this is cumsum(mask) - 1 on real tokens (pads get 0-based
    positions of their own run, which no real token ever sees).
    """
    seq = jnp.arange(segment_ids.shape[-1], dtype=jnp.int32)
    previous = jnp.pad(segment_ids[..., :-1], [(0, 0)] * (segment_ids.ndim - 1) + [(1, 0)], constant_values=-1)
    starts = jnp.where(segment_ids != previous, seq, 0)
    return seq - jax.lax.cummax(starts, axis=segment_ids.ndim - 1)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """y = scale * x / sqrt(mean(x^2) + eps), the statistics in float32."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return scale.astype(x.dtype) * y.astype(x.dtype)


_ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu": partial(jax.nn.gelu, approximate=False),
    "gelu_pytorch_tanh": partial(jax.nn.gelu, approximate=True),
    "gelu_new": partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}


def _dense(x: jax.Array, p: dict, spec: str, dtype) -> jax.Array:
    y = jnp.einsum(spec, x, p["kernel"].astype(dtype))
    return y + p["bias"].astype(dtype) if "bias" in p else y


def _attention(q, k, v, q_segments, k_segments, q_slots, k_slots, window):
    """Masked softmax attention with grouped kv heads.

    q: [B, S, N, D]; k, v: [B, T, K, D]; segments [B, S] / [B, T]; slots [S] / [T] (int32);
    window: traced int32, 0 for full causal attention. Returns [B, S, N, D].
    """
    b, s, n, d = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(b, s, kv_heads, n // kv_heads, d)
    scores = jnp.einsum("bskgd,btkd->bkgst", q, k, preferred_element_type=jnp.float32) * d**-0.5
    delta = q_slots[:, None] - k_slots[None, :]
    visible = (delta >= 0) & ((window == 0) | (delta < window))
    same_segment = (q_segments[:, :, None] == k_segments[:, None, :]) & (k_segments[:, None, :] != 0)
    mask = visible[None] & same_segment
    scores = jnp.where(mask[:, None, None], scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgst,btkd->bskgd", probs, v)
    return out.reshape(b, s, n, d)


def hidden_states(
    params: Params,
    tokens: jax.Array,
    positions: jax.Array,
    segment_ids: jax.Array,
    *,
    config: ModelConfig,
    cache: KVCache | None = None,
) -> tuple[jax.Array, KVCache | None]:
    """Final-norm hidden states [B, S, hidden] (compute dtype) and the updated cache.

    tokens, positions, segment_ids: [B, S] integer arrays.
    """
    dtype = jnp.dtype(config.compute_dtype)
    seq = tokens.shape[1]
    h = jnp.take(params["embed"]["embedding"], tokens, axis=0).astype(dtype)
    cos, sin = rope_tables(config, positions)
    segment_ids = segment_ids.astype(jnp.int32)
    act = _ACTIVATIONS[config.hidden_act]

    if cache is None:
        q_slots = jnp.arange(seq, dtype=jnp.int32)
        k_slots, k_segments = q_slots, segment_ids
    else:
        q_slots = cache.end + jnp.arange(seq, dtype=jnp.int32)
        k_slots = jnp.arange(cache.max_len, dtype=jnp.int32)
        k_segments = jax.lax.dynamic_update_slice(cache.segment_ids, segment_ids, (0, cache.end))

    def layer(carry, inputs):
        h, cache_k, cache_v = carry
        p, window, index = inputs
        x = rms_norm(h, p["attn_norm"]["scale"], config.rms_norm_eps)
        q = apply_rope(_dense(x, p["attn"]["q"], "bsh,hnd->bsnd", dtype), cos, sin)
        k = apply_rope(_dense(x, p["attn"]["k"], "bsh,hnd->bsnd", dtype), cos, sin)
        v = _dense(x, p["attn"]["v"], "bsh,hnd->bsnd", dtype)
        if cache_k is not None:
            start = (index, 0, cache.end, 0, 0)
            cache_k = jax.lax.dynamic_update_slice(cache_k, k[None].astype(cache_k.dtype), start)
            cache_v = jax.lax.dynamic_update_slice(cache_v, v[None].astype(cache_v.dtype), start)
            k, v = cache_k[index].astype(dtype), cache_v[index].astype(dtype)
        attn = _attention(q, k, v, segment_ids, k_segments, q_slots, k_slots, window)
        h = h + _dense(attn, p["attn"]["o"], "bsnd,ndh->bsh", dtype)
        x = rms_norm(h, p["mlp_norm"]["scale"], config.rms_norm_eps)
        gate = act(_dense(x, p["mlp"]["gate"], "bsh,hf->bsf", dtype))
        h = h + _dense(gate * _dense(x, p["mlp"]["up"], "bsh,hf->bsf", dtype), p["mlp"]["down"], "bsf,fh->bsh", dtype)
        return (h, cache_k, cache_v), None

    layer_inputs = (
        params["layers"],
        jnp.asarray(config.windows, jnp.int32),
        jnp.arange(config.num_layers, dtype=jnp.int32),
    )
    carry = (h, None, None) if cache is None else (h, cache.k, cache.v)
    (h, cache_k, cache_v), _ = jax.lax.scan(layer, carry, layer_inputs)
    h = rms_norm(h, params["final_norm"]["scale"], config.rms_norm_eps)
    if cache is not None:
        cache = KVCache(k=cache_k, v=cache_v, segment_ids=k_segments, end=cache.end + seq)
    return h, cache


def lm_head_kernel(params: Params, config: ModelConfig) -> jax.Array:
    """The [hidden, vocab] output projection (the embedding's transpose when tied)."""
    if config.tie_word_embeddings:
        return params["embed"]["embedding"].T
    return params["lm_head"]["kernel"]


def logits_from_hidden(params: Params, h: jax.Array, config: ModelConfig) -> jax.Array:
    """Float32 logits [..., vocab] for hidden states [..., hidden]."""
    kernel = lm_head_kernel(params, config).astype(h.dtype)
    return jnp.einsum("...h,hv->...v", h, kernel, preferred_element_type=jnp.float32)


def forward(
    params: Params,
    tokens: jax.Array,
    positions: jax.Array,
    segment_ids: jax.Array,
    *,
    config: ModelConfig,
    cache: KVCache | None = None,
) -> tuple[jax.Array, KVCache | None]:
    """Float32 logits [B, S, vocab] and the updated cache (None without one)."""
    h, cache = hidden_states(params, tokens, positions, segment_ids, config=config, cache=cache)
    return logits_from_hidden(params, h, config), cache
