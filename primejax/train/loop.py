"""The training loop, host side, in the order of the paper's Algorithm 1 (SPEC §1):

    for each iteration:
        sample n responses per prompt → verify → filter groups            (rollouts.py)
        old-policy / reference (/ PRM) log-probs in one pass              (steps.score)
        PRM update by CE on the outcome labels, schedule after|before|reverse|none
        implicit process rewards → advantages                             (steps.advantages)
        PPO-clip policy update                                            (steps.policy_update)
        metrics; evaluation and checkpoint when due

Everything random derives from the checkpointed key and the step, the prompt order from the
checkpointed iterator, so a run resumed from a checkpoint repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time

import jax
import ml_collections
import numpy as np

from primejax import algo
from primejax.data import PromptDataset, PromptIterator, load_prompt_records
from primejax.models import ModelConfig, load_hf_checkpoint
from primejax.models.params import Params
from primejax.parallel import Layout, gather_shares, make_mesh, param_shardings, process_share, put_global, to_host
from primejax.tokenizer import Tokenizer
from primejax.train import config as config_lib
from primejax.train import packing, setup
from primejax.train.checkpoint import Checkpointer
from primejax.train.evaluation import Evaluator
from primejax.train.export import export_model
from primejax.train.logprobs import Sequences
from primejax.train.metrics import MetricsWriter, Progress
from primejax.train.packing import Capacity
from primejax.train.rollouts import RolloutCollector
from primejax.train.steps import ModelState, Placement, minibatch_order
from primejax.verifiers import VerifierConfig, VerifierPool

PROGRESS_KEYS = ("reward/outcome_mean", "train/outcome_reward", "prm/accuracy", "actor/pg_loss", "eval/pass@1")


class TrainingError(RuntimeError):
    """The run cannot go on (a non-finite loss); the message names the step and the last good checkpoint."""


def _load_model(path: str, c: ml_collections.ConfigDict, layout: Layout, dtype: str, compute_dtype: str):
    """(config, params) of a Hugging Face directory, every weight read straight into its sharding."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model checkpoint directory not found: {path}")
    return load_hf_checkpoint(path, dtype=dtype, shardings=lambda config: param_shardings(config, layout),
                              compute_dtype=compute_dtype, remat=c.model.remat)


def _derive(params: Params, config: ModelConfig, layout: Layout) -> Params:
    """A new copy of `params` in `config.dtype` and `layout`'s shardings (one jitted program: no host copy)."""
    return jax.jit(lambda p: jax.tree.map(lambda x: x.astype(config.dtype), p),
                   out_shardings=param_shardings(config, layout))(params)


def _opt_state(optimizer, params: Params, shardings: ModelState):
    """`optimizer.init(params)` made straight in the optimizer state's shardings."""
    return jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)


def _datasets(c: ml_collections.ConfigDict, tokenizer: Tokenizer):
    # Each process applies the chat template to its share of the prompts to find their lengths.
    options = {"system_prompt": c.data.system_prompt or None, "instruction_suffix": c.data.instruction_suffix,
               "share": process_share, "gather": gather_shares}
    train = PromptDataset(load_prompt_records(c.data.train_files.split(",")), tokenizer, c.data.max_prompt_length,
                          **options)
    evaluation = None
    if c.data.eval_files:
        evaluation = PromptDataset(load_prompt_records(c.data.eval_files.split(",")), tokenizer,
                                   c.data.max_prompt_length, **options)
    return train, evaluation


def _finite_or_raise(metrics: dict[str, float], step: int, last_checkpoint: int | None, directory) -> None:
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        where = f"step {last_checkpoint} in {directory}" if last_checkpoint is not None else "none saved yet"
        raise TrainingError(f"non-finite values at step {step}: {bad}; the state of this step was not saved; "
                            f"last good checkpoint: {where}")


class Trainer:
    """One PRIME run in `workdir`; `run()` trains to `config.steps`, resuming from the latest checkpoint."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        config_lib.validate(config)
        self.config = c = config
        self.workdir = os.path.abspath(workdir)
        self.tokenizer = Tokenizer.from_dir(c.model.tokenizer_path or c.model.path)
        self.train_data, self.eval_data = _datasets(c, self.tokenizer)
        self.layout = Layout(make_mesh(c.mesh))
        config_lib.validate_for_mesh(c, self.layout.batch_shards)
        self.layouts = layouts = setup.layouts(c, self.layout.mesh)
        policy_config, policy_params = _load_model(c.model.path, c, layouts.policy, c.model.dtype,
                                                   c.model.compute_dtype)
        configs = setup.model_configs(c, policy_config)
        self.uses_prm = config_lib.uses_prm(c)
        self.reference = None
        if c.reference.type == "freeze":
            if c.reference.path and c.reference.path != c.model.path:
                reference_config, self.reference = _load_model(c.reference.path, c, layouts.reference,
                                                               configs.reference.dtype,
                                                               configs.reference.compute_dtype)
                configs = dataclasses.replace(configs, reference=reference_config)
            else:
                self.reference = _derive(policy_params, configs.reference, layouts.reference)
        prm_params = None
        if self.uses_prm:
            if c.prm.path and c.prm.path != c.model.path:
                prm_config, prm_params = _load_model(c.prm.path, c, layouts.prm, c.model.dtype,
                                                     configs.prm.compute_dtype)
                configs = dataclasses.replace(configs, prm=prm_config)
            else:
                prm_params = _derive(policy_params, configs.prm, layouts.prm)
        self.configs = configs
        self.actor_optimizer, self.prm_optimizer = setup.optimizers(c)
        policy_shardings = setup.state_shardings(self.actor_optimizer, policy_params, configs.policy, layouts.policy)
        policy_state = ModelState(policy_params, _opt_state(self.actor_optimizer, policy_params, policy_shardings))
        prm_state = prm_shardings = None
        if prm_params is not None:
            prm_shardings = setup.state_shardings(self.prm_optimizer, prm_params, configs.prm, layouts.prm)
            prm_state = ModelState(prm_params, _opt_state(self.prm_optimizer, prm_params, prm_shardings))
        self.placement = Placement(self.layout, policy=policy_shardings, prm=prm_shardings)
        self.steps = setup.build_steps(c, configs, self.actor_optimizer, self.prm_optimizer, self.placement)
        self.state = {
            "policy": policy_state,
            "prm": prm_state,
            "rng": put_global(jax.random.key_data(jax.random.key(c.seed)), self.layout.replicated()),
        }
        self.primary = jax.process_index() == 0
        self.checkpointer = Checkpointer(c.checkpoint.directory or os.path.join(self.workdir, "checkpoints"),
                                         keep=c.checkpoint.keep,
                                         best_metric=c.checkpoint.best_metric or None,
                                         keep_best=c.checkpoint.keep_best)
        self.pool = self.collector = self.evaluator = None
        self.initial_eval: dict[str, float] = {}
        self.last_eval: dict[str, float] = {}

    def _restore(self) -> int:
        """Loads the latest checkpoint if there is one; returns the step to continue from."""
        latest = self.checkpointer.latest_step()
        if latest is None:
            return 0
        self.state, host = self.checkpointer.restore(latest, arrays_like=self.state)
        self.collector.restore(host["collector"])
        self.initial_eval = host["initial_eval"]
        self.last_eval = host["last_eval"]
        return int(host["step"])

    def _save(self, step: int, metrics: dict[str, float]) -> None:
        host = {"step": step, "collector": self.collector.state(), "initial_eval": self.initial_eval,
                "last_eval": self.last_eval, "reference": self.config.reference.path or self.config.model.path,
                "config": self.config.to_json()}
        self.checkpointer.save(step, self.state, host, metrics)

    def _key(self, stream: str, step: int) -> jax.Array:
        """The key of `step` in one of two independent streams, "train" and "eval"."""
        base = jax.random.wrap_key_data(self.state["rng"])
        return jax.random.fold_in(jax.random.fold_in(base, ("train", "eval").index(stream)), step)

    def _capacities(self, sequences: Sequences, policy_key: jax.Array) -> dict[str, Capacity | None]:
        """The packed stream sizes (`primejax.train.packing`) of the scoring pass and of both updates'
        micro-batches on this batch (the policy's mini-batches are those `policy_key` shuffles);
        None each without packing."""
        c = self.config
        rows = sequences.response_mask.shape[0]
        if not c.packing.enabled:
            return dict.fromkeys(("score", "prm", "policy"))
        in_order = np.arange(rows)[None]
        policy_order = to_host(minibatch_order(policy_key, rows, self.steps.policy_options))
        plans = {"score": (in_order, c.score_micro_batch_size or rows), "prm": (in_order, c.prm.micro_batch_size),
                 "policy": (policy_order, c.actor.micro_batch_size)}
        return {name: packing.capacity(sequences.segment_ids, sequences.response_mask, order, micro_batch=micro,
                                       groups=self.layout.batch_shards, buckets=c.packing.buckets)
                for name, (order, micro) in plans.items()}

    def _generation_params(self) -> Params:
        """The policy's weights as the sampler reads them (a copy in `rollout.dtype` / `rollout.sharding`
        when those differ from the policy's)."""
        if not setup.rollout_copies(self.config):
            return self.state["policy"].params
        return _derive(self.state["policy"].params, self.configs.rollout, self.layouts.rollout)

    def _evaluate(self, step: int) -> dict[str, float]:
        if self.evaluator is None:
            return {}
        self.last_eval = self.evaluator.evaluate(self._generation_params(), self._key("eval", step))
        return self.last_eval

    def iteration(self, step: int) -> tuple[dict[str, float], dict[str, float]]:
        """One PRIME iteration (module doc); returns its (metrics, timings)."""
        c, steps, timings = self.config, self.steps, {}
        key = self._key("train", step)
        clock = time.perf_counter()
        batch = self.collector.collect(self._generation_params(), jax.random.fold_in(key, 0))
        timings["time/rollout"] = time.perf_counter() - clock
        sequences, acc = put_global((batch.sequences, batch.acc), self.placement.rows())
        mask = sequences.response_mask

        clock = time.perf_counter()
        models = {"policy": self.state["policy"].params}
        if self.reference is not None:
            models["reference"] = self.reference
        schedule = c.prm.schedule if self.uses_prm else "none"
        if self.uses_prm and schedule in ("none", "reverse"):
            models["prm"] = self.state["prm"].params
        policy_key = jax.random.fold_in(key, 1)
        capacity = self._capacities(batch.sequences, policy_key)
        scored = jax.block_until_ready(steps.score(models, sequences, capacity=capacity["score"]))
        timings["time/score"] = time.perf_counter() - clock
        old_log_probs = scored["policy_log_probs"]
        ref_log_probs = scored.get("reference_log_probs", old_log_probs)

        clock = time.perf_counter()
        prm_log_probs, prm_metrics = None, {}
        if self.uses_prm and schedule == "none":
            prm_log_probs = scored["prm_log_probs"]
        elif self.uses_prm:
            q_bc = acc_bc = None
            if schedule == "reverse":
                q_bc, acc_bc = algo.group_statistics(algo.log_ratio(scored["prm_log_probs"], ref_log_probs), acc,
                                                     mask, c.rollout.n)
            self.state["prm"], prm_log_probs, prm_metrics = steps.prm_update(
                self.state["prm"], sequences, ref_log_probs, acc, q_bc, acc_bc, capacity=capacity["prm"])
            if schedule == "before":
                prm_log_probs = steps.score({"prm": self.state["prm"].params}, sequences,
                                            capacity=capacity["score"])["prm_log_probs"]
            jax.block_until_ready(prm_log_probs)
        timings["time/prm_update"] = time.perf_counter() - clock

        clock = time.perf_counter()
        advantages, adv_metrics = steps.advantages(prm_log_probs, ref_log_probs, acc, mask)
        self.state["policy"], actor_metrics = steps.policy_update(
            self.state["policy"], sequences, old_log_probs, ref_log_probs if c.actor.kl_coef else None, advantages,
            policy_key, capacity=capacity["policy"])
        jax.block_until_ready(self.state["policy"])
        timings["time/policy_update"] = time.perf_counter() - clock

        lengths = np.asarray(batch.sequences.response_mask).sum(-1)
        metrics = {**prm_metrics, **adv_metrics, **actor_metrics,
                   "actor/entropy": algo.masked_mean(scored["entropy"], mask),
                   "response_length/mean": lengths.mean(), "response_length/max": lengths.max(),
                   "response_length/clip_ratio": batch.truncated.mean(),
                   "train/outcome_reward": batch.stats["outcome_all_mean"],
                   "filter/pass_rate": batch.stats["pass_rate"], "filter/rounds": batch.stats["rounds"],
                   "filter/filled_groups": batch.stats["filled_groups"],
                   "verifier/errors": batch.stats["verify_errors"]}
        if self.reference is not None:
            metrics["actor/kl_ref"] = algo.masked_mean(old_log_probs - ref_log_probs, mask)
        metrics = {k: float(v) for k, v in metrics.items()}
        update_tokens = float(np.asarray(batch.sequences.segment_ids).sum())
        timings |= {"time/generate": batch.stats["generate_seconds"],
                    "time/verify_wait": batch.stats["verify_wait_seconds"],
                    "throughput/rollout_tokens_per_s": batch.stats["response_tokens"] / batch.stats["generate_seconds"],
                    "throughput/update_tokens_per_s": update_tokens / max(
                        timings["time/score"] + timings["time/prm_update"] + timings["time/policy_update"], 1e-9)}
        return metrics, timings

    @contextlib.contextmanager
    def session(self):
        """Starts the verifier pool and the rollout collector, restores the latest checkpoint, and
        yields the step to continue from; closes the pool and the checkpointer at the end."""
        c = self.config
        verifier = VerifierConfig(math_timeout_seconds=c.verifier.math_timeout_seconds,
                                  code_max_tests=c.verifier.code_max_tests, code_isolation=c.verifier.code_isolation)
        with VerifierPool(verifier, num_workers=c.verifier.workers or None) as self.pool:
            iterator = PromptIterator(len(self.train_data), c.seed, shuffle=c.data.shuffle)
            self.collector = RolloutCollector(c, self.train_data, iterator, self.tokenizer, self.configs.rollout,
                                              self.pool, self.layouts.rollout)
            self.evaluator = None if self.eval_data is None else Evaluator(
                c, self.eval_data, self.tokenizer, self.configs.rollout, self.pool, self.layouts.rollout)
            try:
                yield self._restore()
            finally:
                self.checkpointer.close()

    def run(self) -> dict[str, float]:
        """Trains to `config.steps`; returns the first and last evaluation metrics (`start/…`, `final/…`)."""
        c = self.config
        with self.session() as start, \
                MetricsWriter(self.workdir, tensorboard=c.log.tensorboard, enabled=self.primary,
                              resume_step=start or None) as writer, \
                Progress(c.steps, initial=start, keys=PROGRESS_KEYS, enabled=c.log.progress and self.primary) as progress:
            if start == 0 and c.eval.at_start and self.evaluator is not None:
                self.initial_eval = self._evaluate(0)
                writer.write(0, self.initial_eval)
            for step in range(start + 1, c.steps + 1):
                clock = time.perf_counter()
                metrics, timings = self.iteration(step)
                _finite_or_raise(metrics, step, self.checkpointer.latest_step(), self.checkpointer.directory)
                if step % c.eval.every == 0 or step == c.steps:
                    metrics |= self._evaluate(step)
                timings["time/step"] = time.perf_counter() - clock
                writer.write(step, metrics)
                writer.write_perf(step, timings)
                progress.update(step, metrics)
                if step % c.checkpoint.every == 0 or step == c.steps:
                    self._save(step, metrics)
        if c.checkpoint.export_hf:
            export_model(os.path.join(self.workdir, "export"), self.state["policy"].params, self.configs.policy,
                         self.tokenizer)
        return ({f"start/{k}": v for k, v in self.initial_eval.items()}
                | {f"final/{k}": v for k, v in self.last_eval.items()})
