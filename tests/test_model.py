"""The transformer against transformers' PyTorch models, its KV cache against itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from primejax.models import (
    ModelConfig,
    forward,
    init_cache,
    init_params,
    load_hf_checkpoint,
    param_axes,
    param_shapes,
    positions_from_segment_ids,
)
from primejax.tools.check_logits import hf_logits, max_abs_diff, primejax_logits, random_batch
from tests import hf_models

ATOL = 1e-4
run = jax.jit(forward, static_argnames="config", donate_argnames="cache")


@pytest.mark.parametrize("name", list(hf_models.CASES))
def test_logits_match_transformers_on_left_padded_batch(hf_checkpoint, name):
    path = hf_checkpoint(name)
    config, params = load_hf_checkpoint(path)
    # 64 positions: attention runs as two causal query blocks of 32 (`query_block`).
    tokens, mask = random_batch(config.vocab_size, batch=4, length=64)
    assert len(set(mask.sum(1))) == 4  # a different amount of padding in every row
    ours, theirs = primejax_logits(config, params, tokens, mask), hf_logits(path, tokens, mask)
    assert np.abs(theirs).max() > 1.0  # logits far from zero: the comparison means something
    assert max_abs_diff(ours, theirs, mask) < ATOL


# Dynamic NTK and LongRoPE pick their frequencies per call from the largest position, so cached
# and full passes differ (in transformers too).
@pytest.mark.parametrize("name", [n for n in hf_models.CASES if "dynamic" not in n and "longrope" not in n])
def test_prefill_then_decode_equals_full_forward(hf_checkpoint, name):
    config, params = load_hf_checkpoint(hf_checkpoint(name))
    prompt_len, new = 24, 12
    prompt, prompt_mask = random_batch(config.vocab_size, batch=4, length=prompt_len, seed=1)
    generated = np.random.default_rng(2).integers(0, config.vocab_size, (4, new))
    tokens = jnp.asarray(np.concatenate([prompt, generated], 1), jnp.int32)
    mask = jnp.asarray(np.concatenate([prompt_mask, np.ones_like(generated)], 1), jnp.int32)
    positions = positions_from_segment_ids(mask)
    with jax.default_matmul_precision("highest"):
        full, _ = run(params, tokens, positions, mask, config=config)
        # Room for more tokens than are decoded: empty slots must stay invisible.
        cache = init_cache(config, batch=4, max_len=prompt_len + new + 5)
        step, cache = run(params, tokens[:, :prompt_len], positions[:, :prompt_len], mask[:, :prompt_len],
                          config=config, cache=cache)
        steps = [step]
        for t in range(prompt_len, prompt_len + new):
            step, cache = run(params, tokens[:, t:t + 1], positions[:, t:t + 1], mask[:, t:t + 1],
                              config=config, cache=cache)
            steps.append(step)
    assert int(cache.end) == prompt_len + new
    incremental = np.concatenate([np.asarray(s) for s in steps], axis=1)
    assert max_abs_diff(incremental, np.asarray(full), np.asarray(mask)) < ATOL


def test_packed_segments_equal_separate_sequences(hf_checkpoint):
    config, params = load_hf_checkpoint(hf_checkpoint("qwen2_gqa2"))
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, config.vocab_size, 7), rng.integers(0, config.vocab_size, 5)
    packed = jnp.asarray(np.concatenate([a, b, [0, 0]])[None], jnp.int32)
    segments = jnp.asarray([[1] * 7 + [2] * 5 + [0, 0]], jnp.int32)
    positions = positions_from_segment_ids(segments)
    np.testing.assert_array_equal(positions[0, :12], list(range(7)) + list(range(5)))
    logits_packed, _ = run(params, packed, positions, segments, config=config)
    for seq, sl in ((a, slice(0, 7)), (b, slice(7, 12))):
        ids = jnp.asarray(seq[None], jnp.int32)
        ones = jnp.ones_like(ids)
        alone, _ = run(params, ids, positions_from_segment_ids(ones), ones, config=config)
        np.testing.assert_allclose(logits_packed[:, sl], alone, atol=ATOL)


def test_positions_from_left_padding_mask():
    mask = jnp.asarray([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(positions_from_segment_ids(mask)[:, 2:], [[0, 1, 2], [2, 3, 4]])


def test_bfloat16_params_and_compute_stay_close_to_float32(hf_checkpoint):
    path = hf_checkpoint("qwen2_gqa2")
    config, params = load_hf_checkpoint(path, dtype="bfloat16", compute_dtype="bfloat16")
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))
    tokens, mask = random_batch(config.vocab_size)
    ours, theirs = primejax_logits(config, params, tokens, mask), hf_logits(path, tokens, mask)
    assert ours.dtype == np.float32
    scale = np.abs(theirs).max()
    assert max_abs_diff(ours, theirs, mask) < 0.05 * scale
    agree = (ours.argmax(-1) == theirs.argmax(-1))[mask.astype(bool)].mean()
    assert agree > 0.9


@pytest.mark.parametrize("name", list(hf_models.CASES))
def test_param_tree_axes_and_size(name):
    config = ModelConfig.from_hf_dict(hf_models.make_config(name).to_dict())
    params = init_params(config, jax.random.key(0))
    shapes = param_shapes(config)
    axes = param_axes(config)
    assert jax.tree.structure(params) == jax.tree.structure(shapes)
    for value, shape, names in zip(jax.tree.leaves(params), jax.tree.leaves(shapes),
                                   jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))):
        assert value.shape == shape.shape
        assert len(names) == value.ndim
    assert sum(x.size for x in jax.tree.leaves(params)) == config.num_params
    torch_model = hf_models.make_model(name)
    assert config.num_params == sum(p.numel() for p in torch_model.parameters())
