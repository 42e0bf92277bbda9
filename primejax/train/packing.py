"""Stream sizes for padding-free steps, chosen on the host from the rollout batch.

A packed micro-batch (`primejax.models.packing`) needs static stream sizes that hold every group's
real tokens. The host knows the batch and which rows each micro-batch takes, so it takes the
largest group over all micro-batches and rounds it up to one of `buckets` sizes (1/buckets, 2/buckets
… of the padded size), so that a run compiles each step for a few sizes at most.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Capacity:
    """Static sizes of a packed micro-batch: `groups` streams (the batch shards) of `tokens` slots for
    the whole sequences and of `responses` slots for the scored response tokens."""

    groups: int
    tokens: int
    responses: int


def _bucket(need: int, full: int, buckets: int) -> int:
    step = math.ceil(full / buckets)
    return min(full, max(1, math.ceil(need / step)) * step)


def capacity(segment_ids: np.ndarray, response_mask: np.ndarray, order: np.ndarray, *, micro_batch: int,
             groups: int, buckets: int) -> Capacity | None:
    """The sizes for micro-batches of `micro_batch` consecutive rows of each row of `order`
    ([steps, rows], the rows of every step in order), each laid over `groups` streams of
    micro_batch / groups consecutive rows. None when packing would save nothing (both sizes full).

    segment_ids: [B, P + R] (non-zero on real tokens); response_mask: [B, R].
    """
    if micro_batch % groups:
        raise ValueError(f"micro_batch={micro_batch} must be a multiple of the {groups} batch shards")
    if buckets < 1:
        raise ValueError(f"buckets={buckets!r} must be a positive number of sizes")
    order = np.asarray(order).reshape(-1, micro_batch // groups)

    def largest(mask):
        return int(np.asarray(mask != 0).sum(-1)[order].sum(-1).max())

    rows = micro_batch // groups
    full_tokens, full_responses = rows * segment_ids.shape[1], rows * response_mask.shape[1]
    tokens = _bucket(largest(segment_ids), full_tokens, buckets)
    responses = _bucket(largest(response_mask), full_responses, buckets)
    if tokens == full_tokens and responses == full_responses:
        return None
    return Capacity(groups=groups, tokens=tokens, responses=responses)
