"""Meshes, sharding rules and multi-host placement: the mesh, not hand-written communication, does
data, FSDP and tensor parallelism.

| what | where |
| --- | --- |
| the (data, fsdp, tensor) mesh from config, `jax.distributed` start | `mesh`: `make_mesh`, `initialize_distributed` |
| logical axis names → mesh axes, activation constraints | `rules`: `Layout`, `PARAM_RULES`, `constrain` |
| params, optimizer states and batches into their shardings; back to the host | `placement` |
"""

from primejax.parallel.mesh import MESH_AXES, MeshError, initialize_distributed, make_mesh, mesh_shape
from primejax.parallel.placement import (
    gather_shares,
    init_opt_state,
    init_params_sharded,
    opt_state_shardings,
    param_shardings,
    process_share,
    put_global,
    to_host,
)
from primejax.parallel.rules import ACTIVATION_RULES, PARAM_RULES, Layout, active, constrain, constrain_rows, replicate

__all__ = [
    "ACTIVATION_RULES",
    "MESH_AXES",
    "MeshError",
    "PARAM_RULES",
    "Layout",
    "active",
    "constrain",
    "constrain_rows",
    "gather_shares",
    "init_opt_state",
    "init_params_sharded",
    "initialize_distributed",
    "make_mesh",
    "mesh_shape",
    "opt_state_shardings",
    "param_shardings",
    "process_share",
    "put_global",
    "replicate",
    "to_host",
]
