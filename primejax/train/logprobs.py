"""Response log-probs of a causal LM without materialising [batch, length, vocab] logits.

The model runs once over [prompt ; response]; the R hidden states that score the response
(positions P − 1 … P + R − 2, SPEC §2.2) are cut into chunks of `chunk` positions and each chunk's
logits are made, reduced to the taken token's log-prob (and the entropy) and dropped:

    lp[i, t] = log_softmax(h[i, P − 1 + t] · W_outᵀ)[y_{i,t}]
    H[i, t]  = logsumexp(l) − Σ_v softmax(l)_v l_v

Peak memory for the head is one chunk's [B, chunk, V] float32 logits instead of [B, R, V] (for a
152k vocabulary, 16 rows × 3072 tokens would be 30 GB).

The head's backward pass is written out (`token_statistics`). With p = softmax(l), the cotangents
g of lp and G of H give the logits' cotangent in one pass over the vocabulary:

    ∂lp/∂l_v = 1[v = y] − p_v        ∂H/∂l_v = −p_v (log p_v + H)
    dl_v     = g · 1[v = y] − p_v (g + G (log p_v + H))

Each chunk keeps its hidden states, logsumexp and entropy, and either remakes its logits in the
backward pass (`keep_logits=False`: no [B, R, V] array while training) or keeps them
(`keep_logits=True`: B · R · V · 4 more bytes, one head product fewer per step).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp

from primejax.algo.logprobs import entropy_from_logits, token_log_probs
from primejax.models import ModelConfig, hidden_states, positions_from_segment_ids
from primejax.models.linear import head_logits
from primejax.models.params import Params
from primejax.models.transformer import output_embedding
from primejax.parallel.rules import constrain


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


def _logits(h: jax.Array, head: jax.Array) -> jax.Array:
    return constrain(head_logits(h, head), ("batch", "length", "act_vocab"))


def _statistics(h, head, targets, with_entropy):
    logits = _logits(h, head)
    entropy = entropy_from_logits(logits) if with_entropy else None
    return logits, token_log_probs(logits, targets), entropy


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def token_statistics(h: jax.Array, head: jax.Array, targets: jax.Array, with_entropy: bool,
                     keep_logits: bool) -> tuple[jax.Array, jax.Array | None]:
    """(lp, H or None) [...] float32 of hidden states h [..., hidden], a head [vocab, hidden] and the
    taken tokens [...]: lp = log_softmax(h · headᵀ)[y], H its entropy. The backward pass is the one
    of the module doc; `keep_logits` chooses whether it remakes the logits or keeps them."""
    return _statistics(h, head, targets, with_entropy)[1:]


def _token_statistics_fwd(h, head, targets, with_entropy, keep_logits):
    logits, log_probs, entropy = _statistics(h, head, targets, with_entropy)
    lse = jax.nn.logsumexp(logits, axis=-1)
    return (log_probs, entropy), (h, head, targets, lse, entropy, logits if keep_logits else None)


def _token_statistics_bwd(with_entropy, keep_logits, residuals, cotangents):
    h, head, targets, lse, entropy, kept = residuals
    d_log_probs, d_entropy = cotangents
    # With kept logits the remade ones are unused and XLA drops their product.
    remade, logits_vjp = jax.vjp(_logits, h, head)
    logits = remade if kept is None else kept
    log_p = logits - lse[..., None]
    coefficient = d_log_probs[..., None]
    if with_entropy:
        coefficient = coefficient + d_entropy[..., None] * (log_p + entropy[..., None])
    taken = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1) == targets[..., None]
    d_logits = jnp.where(taken, d_log_probs[..., None], 0.0) - jnp.exp(log_p) * coefficient
    return (*logits_vjp(d_logits), None)


token_statistics.defvjp(_token_statistics_fwd, _token_statistics_bwd)


def chunked_log_probs(params: Params, sequences: Sequences, *, config: ModelConfig, chunk: int,
                      with_entropy: bool = True, keep_logits: bool = False) -> tuple[jax.Array, jax.Array | None]:
    """(lp [B, R], entropy [B, R] or None), float32, for every response column (masked ones too).

    `chunk` is the number of response positions whose logits exist at once; R is padded up to a
    multiple of it internally. Under differentiation, `keep_logits` keeps every chunk's logits for
    the backward pass instead of remaking them (module doc).
    """
    if chunk < 1:
        raise ValueError(f"chunk={chunk!r} must be a positive number of positions")
    prompt_length = sequences.prompt_length
    if prompt_length < 1:
        raise ValueError("sequences need at least one prompt column: the first response token is scored by the "
                         "last prompt position")
    positions = positions_from_segment_ids(sequences.segment_ids)
    h, _ = hidden_states(params, sequences.tokens, positions, sequences.segment_ids, config=config)
    batch, responses = sequences.response_mask.shape
    h = h[:, prompt_length - 1:prompt_length - 1 + responses]
    targets = sequences.response_tokens
    chunk = min(chunk, responses)
    pad = -responses % chunk
    if pad:
        h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    num_chunks = (responses + pad) // chunk
    h = h.reshape(batch, num_chunks, chunk, -1).swapaxes(0, 1)
    targets = targets.reshape(batch, num_chunks, chunk).swapaxes(0, 1)
    head = output_embedding(params, config).astype(h.dtype)

    def body(_, xs):
        h_chunk, target_chunk = xs
        return None, token_statistics(h_chunk, head, target_chunk, with_entropy, keep_logits)

    _, (log_probs, entropy) = jax.lax.scan(body, None, (h, targets))

    def unchunked(x):
        return x.swapaxes(0, 1).reshape(batch, -1)[:, :responses]

    return unchunked(log_probs), (unchunked(entropy) if with_entropy else None)
