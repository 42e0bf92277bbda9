"""primejax.algo against the golden vectors produced by the reference implementations' own functions.

Every `.npz` in $PRIMEJAX_GOLDEN_DIR (default ../shared/prime/golden from the repository root) is
dispatched on its file-name prefix; the settings each kind was made with come from the golden
README, the parameters of tagged outputs (gammas, coefficients, aggregation modes, oversample
factors) from the output names themselves, and the group size, beta and clip ratio from the file's
inputs. Every `out_*` array of a file must be computed here, eagerly and under `jax.jit`.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from primejax import algo

ROOT = pathlib.Path(__file__).resolve().parent.parent
GOLDEN_DIR = pathlib.Path(os.environ.get("PRIMEJAX_GOLDEN_DIR", ROOT.parent / "shared" / "prime" / "golden"))
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.npz")) if GOLDEN_DIR.is_dir() else []

# README: float32 outputs compare with rtol 1e-5, atol 1e-6; whitened advantages with atol 1e-5.
RTOL, ATOL, ATOL_WHITENED = 1e-5, 1e-6, 1e-5
WHITENED = ("out_advantages_", "out_verl_reinforcepp_adv_")
# [OFF] run_prime_main.sh: reward_model.rm_coef and verifier.reward_coef (only logged).
OFFICIAL_LOG_COEFS = (5.0, 5.0)
# [RCP] compute_policy_loss_vanilla settings of the recipe files.
RECIPE_DUAL_CLIP, RECIPE_LOG_RATIO_CLAMP = 3.0, 20.0
# verl_recipe_lambda: lambda = 0.9 with prime_use_gt.
RECIPE_LAMBDA = 0.9
# filters: accuracy band of both references.
ACCURACY_BOUNDS = (0.2, 0.8)


def tag_value(tag: str) -> float:
    """'0p9' -> 0.9 (the README writes '.' as 'p')."""
    return float(tag.replace("p", "."))


def tags(keys, pattern: str) -> list[tuple[str, ...]]:
    """The regex groups of every key that matches `pattern` in full."""
    return sorted({m.groups() for k in keys if (m := re.fullmatch(pattern, k))})


class Inputs:
    """The `in_*` arrays of a golden file as JAX arrays, and its static settings."""

    def __init__(self, data):
        self.n = int(data["in_n_samples"])
        self.beta = float(data["in_beta"])
        self.clip = float(data["in_clip_ratio"])
        self.prompt_length = data["in_prompts"].shape[1]
        self.arrays = {
            "acc": np.asarray(data["in_acc"], np.float32),
            "input_ids": np.asarray(data["in_input_ids"], np.int32),
            "mask": np.asarray(data["in_response_mask"], bool),
            "logits_phi": np.asarray(data["in_logits_phi"], np.float32),
            "logits_ref": np.asarray(data["in_logits_ref"], np.float32),
            "old_log_probs": np.asarray(data["in_old_log_probs"], np.float32),
            "log_probs": np.asarray(data["in_log_probs"], np.float32),
        }


def log_probs_of(a, prompt_length):
    return (algo.response_log_probs(a["logits_phi"], a["input_ids"], prompt_length),
            algo.response_log_probs(a["logits_ref"], a["input_ids"], prompt_length))


def per_row(fn, *arrays):
    """fn applied to each row as a batch of one (the reference's per-sample calls)."""
    return jax.vmap(lambda *row: fn(*(x[None] for x in row)))(*arrays)


def official_outputs(a, *, keys, granularity, n, beta, clip, prompt_length):
    """prime_official_{token,whole}: PRIME-RL/PRIME dp_prime.py and core_algos.py."""
    mask, acc = a["mask"], a["acc"]
    prm_lp, ref_lp = log_probs_of(a, prompt_length)
    scores, q = algo.PROCESS_REWARDS.bind("official", granularity=granularity)(prm_lp, ref_lp, mask)
    rm = algo.normalize_process_rewards(scores, norm="batch_norm")
    gt = algo.place_at_last_token(acc, mask)
    out = {
        "out_prm_log_probs": prm_lp, "out_ref_log_probs": ref_lp, "out_q": q,
        "out_token_level_scores_raw": scores, "out_rm_scores": rm, "out_gt_scores": gt,
        "out_token_level_scores_all": OFFICIAL_LOG_COEFS[0] * rm + OFFICIAL_LOG_COEFS[1] * gt,
        "out_prm_ce_loss": algo.prm_ce_loss(q, acc, mask, beta=beta),
        "out_prm_ce_loss_per_sample": per_row(functools.partial(algo.prm_ce_loss, beta=beta), q, acc, mask),
        "out_dpo_acc_before": algo.pairwise_accuracy(scores, acc, mask, n),
    }
    rloo = algo.ADVANTAGE_ESTIMATORS.get("rloo")
    for vg, rg in tags(keys, r"out_returns_vg(\w+?)_rg(\w+)"):
        tag, gammas = f"vg{vg}_rg{rg}", {"outcome_gamma": tag_value(vg), "process_gamma": tag_value(rg)}
        out[f"out_advantages_{tag}"], out[f"out_returns_{tag}"] = rloo(algo.AdvantageInputs(acc, mask, rm), n,
                                                                        **gammas)
        out[f"out_returns_only_rm_scores_{tag}"] = rloo(algo.AdvantageInputs(acc, mask, rm), n, outcome_coef=0.0,
                                                        **gammas)[1]
        out[f"out_returns_only_gt_scores_{tag}"] = rloo(algo.AdvantageInputs(acc, mask), n, **gammas)[1]
    advantages, _ = rloo(algo.AdvantageInputs(acc, mask, rm), n)
    ppo = algo.POLICY_LOSSES.bind("ppo_clip", clip_ratio=clip, agg="token-mean")
    loss, metrics = ppo(a["log_probs"], a["old_log_probs"], advantages, mask)
    out.update(out_pg_loss_batch=loss, out_pg_clipfrac_batch=metrics["pg_clipfrac"],
               out_ppo_kl_batch=metrics["ppo_kl"],
               out_pg_loss_per_sample=per_row(lambda *x: ppo(*x)[0], a["log_probs"], a["old_log_probs"],
                                              advantages, mask))
    return out


def recipe_outputs(a, *, keys, lam, n, beta, clip, prompt_length):
    """verl_recipe and verl_recipe_lambda: verl recipe/prime and verl core's policy loss."""
    mask, acc = a["mask"], a["acc"]
    prm_lp, ref_lp = log_probs_of(a, prompt_length)
    scores, q = algo.PROCESS_REWARDS.bind("recipe", beta=beta, lam=lam, use_gt=lam > 0)(prm_lp, ref_lp, mask, acc)
    rm = algo.normalize_process_rewards(scores, norm="batch_norm")
    q_bc, acc_bc = algo.group_statistics(q, acc, mask, n)
    out = {
        "out_q": q, "out_token_level_scores_raw": scores, "out_rm_scores": rm, "out_Q_bc": q_bc, "out_acc_bc": acc_bc,
        "out_prm_ce_loss": algo.PRM_LOSSES.bind("ce", beta=beta)(q, acc, mask),
        "out_dpo_acc": algo.pairwise_accuracy(rm, acc, mask, n),
        "out_dpo_acc_abs": algo.absolute_accuracy(rm, acc, mask),
    }
    for (mode,) in tags(keys, r"out_prm_dpo_loss_(\w+)"):
        loss_name = "dpo" if mode == "none" else mode
        out[f"out_prm_dpo_loss_{mode}"] = algo.PRM_LOSSES.bind(loss_name, beta=beta)(q, acc, mask, q_bc, acc_bc)
    for c_p, c_o in tags(keys, r"out_returns_dpo(\w+?)_gt(\w+)"):
        tag = f"dpo{c_p}_gt{c_o}"
        out[f"out_advantages_{tag}"], out[f"out_returns_{tag}"] = algo.prime_rloo(
            algo.AdvantageInputs(acc, mask, rm), n, process_coef=tag_value(c_p), outcome_coef=tag_value(c_o))
    advantages = out["out_advantages_dpo5p0_gt5p0"]
    for (agg,) in tags(keys, r"out_pg_loss_vanilla_([\w-]+)"):
        loss, metrics = algo.ppo_clip_loss(a["log_probs"], a["old_log_probs"], advantages, mask, clip_ratio=clip,
                                           dual_clip=RECIPE_DUAL_CLIP, log_ratio_clamp=RECIPE_LOG_RATIO_CLAMP,
                                           agg=agg)
        out[f"out_pg_loss_vanilla_{agg}"] = loss
        out.update(out_pg_clipfrac_vanilla=metrics["pg_clipfrac"], out_ppo_kl_vanilla=metrics["ppo_kl"],
                   out_pg_clipfrac_lower_vanilla=metrics["pg_clipfrac_lower"])
    return out


def outcome_outputs(a, *, keys, n, **_):
    """verl_core_outcome: verl core's outcome-only estimators."""
    inputs = algo.AdvantageInputs(a["acc"], a["mask"])
    out = {
        "out_outcome_token_level_rewards": algo.place_at_last_token(a["acc"], a["mask"]),
        "out_verl_rloo_outcome_adv": algo.ADVANTAGE_ESTIMATORS.get("rloo_outcome")(inputs, n)[0],
        "out_verl_grpo_outcome_adv": algo.ADVANTAGE_ESTIMATORS.get("grpo")(inputs, n)[0],
        "out_verl_drgrpo_outcome_adv": algo.ADVANTAGE_ESTIMATORS.get("drgrpo")(inputs, n)[0],
    }
    for (g,) in tags(keys, r"out_verl_reinforcepp_ret_g(\w+)"):
        adv, ret = algo.ADVANTAGE_ESTIMATORS.bind("reinforce_pp", gamma=tag_value(g))(inputs, n)
        out[f"out_verl_reinforcepp_adv_g{g}"], out[f"out_verl_reinforcepp_ret_g{g}"] = adv, ret
    return out


def filter_outputs(a, *, keys, n, **_):
    """filters: [OFF] RayPRIMETrainer.filter and [RCP] filter_and_downsample."""
    lengths = algo.response_lengths(a["mask"])
    max_length = a["mask"].shape[1]
    by_accuracy = algo.accuracy_filter(a["acc"], n, lower=ACCURACY_BOUNDS[0], upper=ACCURACY_BOUNDS[1])
    by_length = algo.truncation_filter(lengths, n, max_response_length=max_length, rule="official")
    out = {
        "out_prime_filter_keep_acc": algo.group_rows_mask(by_accuracy, n),
        "out_prime_filter_keep_trunc": algo.group_rows_mask(by_length, n),
        "out_prime_filter_keep_acc_trunc": algo.group_rows_mask(by_accuracy & by_length, n),
    }
    recipe_keep = by_accuracy & algo.truncation_filter(lengths, n, max_response_length=max_length, rule="recipe")
    out["passing_rows"] = jnp.sum(recipe_keep) * n
    for (factor,) in tags(keys, r"out_recipe_filter_reorder_osf(\w+)"):
        out[f"out_recipe_filter_reorder_osf{factor}"] = algo.oversample_select(
            recipe_keep, n, oversample_factor=tag_value(factor))
    return out


# Longest prefix first: "verl_recipe_lambda" before "verl_recipe".
KINDS = [
    ("prime_official_token", functools.partial(official_outputs, granularity="token")),
    ("prime_official_whole", functools.partial(official_outputs, granularity="whole")),
    ("verl_recipe_lambda", functools.partial(recipe_outputs, lam=RECIPE_LAMBDA)),
    ("verl_recipe", functools.partial(recipe_outputs, lam=0.0)),
    ("verl_core_outcome", outcome_outputs),
    ("filters", filter_outputs),
]


def kind_of(path: pathlib.Path):
    for prefix, compute in KINDS:
        if path.name.startswith(prefix):
            return prefix, compute
    raise AssertionError(f"{path.name}: no known golden kind (prefixes: {', '.join(p for p, _ in KINDS)})")


def compare_reorder(name, ours, gold, passing_rows):
    """README: the order among passing and among failing prompts is arbitrary in the reference (an
    unstable sort), so each part is compared as a set."""
    ours, gold = np.asarray(ours), np.asarray(gold)
    assert ours.shape == gold.shape, f"{name}: shape {ours.shape} != {gold.shape}"
    split = min(int(passing_rows), len(gold))
    assert set(ours[:split]) == set(gold[:split]), f"{name}: passing rows {ours[:split]} != {gold[:split]}"
    assert set(ours[split:]) == set(gold[split:]), f"{name}: failing rows {ours[split:]} != {gold[split:]}"


def compare(path, data, outputs, label):
    golden_keys = [k for k in data if k.startswith("out_")]
    missing = sorted(set(golden_keys) - set(outputs))
    assert not missing, f"{path.name}: outputs not covered: {missing}"
    for key in golden_keys:
        gold, ours = data[key], np.asarray(outputs[key])
        where = f"{path.name} [{label}] {key}"
        if key.startswith("out_recipe_filter_reorder"):
            compare_reorder(where, ours, gold, outputs["passing_rows"])
        elif gold.dtype.kind in "iub":
            np.testing.assert_array_equal(ours.astype(gold.dtype), gold, err_msg=where)
        else:
            atol = ATOL_WHITENED if key.startswith(WHITENED) else ATOL
            assert ours.shape == gold.shape, f"{where}: shape {ours.shape} != {gold.shape}"
            np.testing.assert_allclose(ours, gold, rtol=RTOL, atol=atol, err_msg=where)


def test_golden_directory_has_files():
    assert GOLDEN_FILES, f"no golden .npz files in {GOLDEN_DIR} (set PRIMEJAX_GOLDEN_DIR)"


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.name)
def test_golden_file(path):
    _, compute = kind_of(path)
    with np.load(path) as npz:
        data = {k: npz[k] for k in npz.files}
    inputs = Inputs(data)
    fn = functools.partial(compute, keys=list(data), n=inputs.n, beta=inputs.beta, clip=inputs.clip,
                           prompt_length=inputs.prompt_length)
    compare(path, data, fn(inputs.arrays), "eager")
    compare(path, data, jax.jit(fn)(inputs.arrays), "jit")
