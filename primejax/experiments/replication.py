"""A miniature replication of the paper's comparisons on the built-in task (paper §4–§5, SPEC §9).

Every variant starts from the same SFT model and the same data, and differs from `configs/demo.py`
(PRIME: RLOO with implicit process rewards, PRM updated online `after`) only in the keys below:

    rloo_outcome      RLOO on the outcome reward alone (the paper's "RLOO w/ outcome verifier only")
    prime             RLOO + implicit process rewards, PRM updated online after scoring (the paper's default)
    prime_before      the PRM updated before it scores the batch ("double forward", App. B.2)
    prime_frozen      a PRM trained offline on the SFT policy's rollouts, then frozen (§5.1's offline PRM)
    reinforce         REINFORCE on the outcome (no baseline), whitened
    reinforce_prime   REINFORCE with PRIME (Eq. 8)
    grpo              GRPO on the outcome
    grpo_prime        GRPO with PRIME (Eq. 7)
    prime_value       PPO whose value is the implicit PRM (§5.4: "PRIME as value")

The paper's PPO baseline trains a separate critic, which primejax does not have, so PPO appears only
as `prime_value`. The frozen PRM comes from `offline_prm_overrides`: PRIME with the policy held at
the SFT model (a learning rate of 1e-12) for `OFFLINE_PRM_STEPS` iterations, its PRM exported.

`configs/replication.py:VARIANT` is each variant as a config file for `python -m primejax.train`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

VARIANTS: dict[str, dict[str, Any]] = {
    "rloo_outcome": {"prm.enabled": False},
    "prime": {},
    "prime_before": {"prm.schedule": "before"},
    "prime_frozen": {"prm.schedule": "none"},  # plus prm.path: the offline PRM
    "reinforce": {"algo.advantage": "reinforce_prime", "prm.enabled": False},
    "reinforce_prime": {"algo.advantage": "reinforce_prime"},
    "grpo": {"algo.advantage": "grpo_prime", "prm.enabled": False},
    "grpo_prime": {"algo.advantage": "grpo_prime"},
    "prime_value": {"algo.advantage": "prime_value"},
}
OFFLINE_PRM_STEPS = 30


def offline_prm_overrides(steps: int = OFFLINE_PRM_STEPS) -> dict[str, Any]:
    """PRIME with the policy held at the SFT model, so that only the PRM learns, on the SFT policy's
    rollouts, for `steps` iterations."""
    return {"steps": steps, "actor.lr": 1e-12, "actor.weight_decay": 0.0, "eval.at_start": False,
            "eval.every": steps + 1, "checkpoint.export_hf": False}


def apply(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A copy of `config` with dotted-key `overrides` set."""
    out = ml_collections.ConfigDict(config.to_dict())
    for key, value in overrides.items():
        *sections, name = key.split(".")
        target = out
        for section in sections:
            target = target[section]
        target[name] = value
    return out


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """The trailing mean over `window` steps (fewer at the start)."""
    values = np.asarray(values, np.float64)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


def steps_to_reach(curve: np.ndarray, target: float, window: int) -> int | None:
    """The first step (1-based) at which the smoothed curve reaches `target`, or None."""
    hits = np.flatnonzero(smoothed(curve, window) >= target)
    return int(hits[0]) + 1 if len(hits) else None


def run_summary(workdir: str | os.PathLike, window: int) -> dict[str, Any]:
    """One run's curves and end values from its metrics.jsonl and perf.jsonl."""
    metrics = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    perf = read_jsonl(os.path.join(workdir, "perf.jsonl"))
    steps = [m for m in metrics if m["step"] > 0]
    evaluations = [(m["step"], m["eval/pass@1"]) for m in metrics if "eval/pass@1" in m]
    reward = np.asarray([m["train/outcome_reward"] for m in steps])
    prm = [m["prm/accuracy"] for m in steps if "prm/accuracy" in m]
    return {
        "reward": reward.tolist(),
        "prm_accuracy": prm,
        "pass_at_1": evaluations,
        "final_reward": float(reward[-window:].mean()),
        "final_pass_at_1": evaluations[-1][1],
        "start_pass_at_1": evaluations[0][1],
        "seconds_per_step": float(np.median([p["time/step"] for p in perf])),
        "prm_seconds_per_step": float(np.median([p["time/prm_update"] for p in perf])),
    }
