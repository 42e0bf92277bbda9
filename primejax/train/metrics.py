"""Training metrics: JSON lines, TensorBoard scalars, and a console progress bar.

`MetricsWriter` keeps two streams under the run's working directory:

- `metrics.jsonl`: the run's deterministic quantities (losses, rewards, accuracies), one line
  `{"step": k, <name>: <value>, ...}` per `write`, names sorted. A run resumed from the checkpoint
  of step k first drops the lines with step > k (and a line torn by a kill mid-write), so an
  interrupted-and-resumed run leaves this file byte-for-byte as an uninterrupted run does.
- `perf.jsonl`: timings and throughput (`write_perf`), which differ from run to run; kept apart so
  that the first file stays comparable. Resuming truncates it the same way.

Values become Python ints (integer and boolean scalars) or floats (everything else: numpy, jax,
bfloat16 scalars). JSON has no NaN or infinity, so a non-finite value is written as `null`;
TensorBoard gets it unchanged. Each line goes to the file as it is recorded (opened, appended,
closed; not fsynced: a line torn by a crash is dropped on resume). TensorBoard scalars go to `tensorboard/` (tensorboardX), the perf
stream under a `perf/` prefix; a resumed writer hides the old events from step k + 1 on, and a
fresh one hides all old events, as it empties the JSONL files.

`Progress` shows the step count and a few metrics on the console.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

import numpy as np

METRICS_FILE = "metrics.jsonl"
PERF_FILE = "perf.jsonl"
TENSORBOARD_DIR = "tensorboard"
PERF_PREFIX = "perf/"


def _scalar(name: str, value: Any) -> int | float:
    """`value` as a Python int (integer or boolean dtype) or float; raises unless it is one number."""
    array = np.asarray(value)
    if array.shape != ():
        raise ValueError(f"metric {name!r} must be a scalar, got shape {array.shape}")
    return int(array) if array.dtype.kind in "biu" else float(array)


def _json_line(step: int, metrics: Mapping[str, int | float]) -> str:
    """The JSONL record of one step: `step` first, then the metrics by name, non-finite values as null."""
    record: dict[str, Any] = {"step": int(step)}
    for name in sorted(metrics):
        value = metrics[name]
        record[name] = None if isinstance(value, float) and not math.isfinite(value) else value
    return json.dumps(record, allow_nan=False) + "\n"


def _truncate_jsonl(path: pathlib.Path, last_step: int) -> None:
    """Keeps the lines of `path` with step <= `last_step`; drops a torn last line.

    A complete line that is not a JSON record with a step is corruption, not a torn write: raises.
    The file is replaced atomically, and only when something is dropped.
    """
    if not path.exists():
        return
    data = path.read_bytes()
    kept = []
    for number, line in enumerate(data.splitlines(keepends=True), start=1):
        if not line.endswith(b"\n"):
            break
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number} is not a JSON record with a step: {line[:200]!r}") from error
        if step <= last_step:
            kept.append(line)
    truncated = b"".join(kept)
    if truncated != data:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(truncated)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


class MetricsWriter:
    """Appends per-step metrics to `metrics.jsonl` / `perf.jsonl` and TensorBoard; see the module docstring.

    `resume_step=k` continues a run restored from the checkpoint of step k; None starts the files
    afresh. `enabled=False` (non-zero processes of a multi-host run) makes every method a no-op and
    touches no file.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        tensorboard: bool = True,
        enabled: bool = True,
        resume_step: int | None = None,
    ):
        self.workdir = pathlib.Path(workdir)
        self.enabled = enabled
        self._tensorboard = None
        if not enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in (METRICS_FILE, PERF_FILE):
            if resume_step is None:
                (self.workdir / name).write_bytes(b"")
            else:
                _truncate_jsonl(self.workdir / name, resume_step)
        if tensorboard:
            from tensorboardX import SummaryWriter

            # TensorBoard reads event files in name order, and tensorboardX names them by the second:
            # the suffix keeps a writer opened in the same second as the last one both distinct and after it.
            self._tensorboard = SummaryWriter(
                logdir=str(self.workdir / TENSORBOARD_DIR),
                purge_step=0 if resume_step is None else resume_step + 1,
                filename_suffix=f".{time.time_ns()}",
            )

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Records the deterministic metrics of `step`: one line of `metrics.jsonl`, scalars under their names."""
        self._write(METRICS_FILE, "", step, metrics)

    def write_perf(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Records timings and throughput of `step`: one line of `perf.jsonl`, scalars under `perf/`."""
        self._write(PERF_FILE, PERF_PREFIX, step, metrics)

    def flush(self) -> None:
        """Pushes buffered TensorBoard events to disk (JSON lines are flushed as written)."""
        if self._tensorboard is not None:
            self._tensorboard.flush()

    def close(self) -> None:
        """Flushes and closes the TensorBoard writer; a second close does nothing."""
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write(self, filename: str, prefix: str, step: int, metrics: Mapping[str, Any]) -> None:
        """Appends one record to `filename` and the scalars, under `prefix`, to TensorBoard."""
        if not self.enabled:
            return
        if "step" in metrics:
            raise ValueError("'step' is reserved for the step number; rename the metric")
        values = {name: _scalar(name, value) for name, value in metrics.items()}
        with open(self.workdir / filename, "a", encoding="utf-8") as f:
            f.write(_json_line(step, values))
        if self._tensorboard is not None:
            for name, value in values.items():
                self._tensorboard.add_scalar(prefix + name, value, global_step=step)


def _format(value: Any) -> str:
    """A metric in a few characters: 4 significant digits."""
    return f"{float(np.asarray(value)):.4g}"


class Progress:
    """Console progress over training steps: a tqdm bar on a TTY, else one printed line per step.

    `keys` names the metrics shown after the step count (those missing from an update are skipped).
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        keys: Sequence[str] = (),
        enabled: bool = True,
        stream: IO[str] | None = None,
    ):
        self.total = total
        self.keys = tuple(keys)
        self.enabled = enabled
        self._stream = sys.stderr if stream is None else stream
        self._bar = None
        if enabled and self._stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, file=self._stream, unit="step", dynamic_ncols=True)

    def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> None:
        """Moves to `step` (the number of steps done) and shows the chosen metrics."""
        if not self.enabled:
            return
        shown = " ".join(f"{key}={_format(metrics[key])}" for key in self.keys if metrics and key in metrics)
        if self._bar is None:
            print(f"step {step}/{self.total} {shown}".rstrip(), file=self._stream, flush=True)
            return
        self._bar.set_postfix_str(shown, refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        """Ends the bar."""
        if self._bar is not None:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
