"""primejax.algo pieces the golden files do not pin: the registries, clear errors for bad settings,
log-probs and entropy, the loss options, micro-batch aggregation, and the filters' edge cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from primejax import algo
from primejax.registry import Registry

MASK = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]], bool)
ACC = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
VALUES = np.arange(16, dtype=np.float32).reshape(4, 4) / 10


# --- registries --------------------------------------------------------------------------------

def test_registries_name_every_piece_the_trainer_selects():
    assert algo.ADVANTAGE_ESTIMATORS.names() == ["drgrpo", "grpo", "grpo_prime", "prime_value", "reinforce_pp",
                                                 "reinforce_prime", "rloo", "rloo_outcome"]
    assert algo.PRM_LOSSES.names() == ["bon_acc", "bon_rm", "ce", "dpo"]
    assert algo.PROCESS_REWARDS.names() == ["official", "recipe"]
    assert algo.POLICY_LOSSES.names() == ["ppo_clip"]
    assert algo.KL_ESTIMATORS.names() == ["k1", "k2", "k3"]


def test_unknown_names_and_options_are_errors_that_name_them():
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'gae'; choose one of: drgrpo, grpo"):
        algo.ADVANTAGE_ESTIMATORS.get("gae")
    with pytest.raises(ValueError, match=r"'rloo' takes no option 'gama'; its options are: outcome_coef"):
        algo.ADVANTAGE_ESTIMATORS.bind("rloo", gama=0.9)
    with pytest.raises(ValueError, match="takes no option 'beta'"):
        algo.PROCESS_REWARDS.bind("official", beta=0.05)


def test_users_register_their_own_functions():
    table = Registry("toy", "(x) -> x")

    @table.register("double")
    def double(x, *, factor=2):
        return x * factor

    assert table.bind("double", factor=3)(2) == 6
    assert "double" in table and table.names() == ["double"]
    with pytest.raises(ValueError, match="already registered"):
        table.register("double")(double)


# --- clear errors for bad settings --------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: algo.prime_rloo(algo.AdvantageInputs(ACC, MASK), 1), "n_samples=1 leaves no other sample"),
    (lambda: algo.prime_rloo(algo.AdvantageInputs(ACC, MASK), 3), "batch of 4 rows is not a whole number"),
    (lambda: algo.leave_one_out(VALUES, MASK, 0), "n_samples=0 must be a positive integer"),
    (lambda: algo.grpo_outcome(algo.AdvantageInputs(ACC, MASK), 3), "not a whole number of groups of n_samples=3"),
    (lambda: algo.pairwise_accuracy(VALUES, ACC, MASK, 3), "n_samples=3"),
    (lambda: algo.prime_rloo(algo.AdvantageInputs(ACC, MASK), 2, outcome_coef=0.0), "rloo has no reward source"),
    (lambda: algo.official_scores(VALUES, VALUES, MASK, granularity="step"), "granularity='step' must be one of"),
    (lambda: algo.recipe_scores(VALUES, VALUES, MASK, granularity="whole"), "verl #1322"),
    (lambda: algo.recipe_scores(VALUES, VALUES, MASK, lam=0.9, use_gt=True), "needs the outcome scores acc"),
    (lambda: algo.normalize_process_rewards(VALUES, norm="max"), "norm='max' must be one of"),
    (lambda: algo.normalize_process_rewards(VALUES, shards=3), "shards=3 must be a positive integer dividing"),
    (lambda: algo.normalize_process_rewards(VALUES, shards=2, axis_name="data"), "both set the scope"),
    (lambda: algo.ppo_clip_loss(VALUES, VALUES, VALUES, MASK, dual_clip=1.0), "dual_clip=1.0 must be > 1"),
    (lambda: algo.aggregate_loss(VALUES, MASK, "sum"), "agg='sum' must be one of"),
    (lambda: algo.accuracy_filter(ACC, 2, lower=0.9, upper=0.1), "lower=0.9, upper=0.1"),
    (lambda: algo.truncation_filter(MASK.sum(-1), 2, max_response_length=4, rule="strict"), "rule='strict'"),
    (lambda: algo.oversample_select(jnp.ones(2, bool), 2, oversample_factor=0.5), "oversample_factor=0.5"),
    (lambda: algo.PRM_LOSSES.get("dpo")(VALUES, ACC, MASK), "needs q_bc and acc_bc"),
    (lambda: algo.response_log_probs(jnp.zeros((4, 6, 3)), jnp.zeros((4, 6), int), 0), "prompt_length=0"),
    (lambda: algo.kl_loss(VALUES, VALUES, MASK, estimator="k4"), "unknown KL estimator 'k4'"),
])
def test_bad_settings_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        call()


# --- log-probs and entropy ----------------------------------------------------------------------

def test_response_log_probs_and_entropy_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (3, 7, 5)).astype(np.float32)
    ids = rng.integers(0, 5, (3, 7))
    prompt_length = 3
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = np.take_along_axis(log_softmax[:, 2:6], ids[:, 3:, None], -1)[..., 0]
    np.testing.assert_allclose(algo.response_log_probs(logits, ids, prompt_length), expected, atol=1e-5)
    probs = np.exp(log_softmax[:, 2:6])
    np.testing.assert_allclose(algo.response_entropy(logits, prompt_length), -(probs * log_softmax[:, 2:6]).sum(-1),
                               atol=1e-5)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
    masked = np.asarray(algo.response_log_probs(logits, ids, prompt_length, mask))
    np.testing.assert_array_equal(masked[~mask], 0.0)


def test_log_prob_gradient_is_softmax_minus_onehot():
    logits = jnp.array([[0.5, -1.0, 2.0]])
    grad = jax.grad(lambda x: algo.token_log_probs(x, jnp.array([1])).sum())(logits)
    np.testing.assert_allclose(grad, np.eye(3)[[1]] - jax.nn.softmax(logits), atol=1e-6)


# --- policy loss options --------------------------------------------------------------------------

def token_loss(ratio, advantage, **options):
    log_probs = jnp.log(jnp.array([[ratio]], jnp.float32))
    loss, metrics = algo.ppo_clip_loss(log_probs, jnp.zeros((1, 1)), jnp.array([[advantage]]), jnp.ones((1, 1), bool),
                                       **options)
    return float(loss), {k: float(v) for k, v in metrics.items()}


def test_ppo_clip_bounds_by_hand():
    assert token_loss(1.5, 1.0)[0] == pytest.approx(-1.2)                       # clipped at 1 + ε
    assert token_loss(0.5, 1.0)[0] == pytest.approx(-0.5)                       # pessimistic side unclipped
    assert token_loss(0.5, -1.0)[0] == pytest.approx(0.8)                       # clipped at 1 − ε
    assert token_loss(1.5, 1.0, clip_ratio_high=0.28)[0] == pytest.approx(-1.28)
    assert token_loss(0.5, -1.0, clip_ratio_low=0.1)[0] == pytest.approx(0.9)
    _, metrics = token_loss(1.5, 1.0)
    assert metrics["pg_clipfrac"] == 1.0 and metrics["ppo_kl"] == pytest.approx(-np.log(1.5))


def test_dual_clip_caps_the_loss_of_negative_advantages():
    assert token_loss(5.0, -1.0)[0] == pytest.approx(5.0)
    loss, metrics = token_loss(5.0, -1.0, dual_clip=3.0)
    assert loss == pytest.approx(3.0) and metrics["pg_clipfrac_lower"] == 1.0
    assert token_loss(5.0, 1.0, dual_clip=3.0)[0] == pytest.approx(-1.2)    # positive advantages untouched


def test_log_ratio_clamp_keeps_the_ratio_finite():
    loss, metrics = algo.ppo_clip_loss(jnp.array([[60.0]]), jnp.array([[0.0]]), jnp.array([[-1.0]]),
                                       jnp.ones((1, 1), bool), log_ratio_clamp=20.0)
    assert float(loss) == pytest.approx(np.exp(20.0), rel=1e-5)
    assert float(metrics["ppo_kl"]) == pytest.approx(-20.0)


def test_kl_estimators_by_hand():
    log_probs, ref = jnp.array([[-1.0]]), jnp.array([[-1.5]])
    d = 0.5
    assert float(algo.KL_ESTIMATORS.get("k1")(log_probs, ref)[0, 0]) == pytest.approx(d)
    assert float(algo.KL_ESTIMATORS.get("k2")(log_probs, ref)[0, 0]) == pytest.approx(d * d / 2)
    assert float(algo.KL_ESTIMATORS.get("k3")(log_probs, ref)[0, 0]) == pytest.approx(np.exp(-d) + d - 1, rel=1e-5)
    penalty = algo.kl_penalty_rewards(log_probs, ref, jnp.ones((1, 1), bool), coef=0.1)
    assert float(penalty[0, 0]) == pytest.approx(-0.05)


@pytest.mark.parametrize("agg", algo.AGGREGATIONS)
def test_micro_batches_with_global_counts_sum_to_the_mini_batch_loss(agg):
    rng = np.random.default_rng(1)
    losses = rng.normal(size=(6, 5)).astype(np.float32)
    mask = np.arange(5)[None, :] < np.array([5, 1, 3, 2, 4, 5])[:, None]
    full = algo.aggregate_loss(losses, mask, agg)
    counts = {"num_tokens": mask.sum(), "num_sequences": mask.shape[0]}
    parts = sum(algo.aggregate_loss(losses[i:i + 2], mask[i:i + 2], agg, **counts) for i in range(0, 6, 2))
    np.testing.assert_allclose(parts, full, rtol=1e-6)


def test_aggregations_by_hand():
    losses = np.array([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]], np.float32)
    mask = np.array([[1, 1, 1], [1, 0, 0]], bool)
    assert float(algo.aggregate_loss(losses, mask, "token-mean")) == pytest.approx(10 / 4)
    assert float(algo.aggregate_loss(losses, mask, "seq-mean-token-sum")) == pytest.approx((6 + 4) / 2)
    assert float(algo.aggregate_loss(losses, mask, "seq-mean-token-mean")) == pytest.approx((2 + 4) / 2)
    assert float(algo.aggregate_loss(losses, mask, "seq-mean-token-sum-norm")) == pytest.approx(10 / 3)
    assert float(algo.aggregate_loss(losses, mask, "seq-mean-token-sum-norm", loss_scale_factor=5)) == 2.0


# --- batch_norm scope ----------------------------------------------------------------------------

def test_batch_norm_scope_global_or_per_shard():
    scores = np.where(MASK, VALUES, 0.0)
    bound = lambda x: np.abs(np.flip(np.cumsum(np.flip(np.asarray(x), -1), -1), -1)).max(-1)
    whole = algo.normalize_process_rewards(scores)
    assert bound(whole).max() == pytest.approx(1.0, rel=1e-5)
    per_shard = bound(algo.normalize_process_rewards(scores, shards=2))
    assert per_shard[:2].max() == pytest.approx(1.0, rel=1e-5) and per_shard[2:].max() == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_array_equal(algo.normalize_process_rewards(scores, norm="none"), scores)


# --- PRM accuracy and filters ----------------------------------------------------------------------

def test_pairwise_accuracy_weights_pairs_by_their_accuracy_gap():
    acc = np.array([1.0, 0.0, 0.5, 0.5, 1.0, 0.0], np.float32)
    mask = np.ones((6, 1), bool)
    right = np.array([[2.0], [1.0], [0.0], [3.0], [0.0], [1.0]], np.float32)  # group 1 wrong, group 2 tied acc
    # n = 2: groups (1, 0) ranked right, (0.5, 0.5) -> 0.5, (1, 0) ranked wrong.
    assert float(algo.pairwise_accuracy(right, acc, mask, 2)) == pytest.approx((1 + 0.5 + 0) / 3)
    # n = 3: acc [1, 0, .5], scores [2, 1, 0]: pairs (1,0) right w 1, (1,.5) right w .5, (0,.5) wrong w .5
    # -> 1.5 / 2; acc [.5, 1, 0], scores [3, 0, 1]: (.5,1) wrong w .5, (.5,0) right w .5, (1,0) wrong w 1
    # -> 0.5 / 2.
    assert float(algo.pairwise_accuracy(right, acc, mask, 3)) == pytest.approx((0.75 + 0.25) / 2)


def test_truncation_rules_differ_by_one_token():
    lengths = np.array([11, 3, 12, 3])
    official = algo.truncation_filter(lengths, 2, max_response_length=12, rule="official")
    recipe = algo.truncation_filter(lengths, 2, max_response_length=12, rule="recipe")
    np.testing.assert_array_equal(official, [True, False])
    np.testing.assert_array_equal(recipe, [False, False])


def test_accuracy_band_is_inclusive():
    acc = np.array([1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0], np.float32)[:15]
    keep = algo.accuracy_filter(acc, 5, lower=0.2, upper=0.8)  # group accuracies 0.2, 0.8, 0.2
    np.testing.assert_array_equal(keep, [True, True, True])


def test_oversample_select_puts_passing_groups_first_in_order():
    keep = jnp.array([False, True, False, True])
    np.testing.assert_array_equal(algo.oversample_select(keep, 2, oversample_factor=1.0), [2, 3, 6, 7, 0, 1, 4, 5])
    np.testing.assert_array_equal(algo.oversample_select(keep, 2, oversample_factor=2.0), [2, 3, 6, 7])
    np.testing.assert_array_equal(algo.oversample_select(keep, 2, oversample_factor=1.5), [2, 3, 6, 7, 0])
