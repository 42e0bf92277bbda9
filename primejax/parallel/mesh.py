"""The device mesh of a run, and the multi-host start.

The mesh has three axes, in this order:

    data    pure data parallelism: rows split, params replicated
    fsdp    rows split and params sharded (ZeRO-3 / FSDP): weights are gathered where used
    tensor  attention heads, MLP and vocabulary split (tensor parallelism)

Sizes come from the config's `mesh` section; one of them may be -1, "whatever the devices leave".
`jax.make_mesh` orders the devices so that the last axes are the closest ones (on a TPU slice,
`tensor` and `fsdp` fall within hosts and ICI rings first).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import jax
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")
DISTRIBUTED_MODES = ("auto", "on", "off")
# Environment variables that say this process is one of several (set by cluster launchers, Cloud TPU
# pods, SLURM, Open MPI, or by hand for jax.distributed).
_MULTI_PROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")
_PROCESS_COUNT_ENV = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES")


class MeshError(ValueError):
    """A mesh the devices cannot form; the message names the config key and value."""


def mesh_shape(sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """(data, fsdp, tensor) sizes with the -1 entry resolved; their product is `num_devices`."""
    shape = []
    for axis in MESH_AXES:
        size = sizes[axis]
        if isinstance(size, bool) or not isinstance(size, int) or (size < 1 and size != -1):
            raise MeshError(f"config.mesh.{axis}={size!r}: must be a positive integer or -1")
        shape.append(size)
    free = [a for a, s in zip(MESH_AXES, shape) if s == -1]
    if len(free) > 1:
        raise MeshError(f"config.mesh.{free[1]}=-1: only one mesh axis may be -1 (config.mesh.{free[0]} is too)")
    fixed = math.prod(s for s in shape if s != -1)
    if free:
        if num_devices % fixed:
            raise MeshError(f"config.mesh.{free[0]}=-1: the other axes' product {fixed} does not divide the "
                            f"{num_devices} devices")
        shape[MESH_AXES.index(free[0])] = num_devices // fixed
    elif fixed != num_devices:
        raise MeshError(f"config.mesh: data × fsdp × tensor = {' × '.join(map(str, shape))} = {fixed}, but there are "
                        f"{num_devices} devices")
    return tuple(shape)


def make_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The (data, fsdp, tensor) mesh over `devices` (default: every device of every process)."""
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(sizes, len(devices))
    return jax.make_mesh(shape, MESH_AXES, devices=devices, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def wants_distributed(mode: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `jax.distributed.initialize()` should run: always ("on"), never ("off"), or ("auto")
    when the environment names a coordinator or more than one process."""
    if mode not in DISTRIBUTED_MODES:
        raise MeshError(f"config.mesh.distributed={mode!r}: must be one of {', '.join(DISTRIBUTED_MODES)}")
    if mode != "auto":
        return mode == "on"
    environ = os.environ if environ is None else environ
    if any(environ.get(name) for name in _MULTI_PROCESS_ENV):
        return True
    return any(environ.get(name, "1").isdigit() and int(environ.get(name, "1")) > 1 for name in _PROCESS_COUNT_ENV)


def initialize_distributed(mode: str) -> bool:
    """Starts `jax.distributed` when `wants_distributed(mode)`; call before any other JAX work.

    On Cloud TPU pods and under SLURM or Open MPI, JAX finds the coordinator itself; elsewhere set
    JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID on every
    process. Returns whether it started.
    """
    if not wants_distributed(mode) or jax.distributed.is_initialized():
        return False
    given = {key: int(os.environ[name]) for key, name in (("num_processes", "JAX_NUM_PROCESSES"),
                                                          ("process_id", "JAX_PROCESS_ID")) if os.environ.get(name)}
    jax.distributed.initialize(**given)
    return True
