"""Verifying a batch in parallel: worker processes with per-item deadlines that survive a dying worker.

    with VerifierPool(VerifierConfig(), num_workers=8) as pool:
        pending = pool.submit(samples)          # returns at once; verification overlaps device work
        ...
        verdicts = pending.result()             # one Verdict per sample, in order

Each item goes to an idle worker with two deadlines: the reward's own time bound, after which the worker's soft
clock stops the verification, and a hard deadline a little later, at which the pool SIGKILLs the worker and
starts another. A worker that dies (segfault, OOM kill) costs its current item only: that item scores 0 with
the reason, and the batch goes on. Workers are forked from a forkserver that has the verifiers imported, so
a replacement starts in milliseconds and the trainer's (multithreaded) process is never forked.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import time
from collections.abc import Sequence
from typing import Any

from primejax.verifiers import worker
from primejax.verifiers.rewards import BoundReward, VerifierConfig, bound_reward, route
from primejax.verifiers.verdict import Verdict

_HARD_GRACE_SECONDS = 0.25
_HARD_GRACE_FRACTION = 0.1
_STARTUP_SECONDS = 120.0


@dataclasses.dataclass(frozen=True)
class Sample:
    """One response to score: `ability` or `data_source` chooses the reward function (see `rewards.route`)."""

    response: str
    ground_truth: Any
    ability: str | None = None
    data_source: str | None = None


@dataclasses.dataclass
class PoolStats:
    """Counts since the pool started, for metrics."""

    items: int = 0
    timeouts: int = 0
    errors: int = 0
    worker_deaths: int = 0
    workers_started: int = 0
    seconds: float = 0.0


class _Worker:
    def __init__(self, context, memory_mb: int):
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=worker.worker_main, args=(child_conn, memory_mb), daemon=True)
        self.process.start()
        child_conn.close()
        self.job: tuple[int, float] | None = None    # (index, hard deadline)
        # A worker's start is not part of any item's time: multiprocessing re-imports the parent's main module
        # in the child when it is a script (`python my_script.py`), which can take seconds.
        try:
            ready = self.conn.poll(_STARTUP_SECONDS) and self.conn.recv() is None
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.stop(kill=True)
            raise RuntimeError(f"a verifier worker did not start within {_STARTUP_SECONDS:.0f} s "
                               f"(exit code {self.process.exitcode})")

    def send(self, index: int, reward: BoundReward, sample: Sample) -> None:
        grace = max(_HARD_GRACE_SECONDS, _HARD_GRACE_FRACTION * reward.timeout_seconds)
        self.job = (index, time.monotonic() + reward.timeout_seconds + grace)
        self.conn.send((index, reward.fn, sample.response, sample.ground_truth, reward.timeout_seconds))

    def stop(self, kill: bool) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.close()
            except OSError:
                pass
        self.process.join(timeout=None if kill else 5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class VerifierPool:
    """Scores batches of samples in `num_workers` processes (default: every core)."""

    def __init__(self, config: VerifierConfig | None = None, *, num_workers: int | None = None):
        if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, int)
                                        or num_workers < 1):
            raise ValueError(f"num_workers must be a positive integer, got {num_workers!r}")
        self.config = config or VerifierConfig()
        self.num_workers = num_workers or os.cpu_count() or 1
        self.stats = PoolStats()
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["primejax.verifiers"])
        self._idle: list[_Worker] = []
        # One thread runs one batch at a time; batches submitted meanwhile wait their turn.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="verifier-pool")
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, samples: Sequence[Sample]) -> concurrent.futures.Future:
        """Starts scoring `samples` in the background; the future's result is their verdicts, in order."""
        if self._closed:
            raise RuntimeError("the verifier pool is closed")
        return self._executor.submit(self._verify, list(samples))

    def verify(self, samples: Sequence[Sample]) -> list[Verdict]:
        """Scores `samples` and returns their verdicts, in order."""
        return self.submit(samples).result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        for idle in self._idle:
            idle.stop(kill=False)
        self._idle.clear()

    def _start_worker(self) -> _Worker:
        self.stats.workers_started += 1
        return _Worker(self._context, self.config.worker_memory_mb)

    def _record(self, verdicts: list, index: int, verdict: Verdict) -> None:
        verdicts[index] = verdict
        if verdict.error == "timeout":
            self.stats.timeouts += 1
        elif verdict.error is not None:
            self.stats.errors += 1

    def _verify(self, samples: list[Sample]) -> list[Verdict]:
        start = time.monotonic()
        verdicts: list[Verdict | None] = [None] * len(samples)
        rewards: dict[str, BoundReward] = {}
        queue: collections.deque[tuple[int, BoundReward]] = collections.deque()
        for index, sample in enumerate(samples):
            try:
                name = route(sample.ability, sample.data_source)
                if name not in rewards:
                    rewards[name] = bound_reward(name, self.config)
            except ValueError as error:
                self._record(verdicts, index, Verdict.failed(str(error)))
                continue
            queue.append((index, rewards[name]))
        self._run_queue(samples, queue, verdicts)
        self.stats.items += len(samples)
        self.stats.seconds += time.monotonic() - start
        return verdicts

    def _run_queue(self, samples: list[Sample], queue: collections.deque, verdicts: list) -> None:
        busy: list[_Worker] = []
        while queue or busy:
            while queue and len(busy) < self.num_workers:
                index, reward = queue.popleft()
                current = self._idle.pop() if self._idle else self._start_worker()
                current.send(index, reward, samples[index])
                busy.append(current)
            next_deadline = min(w.job[1] for w in busy)
            waitables = [w.conn for w in busy] + [w.process.sentinel for w in busy]
            ready = set(multiprocessing.connection.wait(waitables, max(0.0, next_deadline - time.monotonic())))
            for current in list(busy):
                index, hard_deadline = current.job
                if current.conn in ready:
                    try:
                        _, verdict, retire = current.conn.recv()
                    except (EOFError, OSError):
                        verdict, retire = None, True
                    if verdict is not None:
                        busy.remove(current)
                        self._record(verdicts, index, verdict)
                        if retire:
                            current.stop(kill=False)
                        else:
                            current.job = None
                            self._idle.append(current)
                        continue
                if current.process.sentinel in ready or current.conn in ready:
                    busy.remove(current)
                    current.stop(kill=True)
                    self.stats.worker_deaths += 1
                    code = current.process.exitcode
                    how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    self._record(verdicts, index, Verdict.failed(f"worker died ({how})"))
                elif time.monotonic() >= hard_deadline:
                    busy.remove(current)
                    current.stop(kill=True)
                    self._record(verdicts, index, Verdict.failed("timeout", killed=True))
