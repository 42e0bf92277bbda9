"""Response log-probs of a causal LM without materialising [batch, length, vocab] logits.

The model runs once over [prompt ; response]; the R hidden states that score the response
(positions P − 1 … P + R − 2, SPEC §2.2) are cut into chunks of `chunk` positions and each chunk's
logits are made, reduced to the taken token's log-prob (and the entropy) and dropped:

    lp[i, t] = log_softmax(h[i, P − 1 + t] · W_outᵀ)[y_{i,t}]
    H[i, t]  = logsumexp(l) − Σ_v softmax(l)_v l_v

Peak memory for the head is one chunk's [B, chunk, V] float32 logits instead of [B, R, V] (for a
152k vocabulary, 16 rows × 3072 tokens would be 30 GB). Under differentiation each chunk is
rematerialised in the backward pass, so training holds no [B, R, V] array either.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp

from primejax.algo.logprobs import entropy_from_logits, token_log_probs
from primejax.models import ModelConfig, hidden_states, positions_from_segment_ids
from primejax.models.params import Params
from primejax.models.linear import head_logits
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


def chunked_log_probs(params: Params, sequences: Sequences, *, config: ModelConfig, chunk: int,
                      with_entropy: bool = True) -> tuple[jax.Array, jax.Array | None]:
    """(lp [B, R], entropy [B, R] or None), float32, for every response column (masked ones too).

    `chunk` is the number of response positions whose logits exist at once; R is padded up to a
    multiple of it internally.
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
    head = output_embedding(params, config)

    @jax.checkpoint
    def score(head, h_chunk, target_chunk):
        logits = constrain(head_logits(h_chunk, head.astype(h_chunk.dtype)), ("batch", "length", "act_vocab"))
        entropy = entropy_from_logits(logits) if with_entropy else jnp.zeros(target_chunk.shape, jnp.float32)
        return token_log_probs(logits, target_chunk), entropy

    def body(_, xs):
        return None, score(head, *xs)

    _, (log_probs, entropy) = jax.lax.scan(body, None, (h, targets))
    log_probs = log_probs.swapaxes(0, 1).reshape(batch, -1)[:, :responses]
    entropy = entropy.swapaxes(0, 1).reshape(batch, -1)[:, :responses]
    return log_probs, (entropy if with_entropy else None)
