"""Exact-resume training checkpoints, written with orbax.

The checkpoint of step `s` is the directory `<directory>/<s>/` holding two items:

- `arrays`: a pytree of arrays — policy and PRM parameters, both optax states, the PRNG key as raw
  `uint32` key data (`jax.random.key_data`), step counters. `restore` gives it back bit-exactly in the
  tree structure, dtypes and shardings of a template (`arrays_like`), NamedTuple optimizer states included.
- `host`: a JSON document — data iterator position, refill buffer, step, config snapshot. It
  round-trips through JSON: tuples come back as lists and dict keys as strings.

With a `best_metric`, the metrics passed to `save` are stored with the step (orbax's `metrics` item)
and rank it; without one they are not stored.

Guarantees:

- Atomic: orbax writes a step into `<s>.orbax-checkpoint-tmp/` and renames it to `<s>/` only
  once every item is written, so a process killed mid-save leaves no directory that `all_steps`,
  `latest_step` or `restore` would take; the leftovers are removed when a `Checkpointer` next opens
  the directory. Retired steps are first renamed into `trash/`, then deleted, so a kill mid-deletion
  cannot leave a half-deleted step behind either.
- Committed on return: `save` returns once the step is committed (unless `blocking=False`; then the
  next `save`, `wait` or `close` waits for it). The device-to-host copy happens before `save` returns
  in both modes, so the caller may donate or overwrite its arrays straight after.
- Retention: the newest `keep` steps plus the `keep_best` best steps by `best_metric` are kept. Steps
  whose metrics lack `best_metric`, or hold a non-finite value for it, never count as best; ties go
  to the earlier step.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jax
import orbax.checkpoint as ocp
from etils import epath

_TRASH = "trash"


def _metric_value(metrics: Mapping[str, Any] | None, name: str) -> float | None:
    """The finite value of `name` in a step's metrics, or None when it cannot rank the step."""
    if not metrics or name not in metrics:
        return None
    value = float(metrics[name])
    return value if math.isfinite(value) else None


def _best_first(
    entries: Sequence[tuple[int, Mapping[str, Any] | None]], name: str, mode: Literal["max", "min"]
) -> list[int]:
    """The steps of `(step, metrics)` entries that hold `name`, best first (ties: earlier step first)."""
    sign = -1.0 if mode == "max" else 1.0
    ranked = [(sign * value, step) for step, metrics in entries if (value := _metric_value(metrics, name)) is not None]
    return [step for _, step in sorted(ranked)]


@dataclasses.dataclass(frozen=True)
class _LatestPlusBest:
    """Orbax preservation policy: the newest `keep` steps plus the `keep_best` best by `metric`.

    Orbax's own `max_to_keep` with a `best_fn` keeps the best `max_to_keep` steps *instead of* the
    newest (and, by default, every step saved without metrics), so the union is written out here.
    """

    keep: int
    metric: str | None
    mode: Literal["max", "min"]
    keep_best: int

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
        """One flag per checkpoint (orbax passes them sorted by step): True keeps it."""
        kept = set(sorted(info.step for info in checkpoints)[-self.keep :])
        if self.metric is not None and self.keep_best:
            entries = [(info.step, info.metrics) for info in checkpoints]
            kept.update(_best_first(entries, self.metric, self.mode)[: self.keep_best])
        return [info.step in kept for info in checkpoints]


def _absolute(directory: str | os.PathLike) -> epath.Path:
    """`directory` as orbax needs it: local paths made absolute, URLs (`gs://...`) as given."""
    name = os.fspath(directory)
    return epath.Path(name if "://" in name else os.path.abspath(name))


def _check_no_typed_keys(arrays: Any) -> None:
    """Raises if `arrays` holds a typed PRNG key, which must be saved as `jax.random.key_data`."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(arrays):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            raise TypeError(
                f"leaf {jax.tree_util.keystr(path)} is a typed PRNG key; save jax.random.key_data(key) instead"
            )


def _restore_target(leaf: Any) -> jax.ShapeDtypeStruct:
    """The `ShapeDtypeStruct` orbax restores one leaf into: a template's own, or an array's shape, dtype and sharding."""
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return leaf
    sharding = leaf.sharding if isinstance(leaf, jax.Array) else None
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


class Checkpointer:
    """Saves and restores training states (`arrays`, `host`) under one directory; see the module docstring."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int = 3,
        best_metric: str | None = None,
        best_mode: Literal["max", "min"] = "max",
        keep_best: int = 1,
    ):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        if keep_best < 0:
            raise ValueError(f"keep_best must be non-negative, got {keep_best}")
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        self.best_metric = best_metric
        self.best_mode = best_mode
        options = ocp.CheckpointManagerOptions(
            create=False,
            cleanup_tmp_directories=True,
            todelete_subdir=_TRASH,
            preservation_policy=_LatestPlusBest(keep, best_metric, best_mode, keep_best),
            # Orbax stores a step's metrics only when it tracks a best_fn; the ranking itself is ours.
            best_fn=None if best_metric is None else (lambda metrics: _metric_value(metrics, best_metric)),
            best_mode=best_mode,
        )
        self._manager = ocp.CheckpointManager(_absolute(directory), options=options)
        self._empty_trash()

    @property
    def directory(self) -> epath.Path:
        """The directory holding one subdirectory per step."""
        return self._manager.directory

    def save(
        self,
        step: int,
        arrays: Any,
        host: Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
        *,
        blocking: bool = True,
    ) -> None:
        """Writes step `step`; returns once it is committed, or at once when `blocking=False`."""
        _check_no_typed_keys(arrays)
        self.wait()
        if step in self.all_steps():
            raise FileExistsError(f"checkpoint step {step} already exists in {self.directory}")
        stored = None if self.best_metric is None else {k: float(v) for k, v in (metrics or {}).items()}
        self._manager.save(
            step,
            args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays), host=ocp.args.JsonSave(dict(host))),
            metrics=stored,
            force=True,
        )
        if blocking:
            self.wait()

    def wait(self) -> None:
        """Blocks until a pending save is committed and the steps it retired are deleted."""
        self._manager.wait_until_finished()
        self._empty_trash()

    def all_steps(self) -> list[int]:
        """The committed steps, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest committed step, or None when there is none."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The best committed step by `best_metric`, or None (no metric, or no step holding it)."""
        if self.best_metric is None:
            return None
        entries = [(step, self._manager.metrics(step)) for step in self.all_steps()]
        ranked = _best_first(entries, self.best_metric, self.best_mode)
        return ranked[0] if ranked else None

    def restore(self, step: int | None = None, *, arrays_like: Any) -> tuple[Any, dict[str, Any]]:
        """Reads step `step` (default: the latest) as `(arrays, host)`.

        `arrays_like` is a pytree of arrays or `jax.ShapeDtypeStruct`s with the structure, dtypes and
        shardings to restore into; arrays keep their own sharding, and a struct without one lands on
        the default device.
        """
        if not self.directory.exists():
            raise FileNotFoundError(f"checkpoint directory {self.directory} does not exist")
        steps = self.all_steps()
        if step is None and not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if step is None:
            step = steps[-1]
        if step not in steps:
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; available steps: {steps}")
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                arrays=ocp.args.StandardRestore(jax.tree.map(_restore_target, arrays_like)),
                host=ocp.args.JsonRestore(),
            ),
        )
        return restored["arrays"], restored["host"]

    def close(self) -> None:
        """Waits for a pending save and releases orbax's resources."""
        self.wait()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _empty_trash(self) -> None:
        """Deletes the steps retired into `trash/` (primary process only)."""
        trash = self.directory / _TRASH
        if jax.process_index() == 0 and trash.exists():
            trash.rmtree()
