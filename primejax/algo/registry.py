"""Name -> function tables of the algorithm, so a config selects its pieces by string.

    from primejax import algo
    advantage_fn = algo.ADVANTAGE_ESTIMATORS.bind("rloo", process_gamma=1.0)
    advantages, returns = advantage_fn(inputs, n=4)
"""

from primejax.registry import Registry

PROCESS_REWARDS = Registry(
    "process reward convention",
    "(prm_log_probs, ref_log_probs, mask, *, granularity, beta, ...) -> (token_scores [B,R], q [B,R])")
PRM_LOSSES = Registry(
    "PRM loss",
    "(q, acc, mask, *, beta, q_bc=None, acc_bc=None) -> scalar loss")
ADVANTAGE_ESTIMATORS = Registry(
    "advantage estimator",
    "(inputs: AdvantageInputs, n: int, *, options...) -> (advantages [B,R], returns [B,R])")
POLICY_LOSSES = Registry(
    "policy loss",
    "(log_probs, old_log_probs, advantages, mask, *, options..., num_tokens=None, num_sequences=None) "
    "-> (loss, metrics)")
KL_ESTIMATORS = Registry(
    "KL estimator",
    "(log_probs, ref_log_probs) -> per-token KL estimate")
