"""The paper-only estimators (REINFORCE / GRPO with PRIME, PRIME as value) against their equations
worked out by hand on a small case; no reference code exists for them (SPEC §4.3).

The case: n = 2, two prompts, R = 3.
    row   L   r_o   process rewards r_φ(y_s) on valid tokens
    0     2   1.0   [ 0.2, -0.1]
    1     3   0.0   [ 0.3,  0.1, -0.4]
    2     1   0.5   [ 0.5]
    3     2   0.5   [-0.2,  0.6]
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from primejax import algo

MASK = np.array([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]], bool)
OUTCOME = np.array([1.0, 0.0, 0.5, 0.5], np.float32)
# Padding holds garbage on purpose: it must not matter.
PROCESS = np.array([[0.2, -0.1, 7.0], [0.3, 0.1, -0.4], [0.5, 7.0, 7.0], [-0.2, 0.6, 7.0]], np.float32)
INPUTS = algo.AdvantageInputs(OUTCOME, MASK, PROCESS)


def whiten_by_hand(values):
    valid = values[MASK]
    out = (values - valid.mean()) / np.sqrt(valid.var(ddof=1) + 1e-8)
    return np.where(MASK, out, 0.0)


def run(name, inputs=INPUTS, **options):
    """The estimator eagerly and under jit; both must agree."""
    fn = algo.ADVANTAGE_ESTIMATORS.bind(name, **options)
    eager = fn(inputs, 2)
    jitted = jax.jit(fn, static_argnums=1)(inputs, 2)
    for a, b in zip(eager, jitted):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    return tuple(np.asarray(x) for x in eager)


def test_reinforce_with_prime_is_outcome_plus_process_return():
    # A_t = r_o + Σ_{s≥t} r_s
    expected = np.array([[1.1, 0.9, 0.0], [0.0, -0.3, -0.4], [1.0, 0.0, 0.0], [0.9, 1.1, 0.0]])
    advantages, returns = run("reinforce_prime", whiten=False)
    np.testing.assert_allclose(advantages, expected, atol=1e-6)
    np.testing.assert_allclose(returns, expected, atol=1e-6)
    whitened, _ = run("reinforce_prime")
    np.testing.assert_allclose(whitened, whiten_by_hand(expected), atol=1e-5)


def test_reinforce_with_prime_discounts_the_process_reward_only():
    # γ = 0.5: row 1, t=0: 0 + 0.3 + 0.5·0.1 + 0.25·(−0.4) = 0.25
    expected = np.array([[1.15, 0.9, 0.0], [0.25, -0.1, -0.4], [1.0, 0.0, 0.0], [0.6, 1.1, 0.0]])
    advantages, _ = run("reinforce_prime", gamma=0.5, whiten=False)
    np.testing.assert_allclose(advantages, expected, atol=1e-6)


def test_reinforce_without_process_is_plain_reinforce():
    advantages, _ = run("reinforce_prime", inputs=algo.AdvantageInputs(OUTCOME, MASK), whiten=False)
    np.testing.assert_allclose(advantages, np.where(MASK, OUTCOME[:, None], 0.0), atol=1e-7)


def test_grpo_with_prime_normalises_each_source_by_its_group():
    # Outcome: group 0 [1, 0] -> ±0.5/std, std = sqrt(0.5); group 1 [0.5, 0.5] -> 0 (std 0, eps).
    # Process: ρ = L-averaged rewards; group 0: ρ = [0.05, 0], mean 0.025, std 0.025·√2;
    # group 1: ρ = [0.5, 0.2], mean 0.35, std 0.15·√2. Tokens (r − mean)/std, then Σ_{s≥t}.
    s0, s1 = 0.025 * np.sqrt(2), 0.15 * np.sqrt(2)
    o = 0.5 / np.sqrt(0.5)
    process = np.array([
        [(0.2 - 0.025) / s0 + (-0.1 - 0.025) / s0, (-0.1 - 0.025) / s0, 0],
        [(0.3 + 0.1 - 0.4 - 3 * 0.025) / s0, (0.1 - 0.4 - 2 * 0.025) / s0, (-0.4 - 0.025) / s0],
        [(0.5 - 0.35) / s1, 0, 0],
        [(-0.2 + 0.6 - 2 * 0.35) / s1, (0.6 - 0.35) / s1, 0],
    ])
    outcome = np.array([o, -o, 0.0, 0.0])[:, None]
    expected = np.where(MASK, outcome + process, 0.0)
    # the worked numbers of the docstring case
    np.testing.assert_allclose(expected[1], [-2.828427, -10.606602, -12.727922], atol=1e-5)
    advantages, _ = run("grpo_prime")
    np.testing.assert_allclose(advantages, expected, rtol=1e-4, atol=1e-5)


def test_grpo_with_prime_without_process_equals_outcome_grpo():
    inputs = algo.AdvantageInputs(OUTCOME, MASK)
    np.testing.assert_allclose(run("grpo_prime", inputs=inputs)[0], run("grpo", inputs=inputs)[0], atol=1e-7)


def test_prime_as_value_subtracts_the_implicit_value_of_the_prefix():
    # A_t = r_o − Σ_{s<t} r_s; the return is r_o on every valid token.
    expected = np.array([[1.0, 0.8, 0.0], [0.0, -0.3, -0.4], [0.5, 0.0, 0.0], [0.5, 0.7, 0.0]])
    advantages, returns = run("prime_value", whiten=False)
    np.testing.assert_allclose(advantages, expected, atol=1e-6)
    np.testing.assert_allclose(returns, np.where(MASK, OUTCOME[:, None], 0.0), atol=1e-7)
    np.testing.assert_allclose(run("prime_value")[0], whiten_by_hand(expected), atol=1e-5)


def test_implicit_values_telescope_to_the_token_rewards():
    # r_φ(y_t) = v(y_<t+1) − v(y_<t) (SPEC §2.1)
    values = np.asarray(algo.implicit_values(PROCESS, MASK))
    rewards = np.where(MASK, PROCESS, 0.0)
    np.testing.assert_allclose(np.diff(values, axis=-1)[MASK[:, 1:]], rewards[:, :-1][MASK[:, 1:]], atol=1e-6)
    np.testing.assert_allclose(values[:, 0], 0.0)


def test_prime_as_value_needs_process_rewards():
    with pytest.raises(ValueError, match="prime_value"):
        algo.ADVANTAGE_ESTIMATORS.get("prime_value")(algo.AdvantageInputs(OUTCOME, MASK), 2)


def test_prime_rloo_by_hand_on_the_same_case():
    """[OFF] RLOO with γ = 1, worked out: outcome LOO = r_i − r_other; process LOO by SPEC §4.2."""
    rewards = np.where(MASK, PROCESS, 0.0)
    lengths = MASK.sum(-1)
    mu = rewards.sum(-1) / lengths
    baseline = np.repeat(mu.reshape(2, 2).sum(-1) / 1, 2)  # Σ_group μ / (n − 1)
    process = np.where(MASK, rewards * 2 - baseline[:, None], 0.0)
    process_return = np.flip(np.cumsum(np.flip(process, -1), -1), -1)
    outcome = OUTCOME - OUTCOME.reshape(2, 2)[:, ::-1].reshape(-1)
    returns = np.where(MASK, process_return + outcome[:, None], 0.0)
    advantages, got_returns = run("rloo")
    np.testing.assert_allclose(got_returns, returns, atol=1e-6)
    expected = (returns - returns[MASK].mean()) / np.sqrt(returns[MASK].var(ddof=1) + 1e-8)
    np.testing.assert_allclose(advantages[MASK], expected[MASK], atol=1e-5)
