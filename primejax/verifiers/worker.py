"""A verifier worker process: scores one response at a time under a soft clock and an address-space limit.

Once started the worker sends None (ready); then the pool sends (index, reward function, response, ground
truth, seconds) and gets back (index, Verdict, retire). The soft clock is SIGALRM raising `VerificationTimeout`,
a BaseException so that no library's `except Exception` swallows it; code stuck in C (a huge integer power, say)
does not see it, and the pool kills the whole worker at its hard deadline instead. After a timeout or a
MemoryError the worker retires (its state may be half-updated) and the pool starts a fresh one.
"""

from __future__ import annotations

import resource
import signal
import time

from primejax.verifiers.verdict import Verdict


class VerificationTimeout(BaseException):
    """The soft time limit of one verification ran out."""


def _alarm(signum, frame):
    raise VerificationTimeout


def _verdict(result) -> Verdict:
    if isinstance(result, Verdict):
        return result
    if isinstance(result, bool) or not isinstance(result, (int, float)):
        raise TypeError(f"a reward function must return a Verdict or a number, got {type(result).__name__}")
    return Verdict(float(result))


def score_one(fn, response: str, ground_truth, seconds: float) -> tuple[Verdict, bool]:
    """Runs one verification under the soft clock; returns the verdict and whether the worker should retire."""
    start = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return _verdict(fn(response, ground_truth)), False
    except VerificationTimeout:
        return Verdict.failed("timeout", seconds=round(time.monotonic() - start, 3)), True
    except MemoryError:
        return Verdict.failed("memory limit"), True
    except Exception as error:  # noqa: BLE001 - a reward function's failure is its item's error, nothing more
        return Verdict.failed(f"error: {type(error).__name__}: {error}"[:300]), False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def worker_main(conn, memory_mb: int) -> None:
    """Serves jobs from `conn` until it closes or the worker retires."""
    limit = memory_mb << 20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send(None)  # ready: item deadlines start after this
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        index, fn, response, ground_truth, seconds = job
        verdict, retire = score_one(fn, response, ground_truth, seconds)
        conn.send((index, verdict, retire))
        if retire:
            return
