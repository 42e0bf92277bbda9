"""The math of PRIME as pure, jit-able functions (SPEC §2–§6), and the registries that name them.

| concern | module | registry |
| --- | --- | --- |
| response log-probs, entropy | `logprobs` | |
| implicit process rewards, batch_norm | `process_rewards` | `PROCESS_REWARDS`: official, recipe |
| PRM losses and accuracy | `prm_losses` | `PRM_LOSSES`: ce, dpo, bon_acc, bon_rm |
| PRIME RLOO advantage | `advantages` | `ADVANTAGE_ESTIMATORS`: rloo |
| outcome-only estimators | `outcome_advantages` | rloo_outcome, grpo, drgrpo, reinforce_pp |
| PRIME with other algorithms | `prime_variants` | reinforce_prime, grpo_prime, prime_value |
| policy loss, KL, entropy | `policy_loss` | `POLICY_LOSSES`: ppo_clip; `KL_ESTIMATORS`: k1, k2, k3 |
| prompt filters | `filters` | |
| masked reductions, layout | `masking` | |

Where the reference codebases differ, [OFF] (PRIME-RL/PRIME, the paper's code) is the default and
[RCP] (verl's recipe) is a named option; each function's docstring says which is which.
"""

from primejax.algo.advantages import AdvantageInputs, leave_one_out, prime_rloo
from primejax.algo.filters import accuracy_filter, group_accuracy, group_rows_mask, oversample_select, truncation_filter
from primejax.algo.logprobs import (
    entropy_from_logits,
    response_entropy,
    response_log_probs,
    response_logits,
    token_log_probs,
)
from primejax.algo.masking import (
    check_groups,
    discounted_returns,
    group_broadcast,
    last_token_mask,
    masked_mean,
    masked_sum,
    masked_whiten,
    place_at_last_token,
    response_lengths,
)
from primejax.algo.outcome_advantages import drgrpo_outcome, grpo_outcome, reinforce_pp_outcome, rloo_outcome
from primejax.algo.policy_loss import (
    AGGREGATIONS,
    aggregate_loss,
    entropy_bonus,
    kl_loss,
    kl_penalty_rewards,
    ppo_clip_loss,
)
from primejax.algo.prime_variants import grpo_prime, prime_as_value, reinforce_prime
from primejax.algo.prm_losses import (
    absolute_accuracy,
    ce_per_sample,
    dpo_per_sample,
    group_statistics,
    pairwise_accuracy,
    prm_ce_loss,
    sequence_rewards,
)
from primejax.algo.process_rewards import (
    implicit_values,
    log_ratio,
    normalize_process_rewards,
    official_scores,
    recipe_scores,
)
from primejax.algo.registry import (
    ADVANTAGE_ESTIMATORS,
    KL_ESTIMATORS,
    POLICY_LOSSES,
    PRM_LOSSES,
    PROCESS_REWARDS,
    Registry,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "PRM_LOSSES",
    "PROCESS_REWARDS",
    "AdvantageInputs",
    "Registry",
    "absolute_accuracy",
    "accuracy_filter",
    "aggregate_loss",
    "ce_per_sample",
    "check_groups",
    "discounted_returns",
    "dpo_per_sample",
    "drgrpo_outcome",
    "entropy_bonus",
    "entropy_from_logits",
    "group_accuracy",
    "group_broadcast",
    "group_rows_mask",
    "group_statistics",
    "grpo_outcome",
    "grpo_prime",
    "implicit_values",
    "kl_loss",
    "kl_penalty_rewards",
    "last_token_mask",
    "leave_one_out",
    "log_ratio",
    "masked_mean",
    "masked_sum",
    "masked_whiten",
    "normalize_process_rewards",
    "official_scores",
    "oversample_select",
    "pairwise_accuracy",
    "place_at_last_token",
    "ppo_clip_loss",
    "prime_as_value",
    "prime_rloo",
    "prm_ce_loss",
    "recipe_scores",
    "reinforce_pp_outcome",
    "reinforce_prime",
    "response_entropy",
    "response_lengths",
    "response_log_probs",
    "response_logits",
    "rloo_outcome",
    "sequence_rewards",
    "token_log_probs",
    "truncation_filter",
]
