"""The supervisor's side of one test: fork the confined child, feed it, watch it, and kill what it leaves.

The child's stdin is a memfd holding the test input; its stdout, stderr and value pipes are read as they fill.
The test ends when the child exits, when the wall clock runs out ("timeout"), or when stdout passes its cap
("output_limit"). Then every other process the test started is killed with the strategy the supervisor
chose (PID namespace, sandbox uid, or subreaper sweep) before the next test starts.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable

from primejax.sandbox import program

_READ_CHUNK = 1 << 16
_DRAIN_SECONDS = 1.0


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
    if exit_code == program.SETUP_FAILED_EXIT and stderr.startswith("sandbox setup failed"):
        return "sandbox_error", exit_code, sig
    if "MemoryError" in stderr[-2000:]:
        return "memory_limit", exit_code, sig
    if "[Errno 27] File too large" in stderr[-2000:]:        # Python ignores SIGXFSZ and raises EFBIG instead
        return "file_size_limit", exit_code, sig
    return "runtime_error", exit_code, sig


def run_test(spec: dict, stdin: bytes, args: list | None, kill_leftovers: Callable[[], None]) -> dict:
    """Runs the program once on one test input and returns what happened (see `TestOutcome` in the API)."""
    limits = spec["limits"]
    stdin_fd = _memfd_with(stdin)
    (out_r, out_w), (err_r, err_w), (val_r, val_w) = os.pipe(), os.pipe(), os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        program.run_in_child(spec, args, stdin_fd, out_w, err_w, val_w)
    for fd in (stdin_fd, out_w, err_w, val_w):
        os.close(fd)
    captures = {out_r: _Capture(limits["stdout_bytes"]), err_r: _Capture(limits["stderr_bytes"], keep_tail=True),
                val_r: _Capture(limits["stdout_bytes"])}
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
        if captures[out_r].overflowed or captures[val_r].overflowed:
            reason = "output_limit"
            break
    wall = time.monotonic() - start
    try:
        os.killpg(pid, signal.SIGKILL)       # the child and its whole process group, before reaping its pid
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
    if reason is None and (captures[out_r].overflowed or captures[val_r].overflowed):
        reason = "output_limit"
    cpu = usage.ru_utime + usage.ru_stime
    stderr = captures[err_r].text()
    status_name, exit_code, sig = _classify(status, reason, cpu, limits, stderr)
    return {
        "status": status_name,
        "exit_code": exit_code,
        "signal": sig,
        "stdout": captures[out_r].text(),
        "stderr": stderr,
        "value": captures[val_r].text() if args is not None and status_name == "ok" else None,
        "wall_seconds": round(wall, 6),
        "cpu_seconds": round(cpu, 6),
    }
