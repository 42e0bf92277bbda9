"""Batched generation with a KV cache: one jitted program per (prompt bucket, response bucket).

    prefill the G prompts once -> replicate cache and last logits n times (rows [g*n, (g+1)*n)
    belong to prompt g) -> draw the first token -> lax.while_loop: decode one token for every row
    until every row has ended or max_new_tokens tokens exist.

Prompts are left-padded; their padded length is rounded up to a bucket and so is the response
buffer, so a training run compiles a handful of programs. The response mask follows SPEC §0: 1 up
to and including the first end token, 0 after it, all ones when no end token came (truncated).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from primejax.models.config import ModelConfig
from primejax.models.params import Params
from primejax.models.transformer import (
    KVCache,
    hidden_states,
    init_cache,
    logits_from_hidden,
    positions_from_segment_ids,
    unstack_layers,
)
from primejax.parallel.placement import to_host
from primejax.parallel.rules import Layout, active, constrain_rows
from primejax.sampling.next_token import SamplingParams, next_token

MIN_BUCKET = 16


@partial(jax.tree_util.register_dataclass,
         data_fields=["prompt_tokens", "prompt_mask", "response_tokens", "response_mask", "response_lengths",
                      "truncated", "log_probs"],
         meta_fields=[])
@dataclasses.dataclass
class Rollout:
    """n responses per prompt, rows [g*n, (g+1)*n) for prompt g.

    prompt_tokens, prompt_mask: [B, P] left-padded (P = the prompt bucket). response_tokens,
    response_mask, log_probs: [B, R] right-padded with the pad id (R = max_new_tokens).
    log_probs are those of the sampled tokens under the sampling distribution (0 where masked).
    response_lengths: [B] = response_mask.sum(-1). truncated: [B] no end token was produced.
    """

    prompt_tokens: jax.Array
    prompt_mask: jax.Array
    response_tokens: jax.Array
    response_mask: jax.Array
    response_lengths: jax.Array
    truncated: jax.Array
    log_probs: jax.Array


def bucket(length: int) -> int:
    """The smallest power of two >= length (at least MIN_BUCKET)."""
    return max(MIN_BUCKET, 1 << (int(length) - 1).bit_length())


def pad_prompts(prompts: list[list[int]] | np.ndarray, pad_id: int, length: int | None = None):
    """Left-pads token lists to `length` (default: the bucket of the longest); returns tokens, mask."""
    prompts = [list(p) for p in prompts]
    if not prompts:
        raise ValueError("prompts is empty: need at least one prompt")
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty: every prompt needs at least one token")
    longest = max(len(p) for p in prompts)
    length = length or bucket(longest)
    if longest > length:
        raise ValueError(f"prompt of {longest} tokens is longer than the prompt length {length}")
    tokens = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), np.int32)
    for i, p in enumerate(prompts):
        tokens[i, length - len(p):] = p
        mask[i, length - len(p):] = 1
    return tokens, mask


def _replicate(x: jax.Array, n: int) -> jax.Array:
    return x if n == 1 else jnp.repeat(x, n, axis=0)


@partial(jax.jit, static_argnames=("config", "sampling", "layout"))
def generation_program(params: Params, prompt_tokens, prompt_mask, key, limit, *, config: ModelConfig,
                       sampling: SamplingParams, layout: Layout | None) -> Rollout:
    """The jitted program `generate` runs (lower it to plan a run ahead of time): prompts of a bucket
    length; `sampling.max_new_tokens` is the response buffer, `limit` <= it the traced number of
    tokens to generate; activations and the cache follow `layout`'s rules."""
    with active(layout):
        return _sample(params, prompt_tokens, prompt_mask, key, limit, config=config, sampling=sampling)


def _sample(params: Params, prompt_tokens, prompt_mask, key, limit, *, config: ModelConfig,
            sampling: SamplingParams) -> Rollout:
    n, buffer = sampling.n, sampling.max_new_tokens
    groups, prompt_len = prompt_tokens.shape
    rows = groups * n
    end_ids = jnp.asarray(sampling.end_ids or (-1,), jnp.int32)

    params = unstack_layers(params)
    positions = positions_from_segment_ids(prompt_mask)
    cache = init_cache(config, groups, prompt_len + buffer)
    h, cache = hidden_states(params, prompt_tokens, positions, prompt_mask, config=config, cache=cache)
    logits = logits_from_hidden(params, h[:, -1], config)
    cache = KVCache(k=tuple(_replicate(k, n) for k in cache.k), v=tuple(_replicate(v, n) for v in cache.v),
                    segment_ids=_replicate(cache.segment_ids, n), end=cache.end)
    next_position = _replicate(positions[:, -1] + 1, n)

    def emit(state, step, logits):
        """Draws the token of `step` for every row and records it."""
        tokens, log_probs, alive = state
        token, log_prob = next_token(jax.random.fold_in(key, step), logits, sampling)
        token = jnp.where(alive, token, sampling.pad_id)
        tokens = tokens.at[:, step].set(token)
        log_probs = log_probs.at[:, step].set(jnp.where(alive, log_prob, 0.0))
        alive = alive & ~jnp.isin(token, end_ids)
        return tokens, log_probs, alive

    state = (jnp.full((rows, buffer), sampling.pad_id, jnp.int32), jnp.zeros((rows, buffer), jnp.float32),
             jnp.ones((rows,), bool))
    state = emit(state, 0, _replicate(logits, n))

    def cond(carry):
        step, _, (_, _, alive) = carry
        return (step < limit) & alive.any()

    def body(carry):
        step, cache, state = carry
        previous = state[0][:, step - 1]
        position = next_position + step - 1
        h, cache = hidden_states(params, previous[:, None], position[:, None], jnp.ones((rows, 1), jnp.int32),
                                 config=config, cache=cache)
        return step + 1, cache, emit(state, step, logits_from_hidden(params, h[:, 0], config))

    _, _, (tokens, log_probs, _) = jax.lax.while_loop(cond, body, (jnp.int32(1), cache, constrain_rows(state)))
    is_end = jnp.isin(tokens, end_ids) & (jnp.arange(buffer) < limit)
    # 1 up to and including the first end token; all ones when there is none.
    ended_before = jnp.cumsum(is_end, axis=-1) - is_end
    mask = ((ended_before == 0) & (jnp.arange(buffer) < limit)).astype(jnp.int32)
    return constrain_rows(Rollout(
        prompt_tokens=_replicate(prompt_tokens, n),
        prompt_mask=_replicate(prompt_mask, n),
        response_tokens=jnp.where(mask == 1, tokens, sampling.pad_id),
        response_mask=mask,
        response_lengths=mask.sum(-1),
        truncated=~is_end.any(-1),
        log_probs=log_probs * mask,
    ))


def generate(
    params: Params,
    prompt_tokens: jax.Array | np.ndarray,
    prompt_mask: jax.Array | np.ndarray,
    key: jax.Array,
    *,
    config: ModelConfig,
    sampling: SamplingParams,
    max_len: int | None = None,
    layout: Layout | None = None,
) -> Rollout:
    """Samples `sampling.n` responses for every left-padded prompt row.

    prompt_tokens, prompt_mask: [G, P] (1 on real tokens, which must be right-aligned). `max_len`
    bounds prompt + response length (default: the model's max_position_embeddings). With a
    `layout`, the rows, the KV cache and the activations are sharded by its rules (pass prompts as
    global arrays on a multi-process mesh). Same key, same inputs, same outputs.
    """
    # Checks run on a host copy of the (small) mask; the tokens stay where they are, so a batch
    # laid over a mesh's data axis is sampled where it lies.
    mask = to_host(prompt_mask)
    if len(prompt_tokens.shape) != 2 or tuple(prompt_tokens.shape) != mask.shape:
        raise ValueError(f"prompt_tokens {tuple(prompt_tokens.shape)} and prompt_mask {mask.shape} "
                         "must both be [num_prompts, length]")
    if mask.shape[0] == 0:
        raise ValueError("prompt_tokens is empty: need at least one prompt")
    lengths = mask.sum(-1)
    if (lengths == 0).any():
        raise ValueError(f"prompt rows {np.flatnonzero(lengths == 0).tolist()} are empty (mask all zero)")
    if (mask[:, -1] == 0).any():
        raise ValueError("prompts must be left-padded: prompt_mask[:, -1] must be 1 in every row")
    max_len = max_len or config.max_position_embeddings
    if int(lengths.max()) + sampling.max_new_tokens > max_len:
        raise ValueError(f"prompt of {int(lengths.max())} tokens + max_new_tokens={sampling.max_new_tokens} "
                         f"exceeds max_len={max_len}")
    prompt_tokens, prompt_mask = jnp.asarray(prompt_tokens, jnp.int32), jnp.asarray(prompt_mask, jnp.int32)
    grow = bucket(mask.shape[1]) - mask.shape[1]
    if grow:
        prompt_tokens = jnp.pad(prompt_tokens, ((0, 0), (grow, 0)), constant_values=sampling.pad_id)
        prompt_mask = jnp.pad(prompt_mask, ((0, 0), (grow, 0)))
    limit = sampling.max_new_tokens
    rollout = generation_program(params, prompt_tokens, prompt_mask, key, jnp.int32(limit), config=config,
                        sampling=sampling.replace(max_new_tokens=bucket(limit)), layout=layout)
    if bucket(limit) == limit:
        return rollout
    return dataclasses.replace(rollout, **{name: getattr(rollout, name)[:, :limit]
                                           for name in ("response_tokens", "response_mask", "log_probs")})
