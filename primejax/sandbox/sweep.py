"""Killing what a sandboxed program leaves behind, and finding it: sweeps over /proc.

Three strategies, one per kind of confinement: as PID 1 of the sandbox's PID namespace (kill -1), by the
sandbox's own uid (a helper that takes the uid kills -1; or, from a multithreaded caller, pid by pid), and as a
child subreaper (every process below us). Each runs in rounds until nothing is left or its time is up.
"""

from __future__ import annotations

import os
import signal
import time

_KILL_SECONDS = 5.0


def _status(pid: str) -> dict[str, str]:
    """The fields of /proc/<pid>/status, read once; empty when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
    except OSError:
        return {}


def _pids() -> list[str]:
    return [entry for entry in os.listdir("/proc") if entry.isdigit()]


def _real_uid(status: dict[str, str]) -> int | None:
    return int(status["Uid"].split()[0]) if "Uid" in status else None


def _live_processes_of(uid: int) -> list[int]:
    """The processes of `uid` that are not zombies (a zombie is dead already; its parent reaps it)."""
    live = []
    for pid in _pids():
        status = _status(pid)
        if _real_uid(status) == uid and not status.get("State", "Z").startswith("Z"):
            live.append(int(pid))
    return live


def tasks_of_uid(uid: int) -> int:
    """Threads of every process whose real uid is `uid` (what RLIMIT_NPROC counts)."""
    statuses = (_status(pid) for pid in _pids())
    return sum(int(status.get("Threads", "1")) for status in statuses if _real_uid(status) == uid)


def _stat_fields(pid: str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, session, ...)."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def session_members(session: int) -> list[int]:
    """The live processes of a session."""
    members = []
    for pid in _pids():
        fields = _stat_fields(pid)
        if fields is not None and int(fields[3]) == session:
            members.append(int(pid))
    return members


def _descendants_of(ancestor: int) -> list[int]:
    """Every live process below `ancestor` in the process tree (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        fields = _stat_fields(pid)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(pid))
    found, frontier = [], [ancestor]
    while frontier:
        below = children.get(frontier.pop(), [])
        found += below
        frontier += below
    return found


def _reap() -> bool:
    """Reaps every child that has exited; returns False once this process has no children left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _sweep(kill_round) -> None:
    deadline = time.monotonic() + _KILL_SECONDS
    while kill_round() and time.monotonic() < deadline:
        time.sleep(0.002)
    _reap()


def kill_namespace() -> None:
    """As PID 1 of the sandbox's namespace: SIGKILL every other process in it, then reap them."""

    def kill_round():
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return _reap()

    _sweep(kill_round)


def _kill_uid_round(uid: int) -> bool:
    """Kills every process of `uid` once (a helper takes the uid and kills -1); False when there were none."""
    if not _live_processes_of(uid):
        return False
    helper = os.fork()
    if helper == 0:
        try:
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(helper, 0)
    return True


def kill_uid_processes(uid: int) -> None:
    """Kills every process of the sandbox's own uid by pid, round after round, from a process that is not their
    parent and may have threads (so it never forks); reaps none."""
    deadline = time.monotonic() + _KILL_SECONDS
    while time.monotonic() < deadline:
        victims = _live_processes_of(uid)
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.002)


def kill_uid(uid: int):
    """A sweep that kills every process of the sandbox's own uid and reaps our children among them."""

    def kill_round():
        killed = _kill_uid_round(uid)
        return _reap() or killed

    return lambda: _sweep(kill_round)


def kill_descendants() -> None:
    """As a child subreaper: kill every process below us (orphans come back to us) until none is left."""

    def kill_round():
        for pid in _descendants_of(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return _reap()

    _sweep(kill_round)
