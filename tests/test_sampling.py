"""The sampler: greedy parity with transformers, log-probs, distributions, end handling, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from primejax.models import forward, load_hf_checkpoint
from primejax.sampling import SamplingParams, bucket, generate, next_token, pad_prompts, sampler
from primejax.tools.check_logits import hf_greedy, random_batch

NEW = 12


@pytest.fixture(scope="module")
def model(hf_checkpoint):
    return load_hf_checkpoint(hf_checkpoint("qwen2_gqa2"))


def _prompts(config, seed=1, batch=4, length=20):
    """Left-padded prompts of different lengths (length 20 buckets to 32: extra padding)."""
    return random_batch(config.vocab_size, batch=batch, length=length, seed=seed)


def _run(model, sampling, key=0, **kw):
    config, params = model
    tokens, mask = kw.pop("prompts", None) or _prompts(config)
    with jax.default_matmul_precision("highest"):
        return generate(params, tokens, mask, jax.random.key(key), config=config, sampling=sampling, **kw)


@pytest.mark.parametrize("name", ["qwen2_gqa2", "qwen2_mha_sliding", "llama_tied_bias_linear"])
def test_greedy_equals_transformers_generate(hf_checkpoint, name):
    path = hf_checkpoint(name)
    config, params = load_hf_checkpoint(path)
    tokens, mask = _prompts(config)
    rollout = _run((config, params), SamplingParams(temperature=0.0, max_new_tokens=NEW), prompts=(tokens, mask))
    np.testing.assert_array_equal(np.asarray(rollout.response_tokens), hf_greedy(path, tokens, mask, NEW))


def _teacher_forced_log_probs(model, rollout, transform):
    """log_softmax(transform(logits)) of a full forward over [prompt; response] at the response."""
    config, params = model
    tokens = jnp.concatenate([rollout.prompt_tokens, rollout.response_tokens], 1)
    segments = jnp.concatenate([rollout.prompt_mask, rollout.response_mask], 1)
    positions = jnp.cumsum(segments, 1) - 1
    with jax.default_matmul_precision("highest"):
        logits, _ = jax.jit(forward, static_argnames="config")(params, tokens, positions, segments, config=config)
    prompt_len = rollout.prompt_tokens.shape[1]
    rows = jax.nn.log_softmax(transform(logits[:, prompt_len - 1:-1]), -1)
    return jnp.take_along_axis(rows, rollout.response_tokens[..., None], -1)[..., 0]


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (0.7, 0), (1.3, 5)])
def test_log_probs_equal_teacher_forced_sampling_distribution(model, temperature, top_k):
    rollout = _run(model, SamplingParams(temperature=temperature, top_k=top_k, n=2, max_new_tokens=NEW))

    def transform(logits):
        logits = logits / temperature
        if top_k:
            kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
            logits = jnp.where(logits >= kth, logits, -jnp.inf)
        return logits

    expected = _teacher_forced_log_probs(model, rollout, transform) * rollout.response_mask
    np.testing.assert_allclose(rollout.log_probs, expected, atol=1e-5)
    assert float(jnp.abs(rollout.log_probs).sum()) > 1.0  # real values were compared


def _chi_square(counts, probs):
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


# Critical values of the chi-square distribution at p = 0.001.
CHI2_CRIT = {7: 24.32, 2: 13.82, 299: 385.0}


@pytest.mark.parametrize("vocab, temperature", [(8, 0.7), (300, 1.0)])
def test_draws_follow_the_tempered_softmax(vocab, temperature):
    samples = 40_000
    logits = jax.random.normal(jax.random.key(vocab), (vocab,)) * 1.5
    batch = jnp.broadcast_to(logits, (samples, vocab))
    tokens, _ = jax.jit(next_token, static_argnames="params")(
        jax.random.key(1), batch, SamplingParams(temperature=temperature))
    counts = np.bincount(np.asarray(tokens), minlength=vocab)
    probs = np.asarray(jax.nn.softmax(logits / temperature))
    assert _chi_square(counts, probs) < CHI2_CRIT[vocab - 1]


def test_top_k_and_top_p_never_emit_excluded_tokens():
    logits = jnp.asarray([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -1.5])
    batch = jnp.broadcast_to(logits, (20_000, 8))
    sample = jax.jit(next_token, static_argnames="params")
    probs = np.asarray(jax.nn.softmax(logits))

    tokens, _ = sample(jax.random.key(2), batch, SamplingParams(top_k=3))
    counts = np.bincount(np.asarray(tokens), minlength=8)
    assert counts[3:].sum() == 0
    assert _chi_square(counts[:3], probs[:3] / probs[:3].sum()) < CHI2_CRIT[2]

    cumulative = np.cumsum(probs)  # logits are sorted: the nucleus of p is a prefix
    for top_p in (0.3, 0.6, 0.9):
        size = int(np.searchsorted(cumulative, top_p) + 1)
        tokens, log_probs = sample(jax.random.key(3), batch, SamplingParams(top_p=top_p))
        counts = np.bincount(np.asarray(tokens), minlength=8)
        assert counts[size:].sum() == 0 and counts[:size].all()
        kept = probs[:size] / probs[:size].sum()
        np.testing.assert_allclose(np.exp(log_probs), kept[np.asarray(tokens)], rtol=1e-5)

    tokens, _ = sample(jax.random.key(4), batch, SamplingParams(top_k=4, top_p=0.5))
    assert set(np.unique(tokens)) <= {0, 1, 2}


def test_tokens_of_zero_probability_are_never_drawn():
    logits = jnp.full((20_000, 300), -jnp.inf).at[:, 7].set(0.0).at[:, 131].set(0.5).at[:, 299].set(-0.3)
    tokens, _ = jax.jit(next_token, static_argnames="params")(jax.random.key(5), logits, SamplingParams())
    assert set(np.unique(tokens)) == {7, 131, 299}


def test_end_tokens_set_mask_lengths_and_padding(model):
    sampling = SamplingParams(temperature=0.0, max_new_tokens=NEW, pad_id=0)
    free = np.asarray(_run(model, sampling).response_tokens)
    # Row 0 ends on its first token; row 1 on a later one; other rows may or may not end.
    end_ids = (int(free[0, 0]), int(free[1, 5]))
    rollout = _run(model, sampling.replace(eos_ids=end_ids[:1], stop_ids=end_ids[1:], pad_id=3))
    tokens, mask = np.asarray(rollout.response_tokens), np.asarray(rollout.response_mask)
    for row in range(free.shape[0]):
        hits = np.flatnonzero(np.isin(free[row], end_ids))
        length = hits[0] + 1 if hits.size else NEW
        np.testing.assert_array_equal(mask[row], np.arange(NEW) < length)
        np.testing.assert_array_equal(tokens[row, :length], free[row, :length])
        assert (tokens[row, length:] == 3).all()
        assert rollout.response_lengths[row] == length
        assert bool(rollout.truncated[row]) == (hits.size == 0)
    assert rollout.response_lengths[0] == 1 and rollout.response_lengths[1] <= 6
    assert (rollout.log_probs[mask == 0] == 0).all()


def test_no_end_token_means_truncated_with_all_ones_even_if_pad_is_an_end_id(model):
    rollout = _run(model, SamplingParams(temperature=1.0, max_new_tokens=NEW, eos_ids=(0,), pad_id=0))
    ended = np.asarray(rollout.response_lengths) < NEW
    truncated = np.asarray(rollout.truncated)
    assert ((~ended) | ~truncated).all()
    no_end = ~np.isin(np.asarray(rollout.response_tokens), [0]).any(-1)
    assert (np.asarray(rollout.response_mask)[no_end] == 1).all()
    np.testing.assert_array_equal(truncated, no_end)


def test_same_key_same_output_and_contiguous_groups(model):
    sampling = SamplingParams(temperature=1.0, n=3, max_new_tokens=NEW)
    a, b, c = _run(model, sampling, key=7), _run(model, sampling, key=7), _run(model, sampling, key=8)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.response_tokens, c.response_tokens)
    config, _ = model
    tokens, mask = _prompts(config)
    assert a.prompt_tokens.shape == (12, bucket(tokens.shape[1]))
    for g in range(4):
        for row in range(3 * g, 3 * g + 3):  # rows [g*n, (g+1)*n) belong to prompt g
            np.testing.assert_array_equal(a.prompt_tokens[row, -20:], tokens[g])
            np.testing.assert_array_equal(a.prompt_mask[row, -20:], mask[g])
    greedy = _run(model, sampling.replace(temperature=0.0))
    for g in range(4):
        group = np.asarray(greedy.response_tokens[3 * g:3 * g + 3])
        assert (group == group[0]).all()


def test_prompt_and_response_lengths_share_compiled_programs(model):
    config, params = model
    compiled = sampler.generation_program._cache_size()
    for length, new in ((17, 9), (25, 12), (32, 16)):  # all bucket to prompt 32, response 16
        tokens, mask = _prompts(config, length=length)
        rollout = generate(params, tokens, mask, jax.random.key(0), config=config,
                           sampling=SamplingParams(max_new_tokens=new))
        assert rollout.response_tokens.shape == (4, new)
    assert sampler.generation_program._cache_size() - compiled <= 1


@pytest.mark.parametrize("make, message", [
    (lambda: SamplingParams(n=0), "n=0 must be an integer >= 1"),
    (lambda: SamplingParams(temperature=-0.5), "temperature=-0.5 must be >= 0"),
    (lambda: SamplingParams(top_p=0.0), r"top_p=0.0 must be in \(0, 1\]"),
    (lambda: SamplingParams(top_p=1.5), r"top_p=1.5 must be in \(0, 1\]"),
    (lambda: SamplingParams(top_k=-1), "top_k=-1 must be an integer >= 0"),
    (lambda: SamplingParams(max_new_tokens=0), "max_new_tokens=0 must be"),
    (lambda: pad_prompts([], 0), "prompts is empty"),
    (lambda: pad_prompts([[1, 2], []], 0), "prompt 1 is empty"),
    (lambda: pad_prompts([[1] * 40], 0, length=32), "prompt of 40 tokens is longer than the prompt length 32"),
])
def test_bad_sampling_input_is_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_prompts_are_named(model):
    config, params = model
    tokens, mask = _prompts(config)
    key, sampling = jax.random.key(0), SamplingParams(max_new_tokens=NEW)
    empty_row = mask.copy()
    empty_row[2] = 0
    with pytest.raises(ValueError, match=r"prompt rows \[2\] are empty"):
        generate(params, tokens, empty_row, key, config=config, sampling=sampling)
    with pytest.raises(ValueError, match="must be left-padded"):
        generate(params, tokens, mask[:, ::-1], key, config=config, sampling=sampling)
    with pytest.raises(ValueError, match="exceeds max_len=16"):
        generate(params, tokens, mask, key, config=config, sampling=sampling, max_len=16)
    with pytest.raises(ValueError, match="prompt_tokens is empty"):
        generate(params, tokens[:0], mask[:0], key, config=config, sampling=sampling)


def test_text_in_text_out_with_the_demo_tokenizer():
    from primejax.models import ModelConfig, init_params
    from primejax.sampling import decode_responses, encode_prompts, generate_text
    from primejax.tokenizer import build_demo_tokenizer, demo_corpus

    tokenizer = build_demo_tokenizer(demo_corpus(), vocab_size=512)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, num_layers=2)
    params = init_params(config, jax.random.key(0))
    prompts = ["Compute 2 + 3.", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]]
    ids = encode_prompts(tokenizer, prompts)
    assert tokenizer.decode(ids[0], skip_special_tokens=False) == (
        "<|im_start|>user\nCompute 2 + 3.<|im_end|>\n<|im_start|>assistant\n")
    sampling = SamplingParams(n=2, max_new_tokens=8)
    texts = generate_text(params, config, tokenizer, prompts, jax.random.key(0), sampling)
    assert [len(t) for t in texts] == [2, 2] and all(isinstance(s, str) for t in texts for s in t)
    # The same draw, decoded by hand from the rollout, gives the same texts.
    tokens, mask = pad_prompts(ids, tokenizer.pad_id)
    rollout = generate(params, tokens, mask, jax.random.key(0), config=config,
                       sampling=sampling.replace(eos_ids=tokenizer.eos_ids, pad_id=tokenizer.pad_id))
    assert decode_responses(tokenizer, rollout) == texts[0] + texts[1]
    assert any(texts[0] + texts[1])
