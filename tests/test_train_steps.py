"""The trainer's step functions: chunked log-probs, the PRM and policy updates, gradient accumulation."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from primejax import algo
from primejax.models import ModelConfig, forward, init_params, positions_from_segment_ids
from primejax.sft import sft_step
from primejax.train.logprobs import Sequences, chunked_log_probs
from primejax.train.packing import Capacity
from primejax.train.steps import X86_HOST, AdvantageOptions, ModelState, PolicyOptions, PrmOptions, advantages, \
    cpu_compiler_options, make_steps, policy_update, prm_update, score, turns_ynnpack_off, unrolls_update_layers

CONFIG = ModelConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                     head_dim=8, max_position_embeddings=64)
PROMPT, RESPONSE, ROWS, N = 6, 10, 8, 4
# AdamW for the update tests. Its epsilon keeps near-zero gradients from taking a full step, so that
# float rounding in how micro-batches are summed cannot move a parameter by a whole learning rate.
ADAMW = optax.adamw(1e-2, eps=1e-4)


@pytest.fixture(scope="module")
def batch():
    """Left-padded prompts of different lengths, responses ending at different places (one truncated)."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, CONFIG.vocab_size, (ROWS, PROMPT + RESPONSE)).astype(np.int32)
    prompt_mask = np.ones((ROWS, PROMPT), np.int32)
    for row, pad in enumerate([0, 1, 3, 0, 2, 0, 5, 1]):
        prompt_mask[row, :pad] = 0
    lengths = np.array([10, 3, 7, 1, 9, 10, 4, 6])
    response_mask = (np.arange(RESPONSE) < lengths[:, None]).astype(np.int32)
    tokens[:, :PROMPT] *= prompt_mask
    tokens[:, PROMPT:] *= response_mask
    return Sequences(jnp.asarray(tokens), jnp.asarray(np.concatenate([prompt_mask, response_mask], 1)),
                     jnp.asarray(response_mask))


@pytest.fixture(scope="module")
def params():
    return init_params(CONFIG, jax.random.key(0))


def _full_log_probs(params, batch):
    positions = positions_from_segment_ids(batch.segment_ids)
    logits, _ = forward(params, batch.tokens, positions, batch.segment_ids, config=CONFIG)
    return algo.response_log_probs(logits, batch.tokens, PROMPT), algo.response_entropy(logits, PROMPT)


@pytest.mark.parametrize("chunk", [1, 3, 10, 64])
def test_chunked_log_probs_equal_the_full_logits(params, batch, chunk):
    log_probs, entropy = jax.jit(partial(chunked_log_probs, config=CONFIG, chunk=chunk))(params, batch)
    full_log_probs, full_entropy = _full_log_probs(params, batch)
    np.testing.assert_allclose(log_probs, full_log_probs, atol=1e-5)
    np.testing.assert_allclose(entropy, full_entropy, atol=1e-5)


@pytest.mark.parametrize("keep_logits", [False, True], ids=["remade", "kept"])
def test_chunked_log_probs_gradient_equals_the_full_logits(params, batch, keep_logits):
    """Log-probs and entropy together, so that both cotangents reach the head's backward pass."""
    def objective(stats_fn, p):
        log_probs, entropy = stats_fn(p)
        return jnp.sum(jnp.where(batch.response_mask, log_probs - 0.1 * entropy, 0.0))

    chunked = jax.grad(partial(objective, lambda p: chunked_log_probs(p, batch, config=CONFIG, chunk=3,
                                                                      keep_logits=keep_logits)))(params)
    full = jax.grad(partial(objective, lambda p: _full_log_probs(p, batch)))(params)
    for a, b in zip(jax.tree.leaves(chunked), jax.tree.leaves(full)):
        np.testing.assert_allclose(a, b, atol=2e-5)


# Two streams of 4 rows: the larger holds 45 real tokens of 64 and 29 response tokens of 40.
PACKED = Capacity(groups=2, tokens=52, responses=32)


@pytest.mark.parametrize("keep_logits", [False, True], ids=["remade", "kept"])
def test_packed_log_probs_and_gradients_equal_the_padded_ones(params, batch, keep_logits):
    def objective(p, capacity):
        log_probs, entropy = chunked_log_probs(p, batch, config=CONFIG, chunk=3, keep_logits=keep_logits,
                                               capacity=capacity)
        return jnp.sum(jnp.where(batch.response_mask, log_probs - 0.1 * entropy, 0.0)), (log_probs, entropy)

    grad = jax.jit(jax.grad(objective, has_aux=True), static_argnums=1)
    (padded, (lp, entropy)), (packed, (packed_lp, packed_entropy)) = grad(params, None), grad(params, PACKED)
    mask = np.asarray(batch.response_mask) != 0
    np.testing.assert_allclose(np.asarray(packed_lp)[mask], np.asarray(lp)[mask], atol=1e-5)
    np.testing.assert_allclose(np.asarray(packed_entropy)[mask], np.asarray(entropy)[mask], atol=1e-5)
    assert not np.asarray(packed_lp)[~mask].any() and not np.asarray(packed_entropy)[~mask].any()
    for a, b in zip(jax.tree.leaves(packed), jax.tree.leaves(padded)):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_score_gives_every_model_in_one_call(params, batch):
    other = init_params(CONFIG, jax.random.key(1))
    configs = dict.fromkeys(("policy", "reference", "prm"), CONFIG)
    out = jax.jit(partial(score, configs=configs, chunk=4))({"policy": params, "reference": other, "prm": params},
                                                            batch)
    assert sorted(out) == ["entropy", "policy_log_probs", "prm_log_probs", "reference_log_probs"]
    np.testing.assert_allclose(out["policy_log_probs"], _full_log_probs(params, batch)[0], atol=1e-5)
    np.testing.assert_allclose(out["reference_log_probs"], _full_log_probs(other, batch)[0], atol=1e-5)
    np.testing.assert_array_equal(out["policy_log_probs"], out["prm_log_probs"])
    rows = jax.jit(partial(score, configs=configs, chunk=4, micro_batch=2))(
        {"policy": params, "reference": other, "prm": params}, batch)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), rows, out)


def _prm_run(params, batch, micro, mini=4):
    optimizer = ADAMW
    state = ModelState(params, optimizer.init(params))
    ref = _full_log_probs(init_params(CONFIG, jax.random.key(1)), batch)[0]
    acc = jnp.asarray([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.5, 1.0])
    fn = jax.jit(partial(prm_update, config=CONFIG, optimizer=optimizer, chunk=4,
                         options=PrmOptions(mini_batch=mini, micro_batch=micro)))
    return fn(state, batch, ref, acc, None, None), ref, acc


def test_prm_update_after_scores_each_mini_batch_before_its_step(params, batch):
    (state, log_probs, metrics), ref, acc = _prm_run(params, batch, micro=2)
    initial = _full_log_probs(params, batch)[0]
    # Mini-batch 0 is scored by the initial PRM; mini-batch 1 by the PRM after one step.
    np.testing.assert_allclose(log_probs[:4], initial[:4], atol=1e-5)
    assert not np.allclose(log_probs[4:], initial[4:], atol=1e-4)
    expected_loss = np.mean([algo.prm_ce_loss(log_probs[s] - ref[s], acc[s], batch.response_mask[s], beta=0.05)
                             for s in (slice(0, 4), slice(4, 8))])
    np.testing.assert_allclose(metrics["prm/loss"], expected_loss, rtol=1e-5)
    assert np.isfinite(metrics["prm/grad_norm"]) and np.isfinite(metrics["prm/param_norm"])


def test_prm_update_micro_batches_accumulate_to_the_mini_batch(params, batch):
    (whole, lp_whole, m_whole), _, _ = _prm_run(params, batch, micro=4)
    (split, lp_split, m_split), _, _ = _prm_run(params, batch, micro=1)
    np.testing.assert_allclose(lp_whole, lp_split, atol=1e-5)
    np.testing.assert_allclose(m_whole["prm/loss"], m_split["prm/loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(split.params)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def _policy_run(params, batch, options):
    optimizer = ADAMW
    state = ModelState(params, optimizer.init(params))
    old = _full_log_probs(params, batch)[0]
    adv = jnp.where(batch.response_mask, jnp.linspace(-0.5, 1.0, ROWS)[:, None], 0.0)
    fn = jax.jit(partial(policy_update, config=CONFIG, optimizer=optimizer, chunk=4, options=options))
    return fn(state, batch, old, old, adv, jax.random.key(3)), adv


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean"])
def test_policy_update_micro_batches_accumulate_to_the_mini_batch(params, batch, agg):
    options = PolicyOptions(agg=agg, mini_batch=4, micro_batch=4, entropy_coef=0.01, kl_coef=0.1)
    (whole, m_whole), _ = _policy_run(params, batch, options)
    (split, m_split), _ = _policy_run(params, batch, options.__class__(**{**options.__dict__, "micro_batch": 1}))
    for key in ("actor/pg_loss", "actor/entropy_loss", "actor/kl_loss", "actor/grad_norm"):
        np.testing.assert_allclose(m_whole[key], m_split[key], rtol=1e-4, atol=1e-7)
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(split.params)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_policy_update_first_step_loss_is_the_ppo_loss_of_the_mini_batch(params, batch):
    options = PolicyOptions(mini_batch=8, micro_batch=2, shuffle=False)
    (state, metrics), adv = _policy_run(params, batch, options)
    old = _full_log_probs(params, batch)[0]
    # One mini-batch of the whole batch at ratio 1: the loss is −(seq-mean of token-mean A).
    expected, _ = algo.ppo_clip_loss(old, old, adv, batch.response_mask)
    np.testing.assert_allclose(metrics["actor/pg_loss"], expected, rtol=1e-5)
    # The update raises the log-probs of positive-advantage rows and lowers the negative ones.
    new = _full_log_probs(state.params, batch)[0]
    change = np.asarray(algo.masked_mean(new - old, batch.response_mask, axis=-1))
    assert change[-1] > 0 > change[0]


def test_packed_updates_equal_the_padded_ones(params, batch):
    mask = np.asarray(batch.response_mask) != 0
    configs = dict.fromkeys(("policy", "reference"), CONFIG)
    scored = {capacity: jax.jit(partial(score, configs=configs, chunk=4, capacity=capacity))(
        {"policy": params, "reference": init_params(CONFIG, jax.random.key(1))}, batch) for capacity in (None, PACKED)}
    for name, values in scored[None].items():
        np.testing.assert_allclose(np.asarray(scored[PACKED][name])[mask], np.asarray(values)[mask], atol=1e-5)

    ref, acc = scored[None]["reference_log_probs"], jnp.asarray([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.5, 1.0])
    prm = {capacity: jax.jit(partial(prm_update, config=CONFIG, optimizer=ADAMW, chunk=4, capacity=capacity,
                                     options=PrmOptions(mini_batch=4, micro_batch=4)))(
        ModelState(params, ADAMW.init(params)), batch, ref, acc, None, None) for capacity in (None, PACKED)}
    np.testing.assert_allclose(np.asarray(prm[PACKED][1])[mask], np.asarray(prm[None][1])[mask], atol=1e-5)
    np.testing.assert_allclose(prm[PACKED][2]["prm/loss"], prm[None][2]["prm/loss"], rtol=1e-5)

    old = scored[None]["policy_log_probs"]
    adv = jnp.where(batch.response_mask, jnp.linspace(-0.5, 1.0, ROWS)[:, None], 0.0)
    options = PolicyOptions(mini_batch=4, micro_batch=2, epochs=2, entropy_coef=0.01, kl_coef=0.1)
    policy = {capacity: jax.jit(partial(policy_update, config=CONFIG, optimizer=ADAMW, chunk=4, options=options,
                                        capacity=capacity))(
        ModelState(params, ADAMW.init(params)), batch, old, ref, adv, jax.random.key(3)) for capacity in (None, PACKED)}
    for key in ("actor/pg_loss", "actor/entropy_loss", "actor/kl_loss", "actor/grad_norm"):
        np.testing.assert_allclose(policy[PACKED][1][key], policy[None][1][key], rtol=1e-4, atol=1e-7)
    for updated in (prm, policy):
        for a, b in zip(jax.tree.leaves(updated[PACKED][0].params), jax.tree.leaves(updated[None][0].params)):
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_advantages_give_rewards_accuracy_and_whitened_advantages(params, batch):
    prm = _full_log_probs(init_params(CONFIG, jax.random.key(2)), batch)[0]
    ref = _full_log_probs(params, batch)[0]
    acc = jnp.asarray([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.5, 1.0])
    adv, metrics = jax.jit(partial(advantages, options=AdvantageOptions(n=N)))(prm, ref, acc, batch.response_mask)
    scores, q = algo.official_scores(prm, ref, batch.response_mask)
    expected, _ = algo.prime_rloo(algo.AdvantageInputs(acc, batch.response_mask, algo.normalize_process_rewards(scores)),
                                  N)
    np.testing.assert_allclose(adv, expected, atol=1e-6)
    np.testing.assert_allclose(metrics["prm/accuracy"], algo.pairwise_accuracy(q, acc, batch.response_mask, N))
    np.testing.assert_allclose(metrics["reward/outcome_mean"], acc.mean())
    outcome_only, metrics = jax.jit(partial(advantages, options=AdvantageOptions(n=N, use_process=False)))(
        None, None, acc, batch.response_mask)
    assert "prm/accuracy" not in metrics
    expected, _ = algo.prime_rloo(algo.AdvantageInputs(acc, batch.response_mask), N)
    np.testing.assert_allclose(outcome_only, expected, atol=1e-6)


def test_sft_step_lowers_the_response_loss_and_ignores_the_prompt(params, batch):
    optimizer = optax.adam(1e-2)
    fn = jax.jit(partial(sft_step, config=CONFIG, optimizer=optimizer, micro_batch=4, chunk=4))
    state = ModelState(params, optimizer.init(params))
    losses = []
    for _ in range(5):
        state, metrics = fn(state, batch)
        losses.append(float(metrics["sft/loss"]))
    assert losses[-1] < losses[0]
    lp = _full_log_probs(params, batch)[0]
    expected = -np.sum(np.where(batch.response_mask, lp, 0)) / np.sum(batch.response_mask)
    np.testing.assert_allclose(losses[0], expected, rtol=1e-5)


def test_cpu_products_choose_the_library_of_cpu_products_only_and_change_no_result():
    eigen = cpu_compiler_options("eigen", "float32", "cpu")
    onednn = cpu_compiler_options("onednn", "float32", "cpu")
    assert eigen and onednn and onednn != eigen
    assert cpu_compiler_options("eigen", "bfloat16", "cpu") == eigen
    assert cpu_compiler_options("auto", "bfloat16", "cpu") == {}
    assert cpu_compiler_options("ynnpack", "float32", "cpu") == {}
    assert cpu_compiler_options("onednn", "float32", "tpu") == cpu_compiler_options("auto", "float32", "gpu") == {}
    assert cpu_compiler_options("auto", "float32", "cpu") == (onednn if X86_HOST else {})

    keys = jax.random.split(jax.random.key(0), 2)
    x, w = jax.random.normal(keys[0], (64, 32)), jax.random.normal(keys[1], (32, 48))

    def fn(x, w):
        return jnp.tanh(x @ w).sum(-1)

    expected = jax.jit(fn)(x, w)
    for options in (eigen, onednn):
        compiled = jax.jit(fn, compiler_options=options).lower(x, w).compile()
        assert "__ynn_fusion" not in compiled.as_text()
        if X86_HOST:
            assert ("__onednn_fusion" in compiled.as_text()) == (options is onednn)
        np.testing.assert_allclose(compiled(x, w), expected, rtol=1e-5, atol=1e-5)


def test_steps_reduce_short_rows_in_two_steps_where_their_options_turn_ynnpack_off(batch):
    """A head dimension of 64: Δ of the attention's backward pass is reduced across 4 slices first,
    kept apart by a barrier, under the Eigen and oneDNN options, and in one step under XLA's defaults."""
    eigen, onednn = cpu_compiler_options("eigen", "float32", "cpu"), cpu_compiler_options("onednn", "float32", "cpu")
    assert turns_ynnpack_off(eigen) and turns_ynnpack_off(onednn)
    assert not turns_ynnpack_off({}) and not turns_ynnpack_off(None)
    config = CONFIG.replace(head_dim=64)
    state = jax.eval_shape(lambda: ModelState(*(lambda p: (p, ADAMW.init(p)))(init_params(config, jax.random.key(0)))))
    rows = jax.ShapeDtypeStruct((ROWS, RESPONSE), jnp.float32)
    for options in (eigen, None):
        steps = make_steps(policy_config=config, prm_config=config, reference_config=config, policy_optimizer=ADAMW,
                           prm_optimizer=ADAMW, prm_options=PrmOptions(mini_batch=8, micro_batch=8),
                           advantage_options=AdvantageOptions(n=N), chunk=4, compiler_options=options,
                           policy_options=PolicyOptions(mini_batch=8, micro_batch=8))
        text = steps.prm_update.lower(state, batch, rows, jax.ShapeDtypeStruct((ROWS,), jnp.float32), None,
                                      None).as_text()
        assert ("optimization_barrier" in text) == (options is eigen)


def test_unrolled_update_layers_change_no_result_and_only_the_updates_unroll(params, batch):
    assert unrolls_update_layers("auto", "cpu") and unrolls_update_layers("unroll", "tpu")
    assert not unrolls_update_layers("auto", "gpu") and not unrolls_update_layers("scan", "cpu")
    ref = _full_log_probs(params, batch)[0]
    acc = jnp.asarray([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.5, 1.0])
    adv = jnp.where(batch.response_mask, jnp.linspace(-0.5, 1.0, ROWS)[:, None], 0.0)

    def arguments(name):
        if name == "score":
            return {"policy": params, "reference": params, "prm": params}, batch
        fresh = ModelState(jax.tree.map(jnp.copy, params), ADAMW.init(params))  # the updates donate it
        if name == "prm_update":
            return fresh, batch, ref, acc, None, None
        return fresh, batch, ref, ref, adv, jax.random.key(3)

    loops, results = {}, {}
    for unroll in (False, True):
        steps = make_steps(policy_config=CONFIG, prm_config=CONFIG, reference_config=CONFIG, policy_optimizer=ADAMW,
                           prm_optimizer=ADAMW, prm_options=PrmOptions(mini_batch=8, micro_batch=8),
                           advantage_options=AdvantageOptions(n=N), chunk=4, unroll_update_layers=unroll,
                           policy_options=PolicyOptions(mini_batch=8, micro_batch=8, shuffle=False))
        for name in ("score", "prm_update", "policy_update"):
            fn = getattr(steps, name)
            loops[unroll, name] = fn.lower(*arguments(name)).as_text().count("stablehlo.while")
        results[unroll] = steps.policy_update(*arguments("policy_update"))
    assert loops[True, "score"] == loops[False, "score"]
    for name in ("prm_update", "policy_update"):
        # The layer loop of the forward and of the backward pass.
        assert loops[True, name] == loops[False, name] - 2
    for a, b in zip(jax.tree.leaves(results[True]), jax.tree.leaves(results[False])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_packed_unrolled_update_makes_the_rotary_tables_once(params, batch):
    """cos and sin are computed once per packed update step, not again in every layer's fusions."""
    step = jax.jit(partial(prm_update, config=CONFIG.replace(unroll_layers=True), optimizer=ADAMW, chunk=4,
                           capacity=PACKED, options=PrmOptions(mini_batch=8, micro_batch=8)))
    state = jax.eval_shape(lambda: ModelState(params, ADAMW.init(params)))
    rows = jax.ShapeDtypeStruct((ROWS, RESPONSE), jnp.float32)
    text = step.lower(state, batch, rows, jax.ShapeDtypeStruct((ROWS,), jnp.float32), None, None).compile(
        compiler_options=cpu_compiler_options("auto", "float32", "cpu")).as_text()
    assert text.count(" cosine(") == 1 and text.count(" sine(") == 1
