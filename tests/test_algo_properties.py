"""Invariants of primejax.algo on random batches (hypothesis): leave-one-out sums, whitening moments,
the paper's Eq. 4/5 identities, and that masked positions never reach a valid result.

Shapes are fixed (G = 3 prompts × n = 4, R = 8) so each function compiles once; hypothesis draws
lengths, scores and values.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from primejax import algo

G, N, R, P, V = 3, 4, 8, 3, 11
B = G * N
ACCS = [0.0, 1.0, 0.25, 0.6]

batches = st.fixed_dictionaries({
    "lengths": st.lists(st.integers(1, R), min_size=B, max_size=B),
    "acc": st.lists(st.sampled_from(ACCS), min_size=B, max_size=B),
    "seed": st.integers(0, 2**31 - 1),
})
property_settings = settings(max_examples=40, deadline=None)


def make_batch(lengths, acc, seed):
    rng = np.random.default_rng(seed)
    mask = np.arange(R)[None, :] < np.asarray(lengths)[:, None]
    return {
        "mask": mask,
        "acc": np.asarray(acc, np.float32),
        "prm": rng.normal(-2.0, 1.0, (B, R)).astype(np.float32),
        "ref": rng.normal(-2.0, 1.0, (B, R)).astype(np.float32),
        "old": rng.normal(-1.5, 0.5, (B, R)).astype(np.float32),
        "new": rng.normal(-1.5, 0.5, (B, R)).astype(np.float32),
        "entropy": rng.uniform(0.0, 2.0, (B, R)).astype(np.float32),
        "logits": rng.normal(0.0, 2.0, (B, P + R, V)).astype(np.float32),
        "ids": rng.integers(0, V, (B, P + R)).astype(np.int32),
    }


def poison(batch):
    """NaN at every masked response position of every per-token input, and in the logit rows that
    score masked tokens."""
    mask = batch["mask"]
    out = dict(batch)
    for key in ("prm", "ref", "old", "new", "entropy"):
        out[key] = np.where(mask, batch[key], np.nan).astype(np.float32)
    logits = batch["logits"].copy()
    scoring_rows = np.zeros((B, P + R), bool)
    scoring_rows[:, P - 1:-1] = ~mask
    logits[scoring_rows] = np.nan
    out["logits"] = logits
    return out


def everything(b):
    """Every masked function of primejax.algo on one batch; token-level outputs are [B, R]."""
    mask, acc = b["mask"], b["acc"]
    out = {}
    lp = algo.response_log_probs(b["logits"], b["ids"], P, mask)
    out["log_probs"], out["entropy"] = lp, algo.response_entropy(b["logits"], P, mask)
    official, q = algo.official_scores(b["prm"], b["ref"], mask)
    out["official_token"] = official
    out["official_whole"] = algo.official_scores(b["prm"], b["ref"], mask, granularity="whole")[0]
    recipe, q_recipe = algo.recipe_scores(b["prm"], b["ref"], mask, acc, beta=0.05)
    out["recipe"], out["q_recipe"] = recipe, q_recipe
    out["recipe_lambda"] = algo.recipe_scores(b["prm"], b["ref"], mask, acc, lam=0.9, use_gt=True)[0]
    rm = algo.normalize_process_rewards(official)
    out["rm"] = rm
    out["rm_per_shard"] = algo.normalize_process_rewards(official, shards=G)
    out["implicit_values"] = algo.implicit_values(0.05 * q, mask)
    for name in algo.PRM_LOSSES.names():
        q_bc, acc_bc = algo.group_statistics(q, acc, mask, N)
        out[f"prm_{name}"] = algo.PRM_LOSSES.bind(name, beta=0.05)(q, acc, mask, q_bc, acc_bc)
    out["pairwise_accuracy"] = algo.pairwise_accuracy(rm, acc, mask, N)
    out["absolute_accuracy"] = algo.absolute_accuracy(rm, acc, mask)
    value_inputs = algo.AdvantageInputs(acc, mask, 0.05 * q)
    for name in algo.ADVANTAGE_ESTIMATORS.names():
        inputs = value_inputs if name == "prime_value" else algo.AdvantageInputs(acc, mask, rm)
        out[f"adv_{name}"], out[f"ret_{name}"] = algo.ADVANTAGE_ESTIMATORS.get(name)(inputs, N)
    advantages = out["adv_rloo"]
    for agg in algo.AGGREGATIONS:
        loss, metrics = algo.ppo_clip_loss(b["new"], b["old"], advantages, mask, dual_clip=3.0,
                                           log_ratio_clamp=20.0, agg=agg)
        out[f"ppo_{agg}"] = loss
        out.update({f"ppo_{agg}_{k}": v for k, v in metrics.items()})
        out[f"entropy_{agg}"] = algo.entropy_bonus(b["entropy"], mask, agg=agg)
    for estimator in algo.KL_ESTIMATORS.names():
        out[f"kl_{estimator}"] = algo.kl_loss(b["new"], b["ref"], mask, estimator=estimator)
        out[f"kl_reward_{estimator}"] = algo.kl_penalty_rewards(b["old"], b["ref"], mask, coef=0.1,
                                                                estimator=estimator)
    return out


everything_jit = jax.jit(everything)


def valid_view(value, mask):
    value = np.asarray(value)
    return value[mask] if value.shape == mask.shape else value


@property_settings
@given(batches)
def test_masked_positions_never_influence_results(drawn):
    """Eagerly and under jit: XLA's optimiser can turn a multiplication by the mask into a select, so
    only the eager run catches masking by multiplication."""
    batch = make_batch(**drawn)
    for label, run in (("eager", everything), ("jit", everything_jit)):
        clean, poisoned = run(batch), run(poison(batch))
        for key in clean:
            a, b = valid_view(clean[key], batch["mask"]), valid_view(poisoned[key], batch["mask"])
            assert np.all(np.isfinite(b)), f"{label}: {key}"
            np.testing.assert_array_equal(a, b, err_msg=f"{label}: {key}")


def test_everything_gives_the_same_numbers_under_jit():
    batch = make_batch([8, 1, 3, 5, 2, 8, 7, 4, 6, 1, 2, 3], [1.0, 0.0, 0.25, 1.0] * 3, seed=7)
    eager, jitted = everything(batch), everything_jit(batch)
    for key in eager:
        np.testing.assert_allclose(np.asarray(eager[key]), np.asarray(jitted[key]), rtol=1e-5, atol=1e-6,
                                   err_msg=key)


@functools.partial(jax.jit, static_argnames="n")
def loo_of_sources(process, acc, mask, n):
    outcome = algo.leave_one_out(algo.place_at_last_token(acc, mask), algo.last_token_mask(mask), n)
    return algo.leave_one_out(process, mask, n), outcome


@property_settings
@given(batches)
def test_leave_one_out_sums_to_zero_over_each_group(drawn):
    batch = make_batch(**drawn)
    process, outcome = loo_of_sources(batch["prm"], batch["acc"], batch["mask"], N)
    outcome_per_row = np.asarray(outcome).sum(-1).reshape(G, N)
    np.testing.assert_allclose(outcome_per_row.sum(-1), 0.0, atol=1e-5)
    # The process source's per-row means also cancel within a group.
    row_means = np.asarray(process).sum(-1) / np.asarray(drawn["lengths"])
    np.testing.assert_allclose(row_means.reshape(G, N).sum(-1), 0.0, atol=1e-4)


@property_settings
@given(batches)
def test_leave_one_out_matches_the_papers_equations(drawn):
    """SPEC §4.2: the outcome LOO is Eq. 4 exactly; the process return at t = 0 (γ = 1) is Eq. 5."""
    batch = make_batch(**drawn)
    process, outcome = loo_of_sources(batch["prm"], batch["acc"], batch["mask"], N)
    acc = batch["acc"].astype(np.float64).reshape(G, N)
    eq4 = acc - (acc.sum(-1, keepdims=True) - acc) / (N - 1)
    np.testing.assert_allclose(np.asarray(outcome).sum(-1), eq4.reshape(-1), atol=1e-5)
    lengths = np.asarray(drawn["lengths"])
    rewards = np.where(batch["mask"], batch["prm"], 0.0).astype(np.float64)
    rho = (rewards.sum(-1) / lengths).reshape(G, N)
    others = ((rho.sum(-1, keepdims=True) - rho) / (N - 1)).reshape(-1)
    eq5_t0 = rewards.sum(-1) - lengths * others
    np.testing.assert_allclose(np.asarray(process).sum(-1), eq5_t0, rtol=1e-5, atol=1e-4)


@property_settings
@given(batches)
def test_whitening_gives_zero_mean_unit_variance_over_valid_tokens(drawn):
    batch = make_batch(**drawn)
    mask = batch["mask"]
    values = np.asarray(jax.jit(algo.masked_whiten)(batch["prm"], mask))[mask]
    assert abs(values.mean()) < 1e-5
    np.testing.assert_allclose(values.var(ddof=1), 1.0, rtol=1e-4)


@property_settings
@given(batches)
def test_batch_norm_bounds_every_process_return(drawn):
    batch = make_batch(**drawn)
    scores, _ = algo.official_scores(batch["prm"], batch["ref"], batch["mask"])
    returns = np.asarray(algo.discounted_returns(jax.jit(algo.normalize_process_rewards)(scores)))
    assert np.abs(returns).max() <= 1.0 + 1e-6
    # the largest one reaches the bound: the scale is the batch's own maximum
    np.testing.assert_allclose(np.abs(returns).max(), 1.0, rtol=1e-4)
