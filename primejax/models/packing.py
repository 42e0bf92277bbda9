"""Padding-free layout: the real tokens of a padded batch, packed densely into streams.

A rollout batch [B, S] is mostly padding where lengths vary (prompts left-padded, responses
right-padded). Everything in a layer but attention acts on each token alone, so it can run on the
real tokens only. `Packing` says where they are: the B rows are cut into G groups of B / G rows
(G = the batch shards of a mesh, so that no token leaves its device) and group g's real tokens,
in row-major order, fill its stream's first slots; a stream has C slots (C, the capacity, at
least the group's real tokens; the slots beyond are spare and read row slot 0 of the group).

    to_stream: [B, S, ...] → [G, C, ...]      stream[g, c] = rows[g, take[g, c]]
    to_rows:   [G, C, ...] → [B, S, ...]      rows[b, s]   = stream[g(b), put[b, s]]

Pad slots of the rows read stream slot 0; callers mask them (attention never lets a pad be seen,
and a pad's own output is never read back).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp


@partial(jax.tree_util.register_dataclass, data_fields=["take", "put"], meta_fields=[])
@dataclasses.dataclass
class Packing:
    """take: [G, C] int32, the flat index within its group's rows ([B / G · S]) of every stream slot;
    put: [B, S] int32, the stream index of every row slot's token (0 for pads)."""

    take: jax.Array
    put: jax.Array

    @property
    def groups(self) -> int:
        return self.take.shape[0]


def pack(mask: jax.Array, groups: int, capacity: int) -> Packing:
    """The packing of the non-zero slots of `mask` [B, S] into `groups` streams of `capacity` slots.

    A group with more real tokens than `capacity` would lose the excess: the caller bounds the
    capacity from the data (`primejax.train.packing`).
    """
    rows, length = mask.shape
    if rows % groups:
        raise ValueError(f"groups={groups} must divide the batch's {rows} rows")
    real = (mask != 0).reshape(groups, -1)
    take = jax.vmap(lambda m: jnp.nonzero(m, size=capacity, fill_value=0)[0])(real).astype(jnp.int32)
    put = jnp.where(real, jnp.cumsum(real, axis=1, dtype=jnp.int32) - 1, 0)
    return Packing(take=take, put=put.reshape(rows, length))


def take_slots(x: jax.Array, index: jax.Array) -> jax.Array:
    """x [G, N, ...] indexed along N by index [G, M]: [G, M, ...], whole trailing slices per index."""
    return jax.vmap(lambda xg, ig: jnp.take(xg, ig, axis=0, mode="clip"))(x, index)


def to_stream(x: jax.Array, packing: Packing) -> jax.Array:
    """[B, S, ...] → [G, C, ...]: each group's real tokens, packed."""
    return take_slots(x.reshape(packing.groups, -1, *x.shape[2:]), packing.take)


def to_rows(x: jax.Array, packing: Packing) -> jax.Array:
    """[G, C, ...] → [B, S, ...]: the stream's tokens back in their row slots (pads read slot 0)."""
    rows, length = packing.put.shape
    return take_slots(x, packing.put.reshape(packing.groups, -1)).reshape(rows, length, *x.shape[2:])
