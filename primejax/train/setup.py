"""A run's device-side pieces from its config, shared by the trainer and the ahead-of-time planner
(`primejax.tools.aot`): the layouts of the four roles, their model configs, the optimizers, the
shardings of the trained states, and the jitted step functions.

The roles and the keys that shape them:

    policy     model.dtype (params), model.compute_dtype, model.remat, model.sharding
    prm        the policy's params dtype and remat; prm.compute_dtype, prm.sharding
    reference  reference.dtype (params and compute), reference.sharding
    rollout    the policy's weights as the sampler reads them: rollout.dtype, rollout.sharding; a
               copy is made for each iteration's generation when either differs from the policy's
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
import optax

from primejax.models import ModelConfig
from primejax.models.params import Params
from primejax.parallel import Layout, opt_state_shardings, param_shardings
from primejax.train import config as config_lib
from primejax.train.optim import make_optimizer
from primejax.train.steps import (
    AdvantageOptions,
    ModelState,
    Placement,
    PolicyOptions,
    PrmOptions,
    Steps,
    cpu_compiler_options,
    make_steps,
    unrolls_update_layers,
)

ROLES = ("policy", "prm", "reference", "rollout")


@dataclasses.dataclass(frozen=True)
class Roles:
    """One value per role."""

    policy: object
    prm: object
    reference: object
    rollout: object


def layouts(c: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Roles:
    """The layout of each role on `mesh`: the same activation rules, each its parameter rule set."""
    base = Layout(mesh)
    return Roles(policy=base.with_params(c.model.sharding), prm=base.with_params(c.prm.sharding),
                 reference=base.with_params(c.reference.sharding),
                 rollout=base.with_params(c.rollout.sharding or c.model.sharding))


def model_configs(c: ml_collections.ConfigDict, policy: ModelConfig) -> Roles:
    """The model config of each role, given the policy's (as loaded: dtype, compute dtype and remat
    from `model.*`). A PRM or reference loaded from its own checkpoint takes its architecture from
    there and these dtypes."""
    reference_dtype = c.reference.dtype or c.model.dtype
    return Roles(
        policy=policy,
        prm=policy.replace(compute_dtype=c.prm.compute_dtype or c.model.compute_dtype),
        reference=policy.replace(dtype=reference_dtype, compute_dtype=c.reference.dtype or c.model.compute_dtype),
        rollout=policy.replace(dtype=c.rollout.dtype or c.model.dtype,
                               compute_dtype=c.rollout.dtype or c.model.compute_dtype),
    )


def rollout_copies(c: ml_collections.ConfigDict) -> bool:
    """Whether generation reads its own copy of the policy's weights (another dtype or sharding)."""
    return bool(c.rollout.dtype and c.rollout.dtype != c.model.dtype) or bool(
        c.rollout.sharding and c.rollout.sharding != c.model.sharding)


def optimizers(c: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """(actor, PRM) optimizers; their schedules count the run's optimizer steps."""
    rows = c.rollout.batch_size * c.rollout.n
    actor_steps = c.steps * c.actor.epochs * rows // c.actor.mini_batch_size
    return make_optimizer(c.actor, actor_steps), make_optimizer(c.prm, c.steps * rows // c.prm.mini_batch_size)


def state_shardings(optimizer: optax.GradientTransformation, params: Params, config: ModelConfig,
                    layout: Layout) -> ModelState:
    """The shardings of a trained model's state: params by the layout's rules, optimizer leaves
    as their parameter (`params` may be shape structs)."""
    shardings = param_shardings(config, layout)
    return ModelState(shardings, opt_state_shardings(optimizer, params, shardings, layout))


def build_steps(c: ml_collections.ConfigDict, configs: Roles, actor_optimizer: optax.GradientTransformation,
                prm_optimizer: optax.GradientTransformation, placement: Placement) -> Steps:
    """The jitted step functions of the run described by `c`."""
    platform = _platform(placement)
    return make_steps(
        policy_config=configs.policy, prm_config=configs.prm, reference_config=configs.reference,
        policy_optimizer=actor_optimizer, prm_optimizer=prm_optimizer,
        prm_options=PrmOptions(loss=c.prm.loss, beta=c.prm.beta, mini_batch=c.prm.mini_batch_size,
                               micro_batch=c.prm.micro_batch_size),
        advantage_options=AdvantageOptions(
            n=c.rollout.n, beta=c.prm.beta, process_reward=c.algo.process_reward,
            process_options=tuple(config_lib.process_options(c).items()), norm=c.algo.norm,
            norm_shards=c.algo.norm_shards, estimator=c.algo.advantage,
            estimator_options=tuple(config_lib.estimator_options(c).items()), use_process=config_lib.uses_prm(c)),
        policy_options=PolicyOptions(
            loss=c.actor.policy_loss, loss_options=tuple(config_lib.policy_loss_options(c).items()),
            agg=c.actor.loss_agg, entropy_coef=c.actor.entropy_coef, kl_coef=c.actor.kl_coef,
            kl_estimator=c.actor.kl_estimator, epochs=c.actor.epochs, mini_batch=c.actor.mini_batch_size,
            micro_batch=c.actor.micro_batch_size, shuffle=c.actor.shuffle),
        chunk=c.logprob_chunk, keep_logits=c.keep_logits, score_micro_batch=c.score_micro_batch_size,
        unroll_update_layers=unrolls_update_layers(c.update_layers, platform),
        placement=placement,
        compiler_options=cpu_compiler_options(c.cpu_products, configs.policy.compute_dtype, platform))


def _platform(placement: Placement) -> str:
    """The platform the steps compile for: the mesh's devices' (a TPU topology when planning ahead
    of time), else the default backend's."""
    if placement.layout is None:
        return jax.default_backend()
    return placement.layout.mesh.devices.flat[0].platform
