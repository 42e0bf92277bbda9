"""Logical axis names → mesh axes: the sharding of params, optimizer states, activations and batches.

Every weight carries logical axis names (`primejax.models.params`), and so do the activations the
model constrains (`constrain`) and the rollout arrays. A rule set maps each logical name to mesh
axes; `Layout` pairs a mesh with a rule set and turns names into `NamedSharding`s.

    logical name   fsdp_tp (default)   meaning
    batch          (data, fsdp)        rows of a rollout batch, activations' leading axis
    vocab          tensor              the embedding's and the output head's vocabulary axis
    embed          fsdp                the hidden axis of every weight (FSDP shards it)
    heads, kv_heads, mlp   tensor      attention heads and the MLP's inner axis (tensor parallelism)
    act_heads, act_kv_heads, act_mlp, act_vocab   tensor   the same axes of activations
    layers, head_dim, length, act_embed, cache_len   —     not sharded

Parameter rule sets (`PARAM_RULES`): `fsdp_tp` shards weights over fsdp and tensor; `tp` over tensor
only (replicated over data and fsdp); `fsdp` over fsdp only; `replicated` nowhere. The policy, the
PRM and the reference each name one, so a frozen reference can differ from the trained models.
Activations always follow `ACTIVATION_RULES`.

A mesh axis shards a dimension only if its size divides it; otherwise the dimension falls back to
the axes before it in the rule, or to none (two kv heads on a tensor axis of 4 are replicated). A
mesh axis is used at most once per array.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from functools import wraps
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]

ACTIVATION_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("cache_len", None),
)

PARAM_RULES: dict[str, Rules] = {
    "fsdp_tp": (("vocab", "tensor"), ("embed", "fsdp"), ("heads", "tensor"), ("kv_heads", "tensor"),
                ("mlp", "tensor"), ("head_dim", None), ("layers", None)),
    "tp": (("vocab", "tensor"), ("embed", None), ("heads", "tensor"), ("kv_heads", "tensor"), ("mlp", "tensor"),
           ("head_dim", None), ("layers", None)),
    "fsdp": (("vocab", None), ("embed", "fsdp"), ("heads", None), ("kv_heads", None), ("mlp", None),
             ("head_dim", None), ("layers", None)),
    "replicated": (("vocab", None), ("embed", None), ("heads", None), ("kv_heads", None), ("mlp", None),
                   ("head_dim", None), ("layers", None)),
}


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def partition_spec(axes: Sequence[str | None], shape: Sequence[int], rules: Rules, mesh: Mesh) -> PartitionSpec:
    """The PartitionSpec of an array of `shape` whose dimensions have logical names `axes`.

    KeyError naming the logical axis when `rules` has no entry for it (None names are unsharded).
    """
    table = dict(rules)
    used: set[str] = set()
    out = []
    for name, size in zip(axes, shape, strict=True):
        if name is None:
            out.append(None)
            continue
        if name not in table:
            raise KeyError(f"no sharding rule for logical axis {name!r}; rules cover {', '.join(sorted(table))}")
        mesh_axes = tuple(a for a in _as_tuple(table[name]) if a not in used and mesh.shape.get(a, 1) > 1)
        while mesh_axes and size % math.prod(mesh.shape[a] for a in mesh_axes):
            mesh_axes = mesh_axes[:-1]
        used.update(mesh_axes)
        out.append(None if not mesh_axes else mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
    while out and out[-1] is None:
        out.pop()
    return PartitionSpec(*out)


@dataclasses.dataclass(frozen=True)
class Layout:
    """A mesh and the rules that place arrays on it (hashable: a static argument of jitted functions).

    `params` is a parameter rule set (a `PARAM_RULES` value); activations and batches follow
    `ACTIVATION_RULES`.
    """

    mesh: Mesh
    params: Rules = PARAM_RULES["fsdp_tp"]
    activations: Rules = ACTIVATION_RULES

    @property
    def rules(self) -> Rules:
        return self.params + self.activations

    @property
    def batch_shards(self) -> int:
        """How many ways the `batch` axis is split when it divides evenly."""
        return math.prod(self.mesh.shape.get(a, 1) for a in _as_tuple(dict(self.activations)["batch"]))

    def sharding(self, axes: Sequence[str | None], shape: Sequence[int]) -> NamedSharding:
        return NamedSharding(self.mesh, partition_spec(axes, shape, self.rules, self.mesh))

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def rows(self, shape: Sequence[int]) -> NamedSharding:
        """An array whose leading axis is a batch of rows, the rest unsharded."""
        return self.sharding(("batch",) + (None,) * (len(shape) - 1), shape)

    def with_params(self, name: str) -> Layout:
        """This layout with the parameter rule set `name` of PARAM_RULES."""
        if name not in PARAM_RULES:
            raise KeyError(f"unknown parameter sharding {name!r}; known: {', '.join(PARAM_RULES)}")
        return dataclasses.replace(self, params=PARAM_RULES[name])


_ACTIVE: contextvars.ContextVar[Layout | None] = contextvars.ContextVar("primejax_layout", default=None)


@contextlib.contextmanager
def active(layout: Layout | None) -> Iterator[None]:
    """Makes `layout` the one `constrain` uses while tracing inside the block (None: no constraints)."""
    token = _ACTIVE.set(layout)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def traced_under(fn: Callable, layout: Layout | None) -> Callable:
    """`fn` with `layout` active whenever it runs (so when jit traces it)."""

    @wraps(fn)
    def wrapped(*args, **kwargs):
        with active(layout):
            return fn(*args, **kwargs)

    return wrapped


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """x constrained to the sharding its logical `axes` have under the active layout.

    A no-op outside a layout and on a single device, so that single-device programs are unchanged.
    """
    layout = _ACTIVE.get()
    if layout is None or layout.mesh.size == 1:
        return x
    return jax.lax.with_sharding_constraint(x, layout.sharding(axes, x.shape))


def on_one_cpu() -> bool:
    """Whether the code being traced is for one CPU device: no active layout or a one-device one, and
    the active layout's devices (else the default backend) are CPUs."""
    layout = _ACTIVE.get()
    if layout is None:
        return jax.default_backend() == "cpu"
    return layout.mesh.size == 1 and layout.mesh.devices.flat[0].platform == "cpu"


def constrain_rows(tree: Any) -> Any:
    """Every leaf of `tree` constrained to rows over the batch axes (leading axis)."""
    return jax.tree.map(lambda x: constrain(x, ("batch",) + (None,) * (x.ndim - 1)), tree)


def replicate(tree: Any) -> Any:
    """Every leaf of `tree` constrained to be whole on every device (under an active layout)."""
    return jax.tree.map(lambda x: constrain(x, (None,) * x.ndim), tree)
