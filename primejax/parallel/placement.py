"""Arrays straight into their shardings, and back to the host, on one process or many.

- `param_shardings` / `init_params_sharded`: a model's weights under a layout; random init runs as
  one jitted program with sharded outputs, so each device computes only its shard.
- `opt_state_shardings` / `init_opt_state`: optimizer moments take their parameter's sharding,
  counters are replicated.
- `put_global`: a host value that every process holds identically (a rollout batch) placed as one
  global array; each process fills only the shards of its own devices.
- `to_host`: the whole value of a global array on every process (all-gathered across processes
  when it is not fully addressable), for small arrays such as tokens, scores and masks.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils

from primejax.models.config import ModelConfig
from primejax.models.params import Params, init_params, param_axes, param_shapes
from primejax.parallel.rules import Layout


def param_shardings(config: ModelConfig, layout: Layout) -> Params:
    """The NamedSharding of every weight of `config`'s model under `layout`'s parameter rules."""
    return jax.tree.map(lambda axes, shape: layout.sharding(axes, shape.shape), param_axes(config),
                        param_shapes(config), is_leaf=lambda x: isinstance(x, tuple))


def init_params_sharded(config: ModelConfig, key: jax.Array, layout: Layout, dtype: str = "float32") -> Params:
    """`init_params` with every weight created in its sharding (no device holds a whole model)."""
    return jax.jit(lambda k: init_params(config, k, dtype), out_shardings=param_shardings(config, layout))(key)


def opt_state_shardings(optimizer: optax.GradientTransformation, params: Params, shardings: Params,
                        layout: Layout) -> Any:
    """Shardings of `optimizer.init(params)`: per-parameter leaves as their parameter, others replicated."""
    shapes = jax.eval_shape(optimizer.init, params)
    return optax.tree_map_params(optimizer, lambda _, sharding: sharding, shapes, shardings,
                                 transform_non_params=lambda _: layout.replicated(),
                                 is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))


def init_opt_state(optimizer: optax.GradientTransformation, params: Params, shardings: Params,
                   layout: Layout) -> Any:
    """`optimizer.init(params)` created in the shardings of `opt_state_shardings`."""
    return jax.jit(optimizer.init, out_shardings=opt_state_shardings(optimizer, params, shardings, layout))(params)


def put_global(tree: Any, shardings: Any) -> Any:
    """Host arrays that every process holds identically, as global arrays in `shardings` (a tree
    matching `tree`, or one sharding for every leaf). Each process reads only its devices' shards."""
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)

    def put(value, sharding):
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(put, tree, shardings)


def to_host(x: Any) -> Any:
    """The full value of every leaf as numpy, on every process (a collective when arrays span processes)."""

    def fetch(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(leaf)

    return jax.tree.map(fetch, x)


def process_share(count: int, process: int | None = None) -> range:
    """The items of `count` that a process (default: this one) handles: a contiguous, near-equal share."""
    process = jax.process_index() if process is None else process
    bounds = np.linspace(0, count, jax.process_count() + 1).round().astype(int)
    return range(bounds[process], bounds[process + 1])


def gather_shares(local: np.ndarray, count: int) -> np.ndarray:
    """Every process's results for its `process_share(count)`, concatenated in item order, on every
    process (`local` itself on a single process)."""
    local = np.asarray(local)
    if jax.process_count() == 1:
        return local
    width = max(len(process_share(count, p)) for p in range(jax.process_count()))
    padded = np.zeros((width, *local.shape[1:]), local.dtype)
    padded[:len(local)] = local
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return np.concatenate([gathered[p, :len(process_share(count, p))] for p in range(jax.process_count())])
