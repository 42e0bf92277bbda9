"""Rotary position embeddings (RoPE) with the scaling variants of the Qwen2 and Llama families.

The angle of position p in frequency pair k is theta_k(p) = p * inv_freq_k, with the default
inv_freq_k = base^(-2k/d). Scaling variants change inv_freq_k (linear, dynamic NTK, Llama 3, YaRN)
and YaRN also scales cos/sin by an attention factor. Rotation is the "rotate half" convention:
x' = x * cos + rotate_half(x) * sin, where the two halves of the head dimension form the pairs.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from primejax.models.config import ModelConfig, RopeConfig


def _default_inv_freq(base: float | np.ndarray, dim: int) -> np.ndarray:
    return 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))


def _llama3_inv_freq(rope: RopeConfig, dim: int) -> np.ndarray:
    inv_freq = _default_inv_freq(rope.theta, dim)
    factor = rope.get("factor")
    low, high = rope.get("low_freq_factor"), rope.get("high_freq_factor")
    old_len = rope.get("original_max_position_embeddings")
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)


def _yarn(rope: RopeConfig, dim: int, max_position_embeddings: int) -> tuple[np.ndarray, float]:
    base = rope.theta
    original = rope.get("original_max_position_embeddings")
    factor = rope.get("factor") or max_position_embeddings / original

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = rope.get("attention_factor")
    if attention_factor is None:
        m, m_all = rope.get("mscale"), rope.get("mscale_all_dim")
        attention_factor = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = correction_dim(rope.get("beta_fast") or 32)
    high = correction_dim(rope.get("beta_slow") or 1)
    if rope.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    pos_freqs = base ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq.astype(np.float32), float(attention_factor)


def _longrope(rope: RopeConfig, dim: int, max_position_embeddings: int, max_position: jnp.ndarray):
    original = rope.get("original_max_position_embeddings")
    factor = rope.get("factor") or max_position_embeddings / original
    attention_factor = rope.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(original))
    long, short = (np.asarray(rope.get(k), np.float32) for k in ("long_factor", "short_factor"))
    ext = jnp.where(max_position + 1 > original, long, short)
    return 1.0 / (ext * rope.theta ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))), float(attention_factor)


def inverse_frequencies(config: ModelConfig, max_position: jnp.ndarray | None = None):
    """Returns (inv_freq [head_dim/2] float32, attention_factor).

    `max_position` (traced scalar, the largest position in the call) is used by dynamic NTK
    scaling, which stretches the base once the sequence outgrows max_position_embeddings, and by
    LongRoPE, which switches from its short to its long factors past the original length. As in
    transformers, that choice is made per call: with a KV cache, keys cached by an earlier call
    keep the frequencies of that call.
    """
    rope, dim = config.rope, config.head_dim
    if rope.rope_type == "default":
        return jnp.asarray(_default_inv_freq(rope.theta, dim)), 1.0
    if rope.rope_type == "linear":
        return jnp.asarray(_default_inv_freq(rope.theta, dim) / rope.get("factor")), 1.0
    if rope.rope_type == "llama3":
        return jnp.asarray(_llama3_inv_freq(rope, dim)), 1.0
    if rope.rope_type == "yarn":
        inv_freq, factor = _yarn(rope, dim, config.max_position_embeddings)
        return jnp.asarray(inv_freq), factor
    if rope.rope_type == "longrope":
        return _longrope(rope, dim, config.max_position_embeddings, max_position)
    if rope.rope_type == "dynamic":
        limit = config.max_position_embeddings
        seq_len = jnp.maximum(max_position + 1, limit).astype(jnp.float32)
        factor = rope.get("factor")
        base = rope.theta * ((factor * seq_len / limit) - (factor - 1)) ** (dim / (dim - 2))
        exponents = jnp.arange(0, dim, 2, dtype=jnp.float32) / dim
        return 1.0 / (base ** exponents), 1.0
    raise ValueError(f"rope_type={rope.rope_type!r} is not supported")


def rope_tables(config: ModelConfig, positions: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """cos and sin tables [batch, seq, head_dim] (float32) for integer `positions` [batch, seq]."""
    inv_freq, attention_factor = inverse_frequencies(config, jnp.max(positions))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles) * attention_factor, jnp.sin(angles) * attention_factor


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Rotates x [batch, seq, heads, head_dim] by the tables [batch, seq, head_dim]."""
    cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin
