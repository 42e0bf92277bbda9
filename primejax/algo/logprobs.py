"""Log-probabilities and entropies of response tokens from a causal LM's logits (SPEC §2.2).

The model reads `input_ids` = [prompt (P, left-padded) ; response (R, right-padded)]; logit row s
predicts token s + 1, so response token t is scored by row P − 1 + t:

    lp[i, t] = log_softmax(logits[i, P − 1 + t])[response[i, t]]

Logits are not divided by a temperature (the references score at T = 1). Everything is computed
in float32 whatever the logits' dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_log_probs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """log softmax(logits)[..., token] = (l_token − max l) − log Σ_v exp(l_v − max l), float32 [...].

    Rounded in the order torch's `log_softmax` uses, which keeps it bit-equal to the references on
    most entries.
    """
    logits = logits.astype(jnp.float32)
    peak = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    shifted = logits - peak
    picked = jnp.take_along_axis(shifted, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1))


def entropy_from_logits(logits: jax.Array) -> jax.Array:
    """H = logsumexp(l) − Σ_v softmax(l)_v · l_v, float32 [...] (the categorical entropy)."""
    logits = logits.astype(jnp.float32)
    return jax.nn.logsumexp(logits, axis=-1) - jnp.sum(jax.nn.softmax(logits, axis=-1) * logits, axis=-1)


def response_logits(logits: jax.Array, prompt_length: int) -> jax.Array:
    """The R logit rows that score the response: logits[:, P − 1 : P − 1 + R] of a [B, P + R, V] array."""
    if prompt_length < 1:
        raise ValueError(f"prompt_length={prompt_length} must be >= 1: the first response token is scored by the "
                         f"logits of the last prompt position")
    return logits[:, prompt_length - 1:-1]


def response_log_probs(logits: jax.Array, input_ids: jax.Array, prompt_length: int,
                       mask: jax.Array | None = None) -> jax.Array:
    """lp[i, t] of response token t of each row, float32 [B, R].

    logits: [B, P + R, V]; input_ids: [B, P + R]. With `mask`, entries outside it are 0; without,
    every column is returned (the [OFF] reference keeps padding's log-probs and masks them later).
    """
    log_probs = token_log_probs(response_logits(logits, prompt_length), input_ids[:, prompt_length:])
    return log_probs if mask is None else jnp.where(mask, log_probs, 0.0)


def response_entropy(logits: jax.Array, prompt_length: int, mask: jax.Array | None = None) -> jax.Array:
    """Entropy of the policy at each response position, float32 [B, R] (0 outside `mask` if given)."""
    entropy = entropy_from_logits(response_logits(logits, prompt_length))
    return entropy if mask is None else jnp.where(mask, entropy, 0.0)
