"""The padding-free layout: packing a batch's real tokens into streams, and the host's stream sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from primejax.models import ModelConfig, hidden_states, init_params, positions_from_segment_ids
from primejax.models.config import RopeConfig
from primejax.models.packing import pack, to_rows, to_stream
from primejax.train.packing import Capacity, capacity

MASK = np.array([[0, 1, 1, 1, 0],
                 [1, 1, 0, 0, 0],
                 [0, 0, 1, 1, 1],
                 [1, 0, 0, 0, 0]], np.int32)


def test_to_stream_packs_each_groups_real_tokens_in_row_order_and_to_rows_puts_them_back():
    values = jnp.arange(MASK.size).reshape(MASK.shape) + 100
    one = pack(jnp.asarray(MASK), groups=1, capacity=10)
    stream = to_stream(values, one)
    assert stream.shape == (1, 10)
    real = values[MASK != 0]
    np.testing.assert_array_equal(stream[0, :real.size], real)
    np.testing.assert_array_equal(jnp.where(MASK != 0, to_rows(stream, one), -1), jnp.where(MASK != 0, values, -1))

    two = pack(jnp.asarray(MASK), groups=2, capacity=5)
    stream = to_stream(values, two)
    assert stream.shape == (2, 5)
    np.testing.assert_array_equal(stream[0], [101, 102, 103, 105, 106])
    np.testing.assert_array_equal(stream[1, :4], [112, 113, 114, 115])
    back = to_rows(stream, two)
    np.testing.assert_array_equal(jnp.where(MASK != 0, back, -1), jnp.where(MASK != 0, values, -1))
    # Trailing axes travel with their token.
    features = jnp.stack([values, -values], axis=-1)
    np.testing.assert_array_equal(to_stream(features, two)[..., 1], -stream)


def test_pack_needs_groups_that_divide_the_rows():
    with pytest.raises(ValueError, match="groups=3"):
        pack(jnp.asarray(MASK), groups=3, capacity=4)


def test_packed_hidden_states_equal_the_padded_ones_on_real_tokens():
    config = ModelConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=8)
    params = init_params(config, jax.random.key(0))
    segments = jnp.asarray(np.repeat(MASK, 2, axis=1))
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 61, segments.shape)) * segments
    positions = positions_from_segment_ids(segments)
    padded, _ = hidden_states(params, tokens, positions, segments, config=config)
    packing = pack(segments, groups=2, capacity=10)
    packed, _ = hidden_states(params, tokens, positions, segments, config=config, packing=packing)
    assert packed.shape == (2, 10, 32)
    real = np.asarray(segments) != 0
    np.testing.assert_allclose(np.asarray(to_rows(packed, packing))[real], np.asarray(padded)[real], atol=1e-5)


def test_packed_rotary_scaling_sees_the_largest_position_of_the_rows():
    """Dynamic NTK stretches its base by the call's largest position: with packing, as without it, that
    of the rows (here a pad run's 7, past max_position_embeddings = 6; the real tokens reach 5)."""
    config = ModelConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=8, max_position_embeddings=6,
                         rope=RopeConfig(rope_type="dynamic", params=(("factor", 64.0),)))
    params = init_params(config, jax.random.key(0))
    segments = jnp.asarray(np.repeat(MASK, 2, axis=1))
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 61, segments.shape)) * segments
    positions = positions_from_segment_ids(segments)
    real = np.asarray(segments) != 0
    assert int(positions.max()) == 7 and int(positions[real].max()) == 5
    padded, _ = hidden_states(params, tokens, positions, segments, config=config)
    unscaled, _ = hidden_states(params, tokens, jnp.where(real, positions, 0), segments, config=config)
    packing = pack(segments, groups=2, capacity=10)
    packed, _ = hidden_states(params, tokens, positions, segments, config=config, packing=packing)
    packed = np.asarray(to_rows(packed, packing))[real]
    np.testing.assert_allclose(packed, np.asarray(padded)[real], atol=1e-5)
    assert np.abs(packed - np.asarray(unscaled)[real]).max() > 1e-3


def test_capacity_holds_the_largest_group_of_any_micro_batch_rounded_up_to_a_bucket():
    segments = np.zeros((4, 10), np.int32)
    for row, length in enumerate([10, 3, 6, 2]):
        segments[row, :length] = 1
    responses = segments[:, 5:]
    in_order = np.arange(4)[None]
    # The whole batch in one stream: 21 real tokens of 40 slots, 6 of 20 response slots; buckets of 5 and 3.
    assert capacity(segments, responses, in_order, micro_batch=4, groups=1, buckets=8) == Capacity(1, 25, 6)
    # Two streams of rows {0, 1} and {2, 3}: the larger holds 13 tokens and 5 response tokens (buckets of 5, 3).
    assert capacity(segments, responses, in_order, micro_batch=4, groups=2, buckets=4) == Capacity(2, 15, 6)
    # Micro-batches of two rows of a shuffled order: rows (0, 2) hold 16 tokens and 6 response tokens.
    shuffled = np.array([[1, 3, 0, 2]])
    assert capacity(segments, responses, shuffled, micro_batch=2, groups=1, buckets=20) == Capacity(1, 16, 6)
    # Nothing to save: no packing.
    assert capacity(np.ones_like(segments), np.ones_like(responses), in_order, micro_batch=4, groups=1,
                    buckets=8) is None


def test_capacity_rejects_micro_batches_the_groups_do_not_divide():
    segments, responses = np.ones((4, 6), np.int32), np.ones((4, 3), np.int32)
    with pytest.raises(ValueError, match="micro_batch=2"):
        capacity(segments, responses, np.arange(4)[None], micro_batch=2, groups=4, buckets=8)
    with pytest.raises(ValueError, match="buckets=0"):
        capacity(segments, responses, np.arange(4)[None], micro_batch=4, groups=1, buckets=0)
