"""Choosing the next token from logits: temperature, top-k, top-p, and the draw itself.

The sampling distribution of a row with logits l is

    q(i) ∝ exp(l_i / T) · [i in top-k] · [i in nucleus(top-p)]

(T = temperature; top-k keeps the k largest logits, ties at the k-th value included; the nucleus
is the smallest set of most probable tokens whose tempered probability reaches p, found by
bisection on the probability threshold rather than by sorting the vocabulary). T = 0 is greedy.

The draw is an inverse-CDF draw with one uniform per row, done in two levels (pick a block of the
vocabulary from block sums, then a token inside that block), so a step costs a few passes over
the logits instead of one random number and two logarithms per vocabulary entry (Gumbel-max).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

BLOCK = 128
_BISECTION_STEPS = 32


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How responses are sampled.

    temperature: 0 for greedy, else the softmax temperature. top_k: keep the k most likely
    tokens (0 = all). top_p: nucleus mass in (0, 1] (1 = all). n: samples per prompt.
    max_new_tokens: response length limit. eos_ids / stop_ids: tokens that end a response
    (kept in it, as the last masked-in token). pad_id: fills responses after their end.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    n: int = 1
    max_new_tokens: int = 128
    eos_ids: tuple[int, ...] = ()
    stop_ids: tuple[int, ...] = ()
    pad_id: int = 0

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f"temperature={self.temperature!r} must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p!r} must be in (0, 1]")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k={self.top_k!r} must be an integer >= 0 (0 keeps every token)")
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n={self.n!r} must be an integer >= 1")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens!r} must be an integer >= 1")

    @property
    def end_ids(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(self.eos_ids + self.stop_ids))

    def replace(self, **changes) -> SamplingParams:
        return dataclasses.replace(self, **changes)


def sampling_logits(logits: jax.Array, params: SamplingParams) -> jax.Array:
    """Logits of the sampling distribution q (excluded tokens at -inf), float32 [..., V].

    Greedy (T = 0) keeps the raw logits: its log-probs are reported under T = 1.
    """
    logits = logits.astype(jnp.float32)
    if params.temperature > 0 and params.temperature != 1:
        logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, params.top_k)[0][..., -1:]
        logits = jnp.where(logits >= kth, logits, -jnp.inf)
    if params.top_p < 1:
        logits = _nucleus(logits, params.top_p)
    return logits


def _nucleus(logits: jax.Array, top_p: float) -> jax.Array:
    """Masks all but the nucleus: tokens with probability >= tau, where tau is the largest
    threshold whose kept mass still reaches top_p (found by bisection, no sort)."""
    probs = jax.nn.softmax(logits, axis=-1)

    def kept_mass(tau):
        return jnp.sum(jnp.where(probs >= tau[..., None], probs, 0.0), axis=-1)

    def step(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) / 2
        enough = kept_mass(mid) >= top_p
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

    lo = jnp.zeros(probs.shape[:-1], probs.dtype)
    hi = jnp.max(probs, axis=-1)
    # Invariant: kept_mass(lo) >= top_p. The answer lies in [lo, hi]; lo is always a safe cut.
    lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, step, (lo, hi))
    tau = jnp.where(kept_mass(hi) >= top_p, hi, lo)
    return jnp.where(probs >= tau[..., None], logits, -jnp.inf)


def draw(key: jax.Array, logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One token per row from softmax(logits) [B, V], and its log-probability.

    Inverse CDF in two levels: u ~ U(0, Z) with Z the row's total mass; the block is the first
    whose running block sum exceeds u, the token the first in that block whose running sum
    exceeds the rest of u. Tokens of zero mass are never chosen.
    """
    batch, vocab = logits.shape
    top = jnp.max(logits, axis=-1, keepdims=True)
    mass = jnp.exp(logits - top)
    padded = -vocab % BLOCK
    blocks = jnp.pad(mass, ((0, 0), (0, padded))).reshape(batch, -1, BLOCK)
    block_mass = blocks.sum(-1)
    block_cdf = jnp.cumsum(block_mass, axis=-1)
    total = block_cdf[:, -1]
    u = jax.random.uniform(key, (batch,), jnp.float32) * total
    block = _first_exceeding(block_cdf, u, block_mass > 0)
    inside = jnp.take_along_axis(blocks, block[:, None, None], axis=1)[:, 0]
    before = jnp.take_along_axis(block_cdf - block_mass, block[:, None], axis=1)[:, 0]
    offset = _first_exceeding(jnp.cumsum(inside, axis=-1), u - before, inside > 0)
    token = block * BLOCK + offset
    log_prob = jnp.take_along_axis(logits, token[:, None], axis=-1)[:, 0] - top[:, 0] - jnp.log(total)
    return token.astype(jnp.int32), log_prob


def _first_exceeding(cdf: jax.Array, u: jax.Array, allowed: jax.Array) -> jax.Array:
    """Index of the first allowed entry with cdf > u; the last allowed one if rounding left none."""
    hit = (cdf > u[:, None]) & allowed
    last_allowed = cdf.shape[-1] - 1 - jnp.argmax(allowed[:, ::-1], axis=-1)
    return jnp.where(hit.any(-1), jnp.argmax(hit, axis=-1), last_allowed)


def next_token(key: jax.Array, logits: jax.Array, params: SamplingParams) -> tuple[jax.Array, jax.Array]:
    """Samples one token per row from logits [B, V]; returns (tokens int32, log-probs under q)."""
    logits = sampling_logits(logits, params)
    if params.temperature == 0:
        token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), token[:, None], axis=-1)[:, 0]
        return token, log_prob
    return draw(key, logits)
