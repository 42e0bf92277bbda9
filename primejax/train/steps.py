"""The device side of one PRIME iteration: pure functions, jitted once per run by `make_steps`.

    score       old-policy, reference and implicit-PRM log-probs of the rollouts in one program
    prm_update  the PRM's AdamW steps on the CE (or DPO) loss, mini-batch by mini-batch in order;
                returns the PRM log-probs of the pass that computed each mini-batch's loss
    advantages  token process rewards, their normalisation, the advantage estimator, PRM accuracy
    policy_update  PPO epochs × shuffled mini-batches, each an AdamW step on the clipped loss

Mini-batches are split into micro-batches whose gradients are accumulated in a scan, so one
optimizer step sees exactly the mini-batch's loss while only a micro-batch's activations exist.

On a mesh (`Placement`), shardings are given at the jit call: rollout rows over the batch axes
(data × fsdp), params and optimizer states by their rule sets, metrics replicated. The update steps
first make the (small) rollout arrays whole on every device, then lay each micro-batch's rows over
the batch axes, so mini-batches are the same rows on any mesh and every device works on each one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial, wraps
from platform import machine
from typing import Any

import jax
import jax.numpy as jnp
import optax

from primejax import algo
from primejax.models import ModelConfig
from primejax.models.params import Params
from primejax.models.reductions import ynnpack_fusions_off
from primejax.parallel.rules import Layout, active, constrain_rows, replicate
from primejax.train.logprobs import Sequences, chunked_log_probs
from primejax.train.packing import Capacity

Metrics = dict[str, jax.Array]


@partial(jax.tree_util.register_dataclass, data_fields=["params", "opt_state"], meta_fields=[])
@dataclasses.dataclass
class ModelState:
    """A trained model: its params and its optimizer state."""

    params: Params
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class PrmOptions:
    """How the implicit PRM is scored and updated (SPEC §2–§3).

    loss: a `PRM_LOSSES` name; beta: β of r = β log π_φ/π_ref; mini_batch / micro_batch: rows
    per AdamW step and per accumulated micro-step.
    """

    loss: str = "ce"
    beta: float = 0.05
    mini_batch: int = 256
    micro_batch: int = 8


@dataclasses.dataclass(frozen=True)
class AdvantageOptions:
    """How rewards become advantages (SPEC §2.3–§4).

    process_reward: a `PROCESS_REWARDS` name with its options; norm / norm_shards: `prime_norm`;
    estimator: an `ADVANTAGE_ESTIMATORS` name with its options; use_process: whether the PRM's
    rewards enter the advantage (False: outcome-only).
    """

    n: int = 4
    beta: float = 0.05
    process_reward: str = "official"
    process_options: tuple[tuple[str, Any], ...] = (("granularity", "token"),)
    norm: str = "batch_norm"
    norm_shards: int = 1
    estimator: str = "rloo"
    estimator_options: tuple[tuple[str, Any], ...] = ()
    use_process: bool = True


@dataclasses.dataclass(frozen=True)
class PolicyOptions:
    """The actor's update (SPEC §5): a `POLICY_LOSSES` name with its options, entropy and KL terms,
    PPO epochs, mini- and micro-batch sizes in rows, and whether mini-batches are shuffled."""

    loss: str = "ppo_clip"
    loss_options: tuple[tuple[str, Any], ...] = ()
    agg: str = "seq-mean-token-mean"
    entropy_coef: float = 0.0
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    epochs: int = 1
    mini_batch: int = 256
    micro_batch: int = 8
    shuffle: bool = True


def _micro_batches(tree, micro: int):
    """Splits every leaf's leading axis [M, ...] into [M / micro, micro, ...]."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0] // micro, micro, *x.shape[1:]), tree)


def _summed_over_micro_batches(fn: Callable, params: Params, micro_data):
    """(Σ_m grads_m, aux_m stacked along a new leading axis) of (grads_m, aux_m) = fn(params, micro_m)
    over the leading axis of `micro_data`. A single micro-batch is one plain call: a scan would also
    zero a params-sized accumulator and add into it."""
    if jax.tree.leaves(micro_data)[0].shape[0] == 1:
        grads, aux = fn(params, jax.tree.map(lambda x: x[0], micro_data))
        return grads, jax.tree.map(lambda x: x[None], aux)

    def accumulate(total, micro_batch):
        grads, aux = fn(params, micro_batch)
        return jax.tree.map(jnp.add, total, grads), aux

    return jax.lax.scan(accumulate, jax.tree.map(jnp.zeros_like, params), micro_data)


def _apply(optimizer: optax.GradientTransformation, state: ModelState, grads: Params) -> ModelState:
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return ModelState(optax.apply_updates(state.params, updates), opt_state)


def score(models: dict[str, Params], sequences: Sequences, *, configs: dict[str, ModelConfig], chunk: int,
          micro_batch: int = 0, entropy_of: str = "policy", capacity: Capacity | None = None) -> dict[str, jax.Array]:
    """Log-probs [B, R] of every model in `models` ("policy", "reference", "prm"), one program.

    Returns `{name}_log_probs` for each, and `entropy` of `entropy_of` when it is among them. With
    `micro_batch` (rows, dividing B), the rows are scored that many at a time in a loop, so only a
    micro-batch's activations exist; 0 scores the whole batch at once. `capacity` packs each
    micro-batch (`chunked_log_probs`).
    """

    def score_rows(rows: Sequences) -> dict[str, jax.Array]:
        out = {}
        for name, params in models.items():
            log_probs, entropy = chunked_log_probs(params, rows, config=configs[name], chunk=chunk,
                                                   with_entropy=name == entropy_of, capacity=capacity)
            out[f"{name}_log_probs"] = log_probs
            if entropy is not None:
                out["entropy"] = entropy
        return out

    rows = sequences.response_mask.shape[0]
    if not micro_batch or micro_batch >= rows:
        return score_rows(sequences)
    out = jax.lax.map(lambda micro: score_rows(constrain_rows(micro)), _micro_batches(replicate(sequences),
                                                                                       micro_batch))
    return constrain_rows(jax.tree.map(lambda x: x.reshape(rows, *x.shape[2:]), out))


def prm_update(prm: ModelState, sequences: Sequences, ref_log_probs: jax.Array, acc: jax.Array,
               q_bc: jax.Array | None, acc_bc: jax.Array | None, *, config: ModelConfig,
               optimizer: optax.GradientTransformation, options: PrmOptions,
               chunk: int, keep_logits: bool = False,
               capacity: Capacity | None = None) -> tuple[ModelState, jax.Array, Metrics]:
    """One pass of AdamW steps over the batch in order, one per mini-batch (SPEC §3.3, `after`).

    Mini-batch k is scored by the PRM after the steps on mini-batches 0 … k − 1 and its loss is the
    mean of its micro-batches' losses (the references divide each micro-batch loss by the number of
    accumulation steps). Returns the new state, the PRM log-probs of the pass that computed each
    loss ([B, R], what `after` turns into rewards), and metrics averaged over mini-batches with the
    updated params' norm (which exposes a non-finite update).
    """
    loss_fn = algo.PRM_LOSSES.bind(options.loss, beta=options.beta)
    rows = sequences.response_mask.shape[0]
    mini, micro = options.mini_batch, options.micro_batch
    data = replicate((sequences, ref_log_probs, acc, q_bc, acc_bc))
    data = jax.tree.map(lambda x: x.reshape(rows // mini, mini, *x.shape[1:]), data)

    def micro_loss(params, batch):
        seqs, ref, acc_m, q_bc_m, acc_bc_m = constrain_rows(batch)
        log_probs, _ = chunked_log_probs(params, seqs, config=config, chunk=chunk, with_entropy=False,
                                         keep_logits=keep_logits, capacity=capacity)
        q = algo.log_ratio(log_probs, ref)
        return loss_fn(q, acc_m, seqs.response_mask, q_bc_m, acc_bc_m), log_probs

    def mini_step(state: ModelState, batch):
        steps = mini // micro

        def micro_grads(params, micro_batch):
            (loss, log_probs), g = jax.value_and_grad(micro_loss, has_aux=True)(params, micro_batch)
            return jax.tree.map(lambda x: x / steps, g), (loss, log_probs)

        grads, (losses, log_probs) = _summed_over_micro_batches(micro_grads, state.params,
                                                                _micro_batches(batch, micro))
        metrics = {"prm/loss": jnp.mean(losses), "prm/grad_norm": optax.tree.norm(grads)}
        return _apply(optimizer, state, grads), (log_probs.reshape(mini, -1), metrics)

    prm, (log_probs, metrics) = jax.lax.scan(mini_step, prm, data)
    metrics = jax.tree.map(jnp.mean, metrics) | {"prm/param_norm": optax.tree.norm(prm.params)}
    return prm, constrain_rows(log_probs.reshape(rows, -1)), metrics


def advantages(prm_log_probs: jax.Array | None, ref_log_probs: jax.Array | None, acc: jax.Array,
               response_mask: jax.Array, *, options: AdvantageOptions) -> tuple[jax.Array, Metrics]:
    """Token process rewards → normalisation → advantage estimator (SPEC §2.3–§4).

    Returns the advantages [B, R] and metrics: the outcome and process reward means, the PRM's
    pairwise and absolute accuracy on this batch, the advantages' and returns' means.
    """
    mask = response_mask
    metrics = {"reward/outcome_mean": jnp.mean(acc)}
    process = None
    if options.use_process:
        scores, q = algo.PROCESS_REWARDS.bind(options.process_reward, **dict(options.process_options))(
            prm_log_probs, ref_log_probs, mask, acc)
        if options.estimator == "prime_value":
            process = jnp.where(mask, options.beta * q, 0.0)
        else:
            process = algo.normalize_process_rewards(scores, norm=options.norm, shards=options.norm_shards)
        sequence_reward = algo.sequence_rewards(q, mask, options.beta)
        metrics |= {
            "reward/process_mean": jnp.mean(sequence_reward),
            "reward/process_token_mean": algo.masked_mean(process, mask),
            "prm/accuracy": algo.pairwise_accuracy(q, acc, mask, options.n),
            "prm/abs_accuracy": algo.absolute_accuracy(q, acc, mask),
        }
    estimator = algo.ADVANTAGE_ESTIMATORS.bind(options.estimator, **dict(options.estimator_options))
    adv, returns = estimator(algo.AdvantageInputs(acc, mask, process), options.n)
    metrics |= {"advantage/mean": algo.masked_mean(adv, mask),
                "advantage/max": jnp.max(jnp.where(mask, adv, -jnp.inf)),
                "advantage/min": jnp.min(jnp.where(mask, adv, jnp.inf)),
                "returns/mean": algo.masked_mean(returns, mask)}
    return adv, metrics


def minibatch_order(key: jax.Array, rows: int, options: PolicyOptions) -> jax.Array:
    """[epochs · rows / mini_batch, mini_batch] int32: the rows of each PPO mini-batch in order, a fresh
    permutation of the batch per epoch (fold_in(key, epoch)) when `shuffle`."""
    if options.shuffle:
        order = jnp.stack([jax.random.permutation(jax.random.fold_in(key, e), rows) for e in range(options.epochs)])
    else:
        order = jnp.tile(jnp.arange(rows), (options.epochs, 1))
    return order.reshape(-1, options.mini_batch)


def policy_update(policy: ModelState, sequences: Sequences, old_log_probs: jax.Array,
                  ref_log_probs: jax.Array | None, adv: jax.Array, key: jax.Array, *, config: ModelConfig,
                  optimizer: optax.GradientTransformation, options: PolicyOptions,
                  chunk: int, keep_logits: bool = False, capacity: Capacity | None = None) -> tuple[ModelState, Metrics]:
    """PPO: `epochs` passes over the batch in mini-batches (reshuffled per epoch when `shuffle`),
    one AdamW step each on  L = pg_loss − entropy_coef · entropy + kl_coef · kl  (SPEC §5).

    Each micro-batch's loss is aggregated with the mini-batch's token and sequence counts, so the
    accumulated gradient is that of the mini-batch's loss. Metrics are means over mini-batches, plus
    the updated params' norm. The mini-batches are `minibatch_order(key, B, options)`; `capacity`
    packs each micro-batch (`chunked_log_probs`).
    """
    loss_fn = algo.POLICY_LOSSES.bind(options.loss, agg=options.agg, **dict(options.loss_options))
    rows = sequences.response_mask.shape[0]
    micro = options.micro_batch
    order = minibatch_order(key, rows, options)
    data = replicate((sequences, old_log_probs, ref_log_probs, adv))

    def micro_loss(params, batch, counts):
        seqs, old, ref, a = constrain_rows(batch)
        mask = seqs.response_mask
        log_probs, entropy = chunked_log_probs(params, seqs, config=config, chunk=chunk,
                                               with_entropy=options.entropy_coef != 0, keep_logits=keep_logits,
                                               capacity=capacity)
        pg_loss, metrics = loss_fn(log_probs, old, a, mask, **counts)
        loss = pg_loss
        metrics = {**metrics, "pg_loss": pg_loss}
        if entropy is not None:
            bonus = algo.entropy_bonus(entropy, mask, agg=options.agg, **counts)
            loss = loss - options.entropy_coef * bonus
            metrics["entropy_loss"] = bonus
        if options.kl_coef != 0:
            kl = algo.kl_loss(log_probs, ref, mask, estimator=options.kl_estimator, agg=options.agg, **counts)
            loss = loss + options.kl_coef * kl
            metrics["kl_loss"] = kl
        return loss, metrics

    def mini_step(state: ModelState, index):
        batch = jax.tree.map(lambda x: x[index], data)
        mask = batch[0].response_mask
        counts = {"num_tokens": jnp.sum(mask, dtype=jnp.float32),
                  "num_sequences": jnp.sum(jnp.sum(mask, axis=-1) > 0, dtype=jnp.float32)}

        def micro_grads(params, micro_batch):
            (_, metrics), g = jax.value_and_grad(micro_loss, has_aux=True)(params, micro_batch, counts)
            return g, metrics

        grads, metrics = _summed_over_micro_batches(micro_grads, state.params, _micro_batches(batch, micro))
        # Losses aggregated with the mini-batch's counts add up over micro-batches; ratios average.
        metrics = {k: jnp.sum(v) if k.endswith("_loss") else jnp.mean(v) for k, v in metrics.items()}
        metrics["grad_norm"] = optax.tree.norm(grads)
        return _apply(optimizer, state, grads), metrics

    policy, metrics = jax.lax.scan(mini_step, policy, order)
    metrics["param_norm"] = optax.tree.norm(policy.params)
    return policy, {f"actor/{k}": jnp.mean(v) for k, v in metrics.items()}


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a run's arrays live: `layout` (the mesh and the activation rules) and the shardings of the
    policy's and the PRM's `ModelState`s. The default, no layout, leaves placement to the inputs."""

    layout: Layout | None = None
    policy: Any = None
    prm: Any = None

    def rows(self):
        """The sharding of [rows, ...] rollout arrays, whose row counts the batch axes divide (the
        config's checks see to it); None without a layout."""
        if self.layout is None:
            return None
        return self.layout.rows((self.layout.batch_shards,))

    def replicated(self):
        return None if self.layout is None else self.layout.replicated()


@dataclasses.dataclass(frozen=True)
class Steps:
    """The jitted step functions of a run (see the module doc)."""

    score: Callable
    prm_update: Callable
    advantages: Callable
    policy_update: Callable
    policy_options: PolicyOptions


# Whether this host is x86-64, where `cpu_products` "auto" means oneDNN for float32 compute.
X86_HOST = machine().lower() in ("x86_64", "amd64")


def cpu_compiler_options(products: str, compute_dtype: str, platform: str) -> dict[str, str | bool]:
    """XLA options that make the step functions multiply with `products` (a run's `cpu_products`)
    when they compile for `platform` "cpu"; none elsewhere, and none for ynnpack, XLA's default.

    "auto" is oneDNN for float32 `compute_dtype` on an x86-64 host and YNNPACK otherwise. On an
    Intel Xeon (2 cores, AVX-512) XLA's oneDNN products of the small Qwen2 shape's layers and head
    ran 1.09-1.22x as fast as its Eigen ones, and a float32 PRIME update took 1.07x less time;
    YNNPACK's bfloat16 kernels use the CPU's matrix units, which XLA's oneDNN products do not.
    oneDNN takes each product alone: fusing products with their neighbours into oneDNN
    (`LIBRARY_FUSION_TYPE_DOT`) killed the process with an illegal instruction while XLA compiled
    the update steps.
    """
    if products == "auto":
        products = "onednn" if jnp.dtype(compute_dtype) == jnp.float32 and X86_HOST else "ynnpack"
    if platform != "cpu" or products == "ynnpack":
        return {}
    options: dict[str, str | bool] = {"xla_cpu_experimental_ynn_fusion_type": ""}
    if products == "onednn":
        options |= {"xla_cpu_use_onednn": True,
                    "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
    return options


def turns_ynnpack_off(compiler_options: dict[str, str | bool] | None) -> bool:
    """Whether `compiler_options` turn YNNPACK's fusions off, which leaves XLA on CPU to reduce by
    itself; the step functions then reduce short rows in two steps as well
    (`primejax.models.reductions.over_short_rows`)."""
    return (compiler_options or {}).get("xla_cpu_experimental_ynn_fusion_type") == ""


def unrolls_update_layers(update_layers: str, platform: str) -> bool:
    """Whether the update steps unroll the layer loop, given a run's `update_layers` ("scan",
    "unroll", or "auto": unrolled when they compile for `platform` "cpu", scanned elsewhere).

    On CPU the scanned backward pass copies each layer's residuals out of their stack before its
    products. Unrolled, a PRIME update of the small Qwen2 shape took 1.04x less time, its two update
    steps 1.05-1.10x (`bench/RESULTS.md`), for compile time that grows with depth. Scoring, with no
    backward pass, stays scanned: unrolled it ran 0.95-0.99x as fast.
    """
    if update_layers == "auto":
        return platform == "cpu"
    return update_layers == "unroll"


def make_steps(*, policy_config: ModelConfig, prm_config: ModelConfig, reference_config: ModelConfig,
               policy_optimizer: optax.GradientTransformation, prm_optimizer: optax.GradientTransformation,
               prm_options: PrmOptions, advantage_options: AdvantageOptions, policy_options: PolicyOptions,
               chunk: int, keep_logits: bool = False, score_micro_batch: int = 0, unroll_update_layers: bool = False,
               placement: Placement = Placement(), compiler_options: dict[str, str] | None = None) -> Steps:
    """Jits the step functions with the run's static choices closed over; the states passed to the
    updates are donated; `chunk` and `keep_logits` are `chunked_log_probs`'s. With a layout, outputs
    get the shardings of `Placement` and activations are constrained by its rules; without one,
    inputs keep the shardings the caller gave them. `unroll_update_layers` unrolls the layer loop of
    the PRM and policy updates (`unrolls_update_layers`). `compiler_options` go to XLA with every step
    (`cpu_compiler_options`); where they turn YNNPACK's fusions off, the steps reduce short rows in
    two steps too (`turns_ynnpack_off`)."""
    configs = {"policy": policy_config, "reference": reference_config, "prm": prm_config}
    if unroll_update_layers:
        policy_config, prm_config = (c.replace(unroll_layers=True) for c in (policy_config, prm_config))
    rows, replicated = placement.rows(), placement.replicated()

    ynnpack_off = turns_ynnpack_off(compiler_options)

    def jit(fn, out_shardings, **kwargs):
        if placement.layout is None:
            out_shardings = None

        @wraps(fn)
        def traced(*args, **named):  # the contexts hold while jit traces fn
            with active(placement.layout), ynnpack_fusions_off(ynnpack_off):
                return fn(*args, **named)

        return jax.jit(traced, out_shardings=out_shardings, compiler_options=compiler_options, **kwargs)

    return Steps(
        score=jit(partial(score, configs=configs, chunk=chunk, micro_batch=score_micro_batch), rows,
                  static_argnames=("entropy_of", "capacity")),
        prm_update=jit(partial(prm_update, config=prm_config, optimizer=prm_optimizer, options=prm_options,
                               chunk=chunk, keep_logits=keep_logits), (placement.prm, rows, replicated),
                       donate_argnums=0, static_argnames=("capacity",)),
        advantages=jit(partial(advantages, options=advantage_options), (rows, replicated)),
        policy_update=jit(partial(policy_update, config=policy_config, optimizer=policy_optimizer,
                                  options=policy_options, chunk=chunk, keep_logits=keep_logits),
                          (placement.policy, replicated),
                          donate_argnums=0, static_argnames=("capacity",)),
        policy_options=policy_options,
    )
