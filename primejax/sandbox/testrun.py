"""The supervisor's side of one test: fork the confined child, feed it, watch it, and kill what it leaves.

The child's stdin is a memfd holding the test input; its stdout, stderr and value pipes are read as they fill.
The test ends when the child exits, when the wall clock runs out ("timeout"), or when stdout passes its cap
("output_limit"). Then every other process the test started is killed with the strategy the supervisor
chose (PID namespace, sandbox uid, or subreaper sweep) before the next test starts.
"""

from __future__ import annotations

import base64
import os
import select
import signal
import time
from collections.abc import Callable

from primejax.sandbox import program

_READ_CHUNK = 1 << 16
_DRAIN_SECONDS = 0.25      # after the kill sweep nothing can write; only a descriptor in flight can hold a pipe


class _Capture:
    """Bytes read from one pipe, keeping the head up to `cap` (or the tail, for stderr)."""

    def __init__(self, cap: int, keep_tail: bool = False):
        self.cap, self.keep_tail = cap, keep_tail
        self.data = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.data += chunk
        if len(self.data) > self.cap:
            if self.keep_tail:
                del self.data[: len(self.data) - self.cap]
            else:
                del self.data[self.cap:]

    @property
    def overflowed(self) -> bool:
        return self.total > self.cap

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", errors="replace")


def _memfd_with(data: bytes) -> int:
    fd = os.memfd_create("stdin", 0)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _classify(status: int, reason: str | None, cpu: float, limits: dict, stderr: str) -> tuple[str, int | None,
                                                                                                 int | None]:
    code = os.waitstatus_to_exitcode(status)
    exit_code, sig = (code, None) if code >= 0 else (None, -code)
    if reason is not None:
        return reason, exit_code, sig
    if sig is not None:
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= limits["cpu_seconds"] - 0.05):
            return "cpu_limit", exit_code, sig
        if sig == signal.SIGXFSZ:
            return "file_size_limit", exit_code, sig
        return "killed", exit_code, sig
    if exit_code == 0:
        return "ok", exit_code, sig
    if "MemoryError" in stderr[-2000:]:
        return "memory_limit", exit_code, sig
    if "[Errno 27] File too large" in stderr[-2000:]:        # Python ignores SIGXFSZ and raises EFBIG instead
        return "file_size_limit", exit_code, sig
    return "runtime_error", exit_code, sig


def _encode(capture: _Capture) -> str:
    return base64.b64encode(capture.data).decode("ascii")


def run_test(spec: dict, stdin: bytes, args: list | None, kill_leftovers: Callable[[], None]) -> dict:
    """Runs the program once on one test input and returns what happened (see `TestOutcome` in the API), with
    stdout, stderr and the value as base64 (raw bytes travel compactly; the caller decodes them)."""
    limits = spec["limits"]
    child_ends = {"stdin": _memfd_with(stdin)}
    (out_r, child_ends["stdout"]), (err_r, child_ends["stderr"]), (val_r, child_ends["value"]) = (
        os.pipe(), os.pipe(), os.pipe())
    confined_r, child_ends["confined"] = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(confined_r)
        program.run_in_child(spec, args, child_ends)
    for fd in child_ends.values():
        os.close(fd)
    # A call-based test answers on the value pipe; its stdout is kept like stderr, a tail for diagnostics.
    stdout_capture = (_Capture(limits["stdout_bytes"]) if args is None
                      else _Capture(limits["stderr_bytes"], keep_tail=True))
    captures = {out_r: stdout_capture, err_r: _Capture(limits["stderr_bytes"], keep_tail=True),
                val_r: _Capture(limits["stdout_bytes"])}
    answer = captures[out_r] if args is None else captures[val_r]
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    for fd in (*captures, pidfd):
        poller.register(fd, select.POLLIN)
    open_pipes = set(captures)

    def read_ready(timeout_s: float) -> bool:
        """Reads what is ready; returns True once the child has exited."""
        exited = False
        for fd, _ in poller.poll(max(timeout_s, 0.0) * 1000):
            if fd == pidfd:
                exited = True
                continue
            chunk = os.read(fd, _READ_CHUNK)
            if chunk:
                captures[fd].add(chunk)
            else:
                poller.unregister(fd)
                open_pipes.discard(fd)
        return exited

    reason = None
    deadline = start + limits["timeout_seconds"]
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            reason = "timeout"
            break
        if read_ready(remaining):
            break
        if answer.overflowed:
            reason = "output_limit"
            break
    wall = time.monotonic() - start
    # The child by its pidfd (it may have left its process group), then everything else the test started.
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _, status, usage = os.wait4(pid, 0)
    kill_leftovers()
    poller.unregister(pidfd)
    os.close(pidfd)
    drain_until = time.monotonic() + _DRAIN_SECONDS
    while open_pipes and time.monotonic() < drain_until:
        read_ready(drain_until - time.monotonic())
    for fd in captures:
        os.close(fd)
    confined = _confirmed(confined_r)
    if reason is None and answer.overflowed:
        reason = "output_limit"
    cpu = usage.ru_utime + usage.ru_stime
    status_name, exit_code, sig = _classify(status, reason if confined else "sandbox_error", cpu, limits,
                                            captures[err_r].text())
    return {
        "status": status_name,
        "exit_code": exit_code,
        "signal": sig,
        "stdout": _encode(captures[out_r]),
        "stderr": _encode(captures[err_r]),
        "value": _encode(captures[val_r]) if args is not None and status_name == "ok" else None,
        "wall_seconds": round(wall, 6),
        "cpu_seconds": round(cpu, 6),
    }


def _confirmed(confined_r: int) -> bool:
    """Whether the child wrote its byte of completed confinement (the write end is closed by now)."""
    os.set_blocking(confined_r, False)
    try:
        return os.read(confined_r, 1) == b"1"
    except BlockingIOError:
        return False
    finally:
        os.close(confined_r)
