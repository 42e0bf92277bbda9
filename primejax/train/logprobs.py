"""Response log-probs of a causal LM without materialising [batch, length, vocab] logits.

The model runs once over [prompt ; response]; the R hidden states that score the response
(positions P − 1 … P + R − 2, SPEC §2.2) are cut into chunks of `chunk` positions and each chunk's
logits are made, reduced to the taken token's log-prob (and the entropy) and dropped:

    lp[i, t] = log_softmax(h[i, P − 1 + t] · W_outᵀ)[y_{i,t}]
    H[i, t]  = logsumexp(l) − Σ_v softmax(l)_v l_v

Peak memory for the head is one chunk's [B, chunk, V] float32 logits instead of [B, R, V] (for a
152k vocabulary, 16 rows × 3072 tokens would be 30 GB).

With a `Capacity` the batch is packed (`primejax.models.packing`): the model runs on the real tokens
only, and the head's chunks run over the hidden states that score real response tokens, in streams
of `capacity.responses` slots, instead of over every response column.

The head's backward pass is written out (`token_statistics`). With p = softmax(l), the cotangents
g of lp and G of H give the logits' cotangent in one pass over the vocabulary:

    ∂lp/∂l_v = 1[v = y] − p_v        ∂H/∂l_v = −p_v (log p_v + H)
    dl_v     = g · 1[v = y] − p_v (g + G (log p_v + H))

The statistics take one max and one exponential per logit:

    m = max_v l_v    e_v = exp(l_v − m)    S = Σ_v e_v    lse = m + log S
    lp = (l_y − m) − log S                 H = log S − Σ_v e_v (l_v − m) / S

Each sum and max over the vocabulary runs in two steps on one CPU device
(`primejax.models.reductions`): logsumexp of [512, 32000] logits took 51 ms as one reduction and 8 ms
in two on two cores.

Each chunk keeps its hidden states, logsumexp and entropy, and remakes its logits in the backward
pass (no [B, R, V] array while training). With `keep_logits` the logits are kept instead (one head
product fewer per step); as they then all exist at the end of the forward pass anyway, they are
made in one piece rather than chunk by chunk, and so is their cotangent: 2 · B · R · V · 4 bytes,
and no loop over chunks with its stacked residuals and summed head gradients (a PRIME update of the
small Qwen2 shape: policy step 1.04–1.05× faster in two A/B runs, PRM step 0.99–1.12×;
`bench/RESULTS.md`).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp

from primejax.models import ModelConfig, hidden_states, positions_from_segment_ids
from primejax.models.linear import head_logits_t
from primejax.models.packing import pack, take_slots, to_rows, to_stream
from primejax.models.params import Params
from primejax.models.reductions import over_last_axis
from primejax.models.transformer import output_embedding
from primejax.parallel.rules import constrain
from primejax.train.packing import Capacity


@partial(jax.tree_util.register_dataclass,
         data_fields=["tokens", "segment_ids", "response_mask"], meta_fields=[])
@dataclasses.dataclass
class Sequences:
    """A batch of prompt + response sequences, rows grouped by prompt (rows [g·n, (g+1)·n)).

    tokens: [B, P + R] int32, the prompt left-padded to P, the response right-padded to R.
    segment_ids: [B, P + R] int32, 1 on real tokens (prompt and response), 0 on padding.
    response_mask: [B, R] int32, the response mask m (1 up to and including the end token).
    """

    tokens: jax.Array
    segment_ids: jax.Array
    response_mask: jax.Array

    @property
    def prompt_length(self) -> int:
        return self.tokens.shape[1] - self.response_mask.shape[1]

    @property
    def response_tokens(self) -> jax.Array:
        return self.tokens[:, self.prompt_length:]

    def rows(self, index: jax.Array) -> Sequences:
        """The rows `index` of every field."""
        return jax.tree.map(lambda x: x[index], self)


def _logits(h: jax.Array, head_t: jax.Array) -> jax.Array:
    return constrain(head_logits_t(h, head_t), ("batch", "length", "act_vocab"))


def _statistics(h, head_t, targets, with_entropy):
    """(logits, lp, H or None, lse) of the module doc; all but the logits float32."""
    logits = _logits(h, head_t)
    logits32 = logits.astype(jnp.float32)
    peak = over_last_axis(jnp.max, logits32)
    shifted = logits32 - peak[..., None]
    exp = jnp.exp(shifted)
    total = over_last_axis(jnp.sum, exp)
    log_total = jnp.log(total)
    picked = jnp.take_along_axis(shifted, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    entropy = log_total - over_last_axis(jnp.sum, exp * shifted) / total if with_entropy else None
    return logits, picked - log_total, entropy, peak + log_total


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def token_statistics(h: jax.Array, head_t: jax.Array, targets: jax.Array, with_entropy: bool,
                     keep_logits: bool) -> tuple[jax.Array, jax.Array | None]:
    """(lp, H or None) [...] float32 of hidden states h [..., hidden], the transposed head head_t
    [hidden, vocab] (`head_logits_t`) and the taken tokens [...]: lp = log_softmax(h · head_t)[y], H
    its entropy. The backward pass is the one of the module doc; `keep_logits` chooses whether it
    remakes the logits or keeps them."""
    return _statistics(h, head_t, targets, with_entropy)[1:3]


def _token_statistics_fwd(h, head_t, targets, with_entropy, keep_logits):
    logits, log_probs, entropy, lse = _statistics(h, head_t, targets, with_entropy)
    return (log_probs, entropy), (h, head_t, targets, lse, entropy, logits if keep_logits else None)


def _token_statistics_bwd(with_entropy, keep_logits, residuals, cotangents):
    h, head_t, targets, lse, entropy, kept = residuals
    d_log_probs, d_entropy = cotangents
    # With kept logits the remade ones are unused and XLA drops their product.
    remade, logits_vjp = jax.vjp(_logits, h, head_t)
    logits = remade if kept is None else kept
    log_p = logits - lse[..., None]
    coefficient = d_log_probs[..., None]
    if with_entropy:
        coefficient = coefficient + d_entropy[..., None] * (log_p + entropy[..., None])
    taken = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1) == targets[..., None]
    d_logits = jnp.where(taken, d_log_probs[..., None], 0.0) - jnp.exp(log_p) * coefficient
    return (*logits_vjp(d_logits), None)


token_statistics.defvjp(_token_statistics_fwd, _token_statistics_bwd)


def _chunked_head(h: jax.Array, targets: jax.Array, head_t: jax.Array, *, chunk: int, with_entropy: bool,
                  keep_logits: bool) -> tuple[jax.Array, jax.Array | None]:
    """`token_statistics` of h [X, N, hidden] and targets [X, N], `chunk` positions of N (X · chunk
    logits) at a time, given the transposed head [hidden, vocab]."""
    rows, length = targets.shape
    if chunk >= length:
        return token_statistics(h, head_t, targets, with_entropy, keep_logits)
    pad = -length % chunk
    if pad:
        h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    num_chunks = (length + pad) // chunk
    h = h.reshape(rows, num_chunks, chunk, -1).swapaxes(0, 1)
    targets = targets.reshape(rows, num_chunks, chunk).swapaxes(0, 1)

    def body(_, xs):
        h_chunk, target_chunk = xs
        return None, token_statistics(h_chunk, head_t, target_chunk, with_entropy, keep_logits)

    _, (log_probs, entropy) = jax.lax.scan(body, None, (h, targets))

    def unchunked(x):
        return x.swapaxes(0, 1).reshape(rows, -1)[:, :length]

    return unchunked(log_probs), (unchunked(entropy) if with_entropy else None)


def chunked_log_probs(params: Params, sequences: Sequences, *, config: ModelConfig, chunk: int,
                      with_entropy: bool = True, keep_logits: bool = False,
                      capacity: Capacity | None = None) -> tuple[jax.Array, jax.Array | None]:
    """(lp [B, R], entropy [B, R] or None), float32.

    `chunk` is the number of response positions of each row whose logits exist at once (packed, a
    stream's chunks are `chunk` × its rows long: as many logits). Under differentiation,
    `keep_logits` makes the logits of the whole response at once and keeps them for the backward pass
    instead of remaking them chunk by chunk (module doc); `chunk` then does not matter. Without
    `capacity` every response column is scored, masked ones too. With it, the model runs on the real
    tokens only, packed (`primejax.models.packing`) into `capacity.groups` streams of
    `capacity.tokens` slots, and the head on the response tokens only (streams of
    `capacity.responses`); masked columns are 0.
    """
    if chunk < 1:
        raise ValueError(f"chunk={chunk!r} must be a positive number of positions")
    prompt_length = sequences.prompt_length
    if prompt_length < 1:
        raise ValueError("sequences need at least one prompt column: the first response token is scored by the "
                         "last prompt position")
    positions = positions_from_segment_ids(sequences.segment_ids)
    responses = sequences.response_mask.shape[1]
    if keep_logits:
        chunk = responses
    # Transposed once here rather than once per chunk in the backward pass (`head_logits_t`).
    head_t = output_embedding(params, config).astype(jnp.dtype(config.compute_dtype)).T
    statistics = partial(_chunked_head, head_t=head_t, with_entropy=with_entropy, keep_logits=keep_logits)
    if capacity is None:
        h, _ = hidden_states(params, sequences.tokens, positions, sequences.segment_ids, config=config)
        return statistics(h[:, prompt_length - 1:prompt_length - 1 + responses], sequences.response_tokens,
                          chunk=chunk)

    tokens = pack(sequences.segment_ids, capacity.groups, capacity.tokens)
    h, _ = hidden_states(params, sequences.tokens, positions, sequences.segment_ids, config=config, packing=tokens)
    scored = pack(sequences.response_mask, capacity.groups, capacity.responses)
    # The stream slot of the position that scores each response token: the one before it.
    scorers = to_stream(tokens.put[:, prompt_length - 1:prompt_length - 1 + responses], scored)
    h = take_slots(h, scorers)
    # As many logits at once as unpacked: `chunk` positions of each of a stream's B / G rows.
    log_probs, entropy = statistics(h, to_stream(sequences.response_tokens, scored),
                                    chunk=chunk * (sequences.response_mask.shape[0] // capacity.groups))

    def in_rows(x):
        return jnp.where(sequences.response_mask != 0, to_rows(x, scored), 0.0)

    return in_rows(log_probs), (in_rows(entropy) if with_entropy else None)
