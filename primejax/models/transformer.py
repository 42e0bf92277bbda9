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

With a `Packing` (`primejax.models.packing`) the token-wise work of every layer (norms, projections,
rope, MLP) runs on the batch's real tokens only, packed into dense streams; attention gathers its
queries, keys and values back into the rows and its outputs back into the streams.

The same function runs with a `KVCache`: the new tokens' keys and values are written at cache
slots [end, end + S) and the queries attend over the whole cache. Prefill is a call on the
prompt with an empty cache; decoding is a call with one token per row.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp

from primejax.models.attention import MASKED, additive_mask, attention, causal_attention, query_block
from primejax.models.config import ModelConfig
from primejax.models.linear import head_logits, linear
from primejax.models.mlp import gated_mlp
from primejax.models.packing import Packing, to_rows, to_stream
from primejax.models.params import Params
from primejax.models.rope import apply_rope, rope_tables
from primejax.parallel.rules import constrain

_REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
# Logical axes of activations (see primejax.parallel.rules), constrained when a layout is active.
_HIDDEN = ("batch", "length", "act_embed")
_HEADS = ("batch", "length", "act_heads", "head_dim")
_KV = ("batch", "act_kv_heads", "cache_len", "head_dim")


@partial(jax.tree_util.register_dataclass, data_fields=["k", "v", "segment_ids", "end"], meta_fields=[])
@dataclasses.dataclass
class KVCache:
    """Dense key/value cache, one buffer per layer.

    k, v: tuples (one per layer) of [batch, kv_heads, max_len, head_dim]; segment_ids:
    [batch, max_len] of the cached tokens (0 for empty or padded slots); end: int32 scalar,
    slots [0, end) are filled. Separate per-layer buffers are updated in place inside loops,
    where slicing one stacked buffer would copy it.
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    segment_ids: jax.Array
    end: jax.Array

    @property
    def max_len(self) -> int:
        return self.segment_ids.shape[1]


def init_cache(config: ModelConfig, batch: int, max_len: int, dtype: str | jnp.dtype | None = None) -> KVCache:
    """An empty cache for `batch` rows of up to `max_len` tokens (prompt and generated)."""
    shape = (batch, config.num_kv_heads, max_len, config.head_dim)
    dtype = jnp.dtype(dtype or config.compute_dtype)
    return KVCache(
        k=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
        v=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
        segment_ids=jnp.zeros((batch, max_len), jnp.int32),
        end=jnp.zeros((), jnp.int32),
    )


def cache_axes(config: ModelConfig) -> KVCache:
    """Logical axis names of the cache leaves, for sharding rules."""
    kv = ("batch", "kv_heads", "cache_len", "head_dim")
    return KVCache(k=(kv,) * config.num_layers, v=(kv,) * config.num_layers, segment_ids=("batch", "cache_len"),
                   end=())


def positions_from_segment_ids(segment_ids: jax.Array) -> jax.Array:
    """Position of every token within its segment: 0, 1, 2... restarting where the id changes.

    For a left-padded 0/1 mask this is cumsum(mask) - 1 on real tokens (pads get 0-based
    positions of their own run, which no real token ever sees).
    """
    seq = jnp.arange(segment_ids.shape[-1], dtype=jnp.int32)
    previous = jnp.pad(segment_ids[..., :-1], [(0, 0)] * (segment_ids.ndim - 1) + [(1, 0)], constant_values=-1)
    starts = jnp.where(segment_ids != previous, seq, 0)
    return seq - jax.lax.cummax(starts, axis=segment_ids.ndim - 1)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """y = scale * x / sqrt(mean(x^2) + eps), the statistics in float32.

    The backward pass is written out and keeps x and the per-row rsqrt r only (autodiff also kept
    the normalised x̂ = x r, one more [tokens, hidden] array per norm):

        d scale = Σ_tokens dy ∘ x̂,   dx = r (g − x̂ mean(g ∘ x̂)),   g = dy ∘ scale
    """
    return _rms_norm_fwd(x, scale, eps)[0]


def _rms_norm_fwd(x, scale, eps):
    x32 = x.astype(jnp.float32)
    r = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return scale.astype(x.dtype) * (x32 * r).astype(x.dtype), (x, scale, r)


def _rms_norm_bwd(eps, residuals, dy):
    x, scale, r = residuals
    normed = x.astype(jnp.float32) * r
    dy = dy.astype(jnp.float32)
    d_scale = jnp.sum(dy * normed, axis=tuple(range(dy.ndim - 1))).astype(scale.dtype)
    g = dy * scale.astype(jnp.float32)
    dx = r * (g - normed * jnp.mean(g * normed, axis=-1, keepdims=True))
    return dx.astype(x.dtype), d_scale


rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


def _dense(x: jax.Array, p: dict, dtype) -> jax.Array:
    """x [..., in] times p["kernel"] [in, *out], plus p["bias"] [*out] if present: [..., *out]."""
    kernel = p["kernel"].astype(dtype)
    y = linear(x, kernel.reshape(x.shape[-1], -1)).reshape(*x.shape[:-1], *kernel.shape[1:])
    return y + p["bias"].astype(dtype) if "bias" in p else y


def _attend(q, k, v, q_segments, k_segments, q_slots, k_slots, window, same_positions):
    """Masked softmax attention with grouped kv heads.

    q: [B, S, N, D]; k, v: [B, K, T, D]; segments [B, S] / [B, T]; slots [S] / [T] (int32);
    window: traced int32, 0 for full causal attention; same_positions: whether the keys are the
    queries' own positions (no cache). Returns [B, S, N, D].

    A single query (decoding) is a multiply-and-reduce over the cache, which XLA fuses into one
    pass over memory; longer queries go through `attention`, batched matrix products with the
    backward pass written out, by causal query blocks when the keys are the queries' positions.
    """
    b, s, n, d = q.shape
    kv_heads = k.shape[1]
    delta = q_slots[:, None] - k_slots[None, :]
    visible = (delta >= 0) & ((window == 0) | (delta < window))
    same_segment = (q_segments[:, :, None] == k_segments[:, None, :]) & (k_segments[:, None, :] != 0)
    mask = (visible[None] & same_segment)[:, None, None]  # [B, 1, 1, S, T]
    if s > 1 and same_positions:
        return causal_attention(q, k, v, additive_mask(mask), query_block(s))
    if s > 1:
        return attention(q, k, v, additive_mask(mask))
    q = q.reshape(b, kv_heads, n // kv_heads, d)
    scores = jnp.sum(q[:, :, :, None, :] * k[:, :, None], axis=-1, dtype=jnp.float32)[:, :, :, None]
    scores = jnp.where(mask, scores * d**-0.5, MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.sum(probs[:, :, :, 0, :, None] * v[:, :, None], axis=-2)
    return out.reshape(b, 1, n, d)


def unstack_layers(params: Params) -> Params:
    """The params with `layers` as a tuple of per-layer trees instead of stacked arrays.

    `hidden_states` accepts either form. Decoding loops pass the unstacked form, made once
    outside the loop, so that no step copies a layer's weights out of the stack.
    """
    stacked = params["layers"]
    num_layers = jax.tree.leaves(stacked)[0].shape[0]
    return {**params, "layers": tuple(jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(num_layers))}


def hidden_states(
    params: Params,
    tokens: jax.Array,
    positions: jax.Array,
    segment_ids: jax.Array,
    *,
    config: ModelConfig,
    cache: KVCache | None = None,
    packing: Packing | None = None,
) -> tuple[jax.Array, KVCache | None]:
    """Final-norm hidden states [B, S, hidden] (compute dtype) and the updated cache.

    tokens, positions, segment_ids: [B, S] integer arrays. With a cache, params may be in the
    form `unstack_layers` returns. With `packing` (and no cache) the hidden states are those of
    the packed real tokens, [G, C, hidden] (`to_rows` puts them back in their rows).
    """
    dtype = jnp.dtype(config.compute_dtype)
    seq = tokens.shape[1]
    if packing is not None and cache is not None:
        raise ValueError("a packed batch runs without a cache")
    # With packing, the rotary tables are made on the rows (the largest position, which scales
    # dynamic NTK and LongRoPE, is that of the rows as without packing) and packed like the tokens.
    # Made on the stream, XLA on CPU fuses cos and sin into every use of the unrolled update steps,
    # so that each layer's q and k rotations, forward and backward, compute them again for every head.
    cos, sin = rope_tables(config, positions)
    if packing is not None:
        tokens, cos, sin = (to_stream(x, packing) for x in (tokens, cos, sin))
    # The table whole along the hidden axis (FSDP gathers it, as it gathers every weight where it
    # is used), so that the looked-up rows come out split by batch rows alone.
    table = constrain(params["embed"]["embedding"], ("act_vocab", "act_embed"))
    h = constrain(jnp.take(table, tokens, axis=0).astype(dtype), _HIDDEN)
    segment_ids = segment_ids.astype(jnp.int32)

    if cache is None:
        q_slots = jnp.arange(seq, dtype=jnp.int32)
        k_slots, k_segments = q_slots, segment_ids
    else:
        q_slots = cache.end + jnp.arange(seq, dtype=jnp.int32)
        k_slots = jnp.arange(cache.max_len, dtype=jnp.int32)
        k_segments = jax.lax.dynamic_update_slice(cache.segment_ids, segment_ids, (0, cache.end))

    def layer(h, p, window, cache_k=None, cache_v=None):
        x = rms_norm(h, p["attn_norm"]["scale"], config.rms_norm_eps)
        q = apply_rope(_dense(x, p["attn"]["q"], dtype), cos, sin)
        k = apply_rope(_dense(x, p["attn"]["k"], dtype), cos, sin)
        v = _dense(x, p["attn"]["v"], dtype)
        if packing is not None:
            q, k, v = (to_rows(t, packing) for t in (q, k, v))
        q = constrain(q, _HEADS)
        k = constrain(k.swapaxes(1, 2), _KV)
        v = constrain(v.swapaxes(1, 2), _KV)
        if cache_k is not None:
            cache_k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), (0, 0, cache.end, 0))
            cache_v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, 0, cache.end, 0))
            cache_k, cache_v = constrain(cache_k, _KV), constrain(cache_v, _KV)
            k, v = cache_k.astype(dtype), cache_v.astype(dtype)
        attn = _attend(q, k, v, segment_ids, k_segments, q_slots, k_slots, window, cache is None)
        if packing is not None:
            attn = to_stream(attn, packing)
        # Heads and head_dim flattened into one contraction: contracting (n, d) directly makes XLA
        # transpose both the activations and the kernel on every call.
        o = p["attn"]["o"]
        o = {**o, "kernel": o["kernel"].reshape(-1, config.hidden_size)}
        h = constrain(h + _dense(attn.reshape(*attn.shape[:2], -1), o, dtype), _HIDDEN)
        x = rms_norm(h, p["mlp_norm"]["scale"], config.rms_norm_eps)
        mlp = jax.tree.map(lambda w: w.astype(dtype), p["mlp"])
        h = constrain(h + gated_mlp(config.hidden_act, x, mlp["gate"], mlp["up"], mlp["down"]), _HIDDEN)
        return h, cache_k, cache_v

    if cache is None:
        # Training and scoring: one scanned layer body keeps compile time flat in depth. Unrolled
        # (`unroll_layers`), the backward pass reads each layer's residuals where they were made
        # instead of out of a stack of them, which on CPU costs a copy of every one.
        def scanned(h, inputs):
            return layer(h, *inputs)[0], None

        if config.remat != "none":
            scanned = jax.checkpoint(scanned, policy=_REMAT[config.remat], prevent_cse=False)

        h, _ = jax.lax.scan(scanned, h, (params["layers"], jnp.asarray(config.windows, jnp.int32)),
                            unroll=config.unroll_layers or 1)
    else:
        # With a cache the layers are unrolled, so that each layer's buffers update in place.
        layers = params["layers"]
        if not isinstance(layers, tuple):
            layers = unstack_layers(params)["layers"]
        new_k, new_v = [], []
        for i, window in enumerate(config.windows):
            h, k, v = layer(h, layers[i], jnp.int32(window), cache.k[i], cache.v[i])
            new_k.append(k)
            new_v.append(v)
        cache = KVCache(k=tuple(new_k), v=tuple(new_v), segment_ids=k_segments, end=cache.end + seq)
    return rms_norm(h, params["final_norm"]["scale"], config.rms_norm_eps), cache


def output_embedding(params: Params, config: ModelConfig) -> jax.Array:
    """The [vocab, hidden] output head (the input embedding when tied)."""
    return params["embed" if config.tie_word_embeddings else "lm_head"]["embedding"]


def logits_from_hidden(params: Params, h: jax.Array, config: ModelConfig) -> jax.Array:
    """Float32 logits [..., vocab] for hidden states [..., hidden]."""
    logits = head_logits(h, output_embedding(params, config).astype(h.dtype))
    return constrain(logits, ("batch",) + ("length",) * (logits.ndim - 2) + ("act_vocab",))


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
