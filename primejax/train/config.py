"""The trainer's configuration: every key with the paper's default, and the checks run before compute.

`base_config()` is the full tree; files in `configs/` start from it and change what their run
needs. Defaults are the paper's run ([OFF] `run_prime_main.sh`, SPEC §8) unless a comment says
otherwise. `validate(config)` raises `ConfigError` naming the key and its value for anything the
run could not do, before a model is loaded or a program compiled.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
from typing import Any

import ml_collections
from ml_collections import config_dict

from primejax import algo
from primejax.models.config import REMAT_POLICIES
from primejax.parallel.mesh import DISTRIBUTED_MODES, MESH_AXES
from primejax.parallel.rules import PARAM_RULES

# The built-in demo's config file, the default of `python -m primejax.train` and `python -m primejax.sft`.
DEMO_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs",
                           "demo.py")
UPDATE_SCHEDULES = ("after", "before", "reverse", "none")
CPU_PRODUCTS = ("auto", "onednn", "eigen", "ynnpack")
UPDATE_LAYERS = ("auto", "scan", "unroll")
REFERENCE_TYPES = ("freeze", "policy")
FILTER_MODES = ("refill", "oversample_select")
LR_SCHEDULES = ("constant", "cosine")
DTYPES = ("float32", "bfloat16")
# Estimators that read the PRM's process rewards (the others are outcome-only).
PROCESS_ESTIMATORS = ("rloo", "reinforce_prime", "grpo_prime", "prime_value")
# Estimators whose baseline needs at least two samples per prompt.
GROUP_ESTIMATORS = ("rloo", "rloo_outcome", "grpo", "drgrpo", "grpo_prime")


class ConfigError(ValueError):
    """A configuration the run cannot use; the message names the key and the value."""


def _section(**fields) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(fields)


def _optimizer(lr: float, weight_decay: float, grad_clip: float, mini_batch_size: int,
               micro_batch_size: int) -> ml_collections.ConfigDict:
    return _section(
        lr=lr, weight_decay=weight_decay, grad_clip=grad_clip, b1=0.9, b2=0.999, eps=1e-8,
        lr_schedule="constant", warmup_steps=0, mini_batch_size=mini_batch_size, micro_batch_size=micro_batch_size)


def load_config(path: str, argument: str | None = None) -> ml_collections.ConfigDict:
    """The config of a `get_config()` file (called with `argument` when given), as `--config=PATH[:ARG]`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"primejax_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if argument is None else module.get_config(argument)


def base_config() -> ml_collections.ConfigDict:
    """Every key of a run, with the paper's defaults (SPEC §8)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.steps = 592  # RL iterations; the paper's final model is step 592
    c.logprob_chunk = 512  # response positions whose logits exist at once
    # Whether the update steps make a micro-batch's float32 logits in one piece and keep them for the
    # backward pass instead of remaking them chunk by chunk (one output-head product fewer per step;
    # 2 × rows × response length × vocab × 4 more bytes per micro-batch, with the logits' cotangent).
    c.keep_logits = False
    c.score_micro_batch_size = 0  # rows scored at once by the old policy, reference and PRM (0: all)
    # Padding-free steps (primejax.models.packing): scoring and both updates run the layers on the real
    # tokens only and the output head on the response tokens only, packed into streams sized from each
    # batch and rounded up to one of `buckets` sizes. Each size compiles the steps once, which outweighs
    # the saving on tiny models and short runs; the real-model configs turn it on.
    c.packing = _section(enabled=False, buckets=16)
    # The library XLA multiplies with in the step functions when they run on CPU (CPU_PRODUCTS):
    # "ynnpack" (XLA's default), "onednn", "eigen", or "auto": onednn for float32 compute on x86-64
    # (a PRIME update of the small Qwen2 shape ran 1.07x faster than with eigen on an Intel Xeon, and
    # eigen 1.07x faster than ynnpack on an AMD Zen 3), ynnpack otherwise (its bfloat16 kernels use
    # the matrix units of CPUs that have them). Ignored on GPU and TPU.
    c.cpu_products = "auto"
    # How the PRM and policy updates run the model's layers (UPDATE_LAYERS): "scan" (compile time flat
    # in depth), "unroll", or "auto": unrolled on CPU, where the scanned backward pass copies every
    # layer's residuals out of their stack, scanned on GPU and TPU.
    c.update_layers = "auto"

    # The device mesh (primejax.parallel): axis sizes, one of them -1 for "the rest of the devices";
    # `distributed` starts jax.distributed ("auto": when the environment names several processes).
    c.mesh = _section(data=-1, fsdp=1, tensor=1, distributed="auto")
    # The SFT policy (a Hugging Face directory). The tokenizer defaults to the same directory.
    # dtype: params of the policy and the PRM (the optimizer state is float32 either way);
    # compute_dtype: their forward and backward passes; remat: what each layer keeps for the backward
    # pass (none, full, dots, dots_no_batch); sharding: the parameter rule set (fsdp_tp, tp, fsdp,
    # replicated).
    c.model = _section(path="", tokenizer_path="", dtype="float32", compute_dtype="float32", remat="none",
                       sharding="fsdp_tp")
    # π_ref: the frozen SFT model ("freeze"; path defaults to model.path) or the policy before
    # this step's update ("policy": π_ref = old log-probs). dtype: its params and forward pass
    # ("": model.dtype and model.compute_dtype); sharding: its parameter rule set.
    c.reference = _section(type="freeze", path="", dtype="", sharding="fsdp_tp")
    # The implicit PRM π_φ: initialised from model.path unless `path` names its own checkpoint.
    # compute_dtype: its passes ("": model.compute_dtype); sharding: its parameter rule set.
    c.prm = _optimizer(lr=1e-6, weight_decay=0.0, grad_clip=10.0, mini_batch_size=256, micro_batch_size=8)
    c.prm.update({"enabled": True, "path": "", "schedule": "after", "loss": "ce", "beta": 0.05, "compute_dtype": "",
                  "sharding": "fsdp_tp"})
    c.actor = _optimizer(lr=5e-7, weight_decay=0.01, grad_clip=1.0, mini_batch_size=256, micro_batch_size=8)
    c.actor.update({"epochs": 1, "shuffle": True, "policy_loss": "ppo_clip", "clip_ratio": 0.2,
                    "clip_ratio_low": config_dict.placeholder(float), "clip_ratio_high": config_dict.placeholder(float),
                    "dual_clip": config_dict.placeholder(float), "log_ratio_clamp": config_dict.placeholder(float),
                    "loss_agg": "seq-mean-token-mean", "entropy_coef": 0.0, "kl_coef": 0.0, "kl_estimator": "k3"})

    c.algo = _section(
        process_reward="official", granularity="token", lam=0.0, use_gt=False, norm="batch_norm", norm_shards=1,
        advantage="rloo", process_coef=1.0, outcome_coef=1.0, process_gamma=1.0, outcome_gamma=1.0, gamma=1.0,
        whiten=True)

    c.rollout = _section(
        batch_size=256,  # prompts per iteration, after filtering
        n=4, temperature=1.0, top_p=1.0, top_k=0, max_response_length=3072,
        oversample_factor=1.0,  # prompts generated per round = batch_size * oversample_factor
        max_rounds=8,  # refill: generation rounds per iteration before failing groups fill the batch
        # The weights the sampler reads: "" keeps the policy's dtype / parameter rule set; another
        # value makes a copy for each iteration's generation (e.g. bfloat16 and "tp", so that decoding
        # never gathers FSDP shards).
        dtype="", sharding="")
    c.filter = _section(
        mode="refill", accuracy=True, accuracy_lower=0.2, accuracy_upper=0.8, truncation=False,
        truncation_rule="official")

    # Eurus-2-RL-Data schema files (.jsonl or .parquet); several are comma-separated.
    c.data = _section(
        train_files="", eval_files="", max_prompt_length=1024, shuffle=True, system_prompt="",
        instruction_suffix="")
    c.verifier = _section(workers=0, math_timeout_seconds=1.0, code_max_tests=10, code_isolation="auto")
    # Held-out evaluation: pass@1 with greedy decoding, and avg@k sampled (k = 0: off).
    c.eval = _section(every=16, at_start=True, max_prompts=0, max_response_length=0, avg_k=0, temperature=0.3,
                      top_p=0.95, batch_size=64)
    # directory: "" is WORKDIR/checkpoints; on several hosts name one they all reach (gs://BUCKET/RUN).
    c.checkpoint = _section(every=16, keep=3, best_metric="eval/pass@1", keep_best=1, export_hf=True, directory="")
    c.log = _section(tensorboard=True, progress=True)
    # The supervised warm start (`python -m primejax.sft`): JSONL rows {"prompt", "response"}.
    c.sft = _optimizer(lr=1e-5, weight_decay=0.0, grad_clip=1.0, mini_batch_size=32, micro_batch_size=8)
    c.sft.update({"train_files": "", "output_dir": "", "steps": 1000, "max_response_length": 0,
                  "lr_schedule": "cosine"})
    # The built-in demo task (primejax.train.demo); `enabled` replaces model and data by it. `seed`
    # makes the data and the SFT model (-1: the run's seed).
    c.demo = _section(
        enabled=False, seed=-1, min_ops=2, max_ops=4, max_operand=20, max_value=1000, operators="+-*", chain=False,
        train_size=4000, eval_size=200,
        sft_size=2000, answer_only_fraction=0.0, vocab_size=320, hidden_size=128, intermediate_size=384, num_layers=4,
        num_heads=4, num_kv_heads=2)
    return c


def _fail(key: str, value: Any, why: str) -> None:
    raise ConfigError(f"config.{key}={value!r}: {why}")


def _positive(c, key: str, integer: bool = True) -> None:
    value = c
    for part in key.split("."):
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or value <= 0:
        _fail(key, value, f"must be a positive {'integer' if integer else 'number'}")


def _choice(value: Any, key: str, choices) -> None:
    if value not in choices:
        _fail(key, value, f"must be one of {', '.join(map(str, choices))}")


def estimator_options(c: ml_collections.ConfigDict) -> dict[str, Any]:
    """The `algo.*` keys the chosen advantage estimator accepts, with their values."""
    fn = algo.ADVANTAGE_ESTIMATORS.get(c.algo.advantage)
    accepted = {p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}
    return {k: c.algo[k] for k in ("process_coef", "outcome_coef", "process_gamma", "outcome_gamma", "gamma", "whiten")
            if k in accepted}


def process_options(c: ml_collections.ConfigDict) -> dict[str, Any]:
    """The `algo.*` keys of the process reward convention ([OFF] "official" or [RCP] "recipe")."""
    if c.algo.process_reward == "official":
        return {"granularity": c.algo.granularity}
    return {"granularity": c.algo.granularity, "beta": c.prm.beta, "lam": c.algo.lam, "use_gt": c.algo.use_gt}


def policy_loss_options(c: ml_collections.ConfigDict) -> dict[str, Any]:
    """The `actor.*` options of the PPO clip loss that are set."""
    keys = ("clip_ratio", "clip_ratio_low", "clip_ratio_high", "dual_clip", "log_ratio_clamp")
    return {k: c.actor[k] for k in keys if c.actor[k] is not None}


def uses_prm(c: ml_collections.ConfigDict) -> bool:
    """Whether the run scores (and trains) the implicit PRM."""
    return bool(c.prm.enabled) and c.algo.advantage in PROCESS_ESTIMATORS


def validate(c: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a configuration the run cannot use (see the module doc)."""
    base = base_config()
    _check_keys(c, base, "")
    for key in ("steps", "logprob_chunk", "rollout.batch_size", "rollout.n", "rollout.max_response_length",
                "rollout.max_rounds", "data.max_prompt_length", "checkpoint.every", "checkpoint.keep",
                "eval.every", "eval.batch_size", "actor.epochs", "packing.buckets"):
        _positive(c, key)
    if c.rollout.n < 2 and c.algo.advantage in GROUP_ESTIMATORS:
        _fail("rollout.n", c.rollout.n, f"algo.advantage={c.algo.advantage!r} needs at least 2 samples per prompt "
              "(its baseline leaves one out or takes a group statistic)")
    for section in ("actor", "prm"):
        for key in ("lr", "grad_clip", "eps"):
            _positive(c, f"{section}.{key}", integer=False)
        _positive(c, f"{section}.mini_batch_size")
        _positive(c, f"{section}.micro_batch_size")
        _choice(c[section].lr_schedule, f"{section}.lr_schedule", LR_SCHEDULES)
        if c[section].warmup_steps < 0:
            _fail(f"{section}.warmup_steps", c[section].warmup_steps, "must be >= 0")
        rows = c.rollout.batch_size * c.rollout.n
        if rows % c[section].mini_batch_size:
            _fail(f"{section}.mini_batch_size", c[section].mini_batch_size,
                  f"must divide the batch of rollout.batch_size * rollout.n = {rows} responses")
        if c[section].mini_batch_size % c[section].micro_batch_size:
            _fail(f"{section}.micro_batch_size", c[section].micro_batch_size,
                  f"must divide {section}.mini_batch_size={c[section].mini_batch_size}")
    rows = c.rollout.batch_size * c.rollout.n
    if c.score_micro_batch_size < 0 or (c.score_micro_batch_size and rows % c.score_micro_batch_size):
        _fail("score_micro_batch_size", c.score_micro_batch_size,
              f"must be 0 (the whole batch) or divide the batch of {rows} responses")
    _choice(c.model.dtype, "model.dtype", DTYPES)
    _choice(c.model.compute_dtype, "model.compute_dtype", DTYPES)
    _choice(c.model.remat, "model.remat", REMAT_POLICIES)
    _choice(c.cpu_products, "cpu_products", CPU_PRODUCTS)
    _choice(c.update_layers, "update_layers", UPDATE_LAYERS)
    _choice(c.reference.dtype, "reference.dtype", ("",) + DTYPES)
    _choice(c.prm.compute_dtype, "prm.compute_dtype", ("",) + DTYPES)
    _choice(c.rollout.dtype, "rollout.dtype", ("",) + DTYPES)
    _choice(c.rollout.sharding, "rollout.sharding", ("",) + tuple(PARAM_RULES))
    for key in ("model.sharding", "reference.sharding", "prm.sharding"):
        section, name = key.split(".")
        _choice(c[section][name], key, tuple(PARAM_RULES))
    for axis in MESH_AXES:
        if c.mesh[axis] != -1 and c.mesh[axis] < 1:
            _fail(f"mesh.{axis}", c.mesh[axis], "must be a positive integer or -1 (the rest of the devices)")
    if sum(c.mesh[axis] == -1 for axis in MESH_AXES) > 1:
        _fail("mesh", {a: c.mesh[a] for a in MESH_AXES}, "only one axis may be -1")
    _choice(c.mesh.distributed, "mesh.distributed", DISTRIBUTED_MODES)
    _choice(c.reference.type, "reference.type", REFERENCE_TYPES)
    _choice(c.prm.schedule, "prm.schedule", UPDATE_SCHEDULES)
    _choice(c.prm.loss, "prm.loss", algo.PRM_LOSSES.names())
    if c.prm.loss != "ce" and c.prm.schedule != "reverse":
        _fail("prm.loss", c.prm.loss, "needs prm.schedule='reverse' (the group statistics of a forward pass before the "
              "update, SPEC §3.2)")
    _choice(c.algo.process_reward, "algo.process_reward", algo.PROCESS_REWARDS.names())
    _choice(c.algo.advantage, "algo.advantage", algo.ADVANTAGE_ESTIMATORS.names())
    _choice(c.algo.norm, "algo.norm", ("batch_norm", "none"))
    _choice(c.actor.policy_loss, "actor.policy_loss", algo.POLICY_LOSSES.names())
    _choice(c.actor.loss_agg, "actor.loss_agg", algo.AGGREGATIONS)
    _choice(c.actor.kl_estimator, "actor.kl_estimator", algo.KL_ESTIMATORS.names())
    _choice(c.filter.mode, "filter.mode", FILTER_MODES)
    _choice(c.filter.truncation_rule, "filter.truncation_rule", algo.filters.TRUNCATION_RULES)
    if not 0 <= c.filter.accuracy_lower <= c.filter.accuracy_upper <= 1:
        _fail("filter.accuracy_lower", c.filter.accuracy_lower,
              f"needs 0 <= accuracy_lower <= accuracy_upper={c.filter.accuracy_upper} <= 1")
    if c.rollout.oversample_factor < 1:
        _fail("rollout.oversample_factor", c.rollout.oversample_factor, "must be >= 1")
    if c.rollout.temperature < 0:
        _fail("rollout.temperature", c.rollout.temperature, "must be >= 0")
    if c.algo.process_reward == "recipe" and c.algo.granularity == "whole":
        _fail("algo.granularity", "whole", "has no working definition under algo.process_reward='recipe' (verl #1322)")
    _check_estimator_options(c, base)
    if c.reference.type == "policy" and c.actor.kl_coef:
        _fail("actor.kl_coef", c.actor.kl_coef, "a KL term needs reference.type='freeze' (the policy reference is the "
              "old policy itself)")
    if c.algo.norm_shards < 1 or (c.rollout.batch_size * c.rollout.n) % c.algo.norm_shards:
        _fail("algo.norm_shards", c.algo.norm_shards, "must be a positive divisor of the batch")
    if not 0 <= c.demo.answer_only_fraction <= 1:
        _fail("demo.answer_only_fraction", c.demo.answer_only_fraction, "must lie in [0, 1]")
    if not c.demo.enabled:
        if not c.model.path:
            _fail("model.path", c.model.path, "name a Hugging Face checkpoint directory (or set demo.enabled=True)")
        if not c.data.train_files:
            _fail("data.train_files", c.data.train_files, "name the training prompts (.jsonl or .parquet)")


def validate_for_mesh(c: ml_collections.ConfigDict, batch_shards: int) -> None:
    """Raises ConfigError unless every batch the run lays over the mesh's batch axes (data × fsdp =
    `batch_shards` ways) splits evenly: the prompts of a generation round and the micro-batches of
    both updates (and so the mini-batches and the rollout batch). Evaluation pads its batches."""
    round_prompts = math.ceil(c.rollout.batch_size * c.rollout.oversample_factor)
    checks = [("rollout.batch_size", c.rollout.batch_size, round_prompts),
              ("score_micro_batch_size", c.score_micro_batch_size, c.score_micro_batch_size),
              ("actor.micro_batch_size", c.actor.micro_batch_size, c.actor.micro_batch_size),
              ("prm.micro_batch_size", c.prm.micro_batch_size, c.prm.micro_batch_size)]
    for key, value, count in checks:
        if count % batch_shards:
            _fail(key, value, f"makes batches of {count} rows, which the mesh's {batch_shards} batch shards "
                  "(mesh.data × mesh.fsdp) do not divide")


def validate_sft_for_mesh(c: ml_collections.ConfigDict, batch_shards: int) -> None:
    """Raises ConfigError unless the warm start's micro-batches split over the mesh's batch shards."""
    if c.sft.micro_batch_size % batch_shards:
        _fail("sft.micro_batch_size", c.sft.micro_batch_size, f"makes batches the mesh's {batch_shards} batch shards "
              "(mesh.data × mesh.fsdp) do not divide")


def _check_keys(c, base, prefix: str) -> None:
    """Unknown keys and wrong types, recursively (config files can add keys that overrides cannot)."""
    for key in c:
        name = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"config.{name}: unknown key; the keys here are: {', '.join(sorted(base.keys()))}")
        value, default = c[key], base[key]
        if isinstance(default, ml_collections.ConfigDict):
            _check_keys(value, default, f"{name}.")
        elif default is not None and value is not None and not _same_type(value, default):
            _fail(name, value, f"must be a {type(default).__name__}")


def _same_type(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _check_estimator_options(c, base) -> None:
    """An `algo.*` estimator key changed from its default that the chosen estimator does not read is
    an error rather than a silent no-op."""
    accepted = estimator_options(c)
    for key in ("process_coef", "outcome_coef", "process_gamma", "outcome_gamma", "gamma", "whiten"):
        if key not in accepted and c.algo[key] != base.algo[key]:
            _fail(f"algo.{key}", c.algo[key], f"is not an option of algo.advantage={c.algo.advantage!r} "
                  f"(its options: {', '.join(sorted(accepted)) or 'none'})")
