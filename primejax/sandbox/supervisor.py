"""The sandbox supervisor: a short-lived process, one per program, that builds the isolation and runs the tests.

It reads one JSON request on stdin and writes one JSON result on stdout (see `api.py`). It runs as the
caller's user; it never executes the program's code itself, only forks children that confine themselves first
(`program.py`). Two modes:

- "namespaces" (root): new mount, network, PID, IPC and UTS namespaces. The network namespace has no
  interface up, so no address is reachable, loopback included. /tmp, /var/tmp and /dev/shm are fresh tmpfs
  mounts; the Python installation is re-exposed read-only where a private ancestor (such as a 0700 home)
  would hide it from the sandbox uid, and that ancestor's other contents stay hidden. A first child becomes
  PID 1 of the new namespace and runs the tests: after each test it kills every other process of the
  namespace, and when it dies the kernel kills them all.
- "process" (no root, or namespaces refused): the supervisor is a child subreaper, so every orphan the program
  leaves comes back to it and is killed; as root the tests still run under their own uid and the kill sweeps
  that uid. Network is blocked by seccomp alone.

In both, each test child applies rlimits, the sandbox uid (root only), no_new_privs, Landlock and seccomp.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import site
import stat
import sys
import tempfile
import time

from primejax.sandbox import linux, seccomp, testrun

_NAMESPACES = linux.CLONE_NEWNS | linux.CLONE_NEWNET | linux.CLONE_NEWPID | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS
_SYSTEM_READ = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys/devices/system/cpu")
_KILL_SECONDS = 5.0
_TMPFS_INODES = 16384                # files a program may create in its private tmpfs mounts
_WAIT_SLACK_SECONDS = 2.0


class SandboxError(Exception):
    """The sandbox could not be built as requested; no program ran."""


def _read_proc_field(pid: str, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _pids() -> list[str]:
    return [entry for entry in os.listdir("/proc") if entry.isdigit()]


def _real_uid(pid: str) -> int | None:
    uids = _read_proc_field(pid, "Uid")
    return None if uids is None else int(uids.split()[0])


def _live_processes_of(uid: int) -> list[int]:
    """The processes of `uid` that are not zombies (a zombie is dead already; its parent reaps it)."""
    live = []
    for pid in _pids():
        state = _read_proc_field(pid, "State")
        if state is not None and not state.startswith("Z") and _real_uid(pid) == uid:
            live.append(int(pid))
    return live


def _tasks_of_uid(uid: int) -> int:
    """Threads of every process whose real uid is `uid` (what RLIMIT_NPROC counts)."""
    return sum(int(_read_proc_field(pid, "Threads") or 1) for pid in _pids() if _real_uid(pid) == uid)


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


def _kill_namespace() -> None:
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


def _kill_uid(uid: int):
    """A sweep that kills every process of the sandbox's own uid and reaps our children among them."""

    def kill_round():
        killed = _kill_uid_round(uid)
        return _reap() or killed

    return lambda: _sweep(kill_round)


def _kill_descendants() -> None:
    """As a child subreaper: kill every process below us (orphans come back to us) until none is left."""

    def kill_round():
        for pid in _descendants_of(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return _reap()

    _sweep(kill_round)


def workdir_prefix(supervisor_pid: int) -> str:
    """The name a process-mode working directory starts with, so that whoever kills a supervisor can remove it."""
    return f"primejax-sandbox-{supervisor_pid}-"


def remove_tree(path: str) -> None:
    shutil.rmtree(path, onerror=_unlock_and_remove)


def _unlock_and_remove(function, path, _error) -> None:
    """rmtree's error handler: a program may have taken the permissions off its own files and directories."""
    for target in (os.path.dirname(path), path):
        try:
            os.chmod(target, 0o700, follow_symlinks=False)
        except (OSError, NotImplementedError):
            pass
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


def _empty(directory: str) -> None:
    """Removes everything inside `directory` (symbolic links as links, never their targets)."""
    for entry in os.scandir(directory):
        if entry.is_dir(follow_symlinks=False):
            remove_tree(entry.path)
        else:
            os.unlink(entry.path)


def _closed_ancestor(path: str) -> str | None:
    """The outermost ancestor of `path` that other users cannot search, if any."""
    current = "/"
    for part in path.strip("/").split("/")[:-1]:
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return current
    return None


def _outermost(paths: list[str]) -> list[str]:
    kept = []
    for path in sorted(set(paths), key=len):
        if not any(path == top or path.startswith(top.rstrip("/") + "/") for top in kept):
            kept.append(path)
    return kept


def _expose(paths: list[str], stage_root: str) -> None:
    """Makes `paths` reachable by other users: each private ancestor is covered by an empty tmpfs into which
    only the needed paths are bind-mounted back, read-only."""
    hidden: dict[str, list[str]] = {}
    for path in _outermost(paths):
        ancestor = _closed_ancestor(path)
        if ancestor is not None:
            hidden.setdefault(ancestor, []).append(path)
    os.mkdir(stage_root, 0o700)
    for ancestor in _outermost(list(hidden)):
        inside = [p for a, ps in hidden.items() if a == ancestor or a.startswith(ancestor + "/") for p in ps]
        staged = []
        for path in inside:
            stage = os.path.join(stage_root, str(len(os.listdir(stage_root))))
            os.mkdir(stage)
            linux.mount(path, stage, None, linux.MS_BIND | linux.MS_REC)
            staged.append((stage, path))
        linux.mount("tmpfs", ancestor, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755,size=1m")
        for stage, path in staged:
            os.makedirs(path, 0o755, exist_ok=True)
            linux.mount(stage, path, None, linux.MS_BIND | linux.MS_REC)
            linux.mount(None, path, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY)
            linux.umount(stage)


def _build_filesystem(request: dict, uid: int) -> str:
    """In the new mount namespace: the sandbox's view of the filesystem; returns the working directory."""
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    size = request["limits"]["disk_mb"]
    tmpfs_flags = linux.MS_NOSUID | linux.MS_NODEV
    linux.mount("tmpfs", "/tmp", "tmpfs", tmpfs_flags, f"mode=1777,size={size}m,nr_inodes={_TMPFS_INODES}")
    _expose(request["python_paths"], "/tmp/.expose")
    for path, path_size in (("/var/tmp", 1), ("/dev/shm", size)):
        if os.path.isdir(path):
            linux.mount("tmpfs", path, "tmpfs", tmpfs_flags, f"mode=1777,size={path_size}m,nr_inodes={_TMPFS_INODES}")
    workdir = "/tmp/sandbox"
    os.mkdir(workdir, 0o700)
    os.chown(workdir, uid, uid)
    return workdir


def _choose_mode(request: dict) -> str:
    wanted = request["isolation"]
    if os.geteuid() != 0:
        if wanted == "namespaces":
            raise SandboxError(f"isolation='namespaces' needs root; this process runs as uid {os.geteuid()}")
        return "process"
    return "process" if wanted == "process" else "namespaces"


def _test_spec(request: dict, mode: str, uid: int | None, workdir: str) -> tuple[dict, int]:
    """What each test child needs to confine itself (see `program.py`), and the Landlock ABI it will use."""
    limits = request["limits"]
    landlock_abi = linux.landlock_abi_version()
    if uid is None:
        allowance = _tasks_of_uid(os.getuid()) + limits["max_processes"]
    else:
        allowance = limits["max_processes"]
    proc = ["/proc"] if mode == "namespaces" else []         # elsewhere each child may read its own entry only
    return {
        "limits": limits,
        "process_allowance": allowance,
        "uid": uid,
        "landlock": landlock_abi > 0,
        "read_paths": list(_SYSTEM_READ) + request["python_paths"] + proc,
        "read_own_proc": mode != "namespaces",
        "write_paths": [workdir] + (["/dev/shm"] if mode == "namespaces" else []),
        "seccomp": seccomp.supported(),
        "restrict_signals": mode == "process" and uid is None and landlock_abi < 6,
        "workdir": workdir,
        "prelude": request["prelude"],
        "source": request["source"],
        "fn_name": request["fn_name"],
    }, landlock_abi


def _layers(mode: str, spec: dict, landlock_abi: int) -> list[str]:
    layers = ["namespaces: mount, network, pid, ipc, uts" if mode == "namespaces" else "process group + subreaper"]
    layers.append(f"uid {spec['uid']}" if spec["uid"] is not None else f"caller's uid {os.getuid()}")
    if landlock_abi:
        layers.append(f"landlock ABI {landlock_abi}")
    if spec["seccomp"]:
        layers.append("seccomp" + (" (signals restricted)" if spec["restrict_signals"] else ""))
    layers.append("rlimits")
    return layers


def _run_tests(request: dict, spec: dict, kill_leftovers) -> list[dict]:
    # What `site` gives a normal interpreter and this one (started with -S) lacks: the caller's module path
    # and the builtins exit, quit, help, copyright, credits and license.
    sys.path.extend(entry for entry in request["sys_path"] if entry not in sys.path)
    site.setquit()
    site.sethelper()
    site.setcopyright()
    for name in request["preload"]:
        __import__(name)
    budget_end = time.monotonic() + request["total_timeout"]
    outcomes = []
    for test in request["tests"]:
        remaining = budget_end - time.monotonic()
        if remaining <= 0:
            outcomes.append({"status": "not_run", "exit_code": None, "signal": None, "stdout": "", "stderr": "",
                             "value": None, "wall_seconds": 0.0, "cpu_seconds": 0.0})
            continue
        limits = dict(spec["limits"], timeout_seconds=min(spec["limits"]["timeout_seconds"], remaining))
        args = test["args"] if request["fn_name"] is not None else None
        outcomes.append(testrun.run_test(dict(spec, limits=limits), test["stdin"].encode(), args, kill_leftovers))
        for directory in spec["write_paths"]:         # each test starts from empty directories
            _empty(directory)
    return outcomes


def _run_as_namespace_init(request: dict, spec: dict) -> list[dict]:
    """Forks PID 1 of the new namespace, which mounts its /proc and runs the tests; waits within the budget."""
    read_end, write_end = os.pipe()
    init = os.fork()
    if init == 0:
        try:
            os.close(read_end)
            try:
                linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
                linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
                payload = json.dumps({"tests": _run_tests(request, spec, _kill_namespace)})
            except BaseException as error:  # noqa: BLE001 - the init reports any failure to the supervisor
                payload = json.dumps({"error": f"sandbox init failed: {error!r}"})
            with os.fdopen(write_end, "w") as out:
                out.write(payload)
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + request["total_timeout"] + _WAIT_SLACK_SECONDS
    poller = select.poll()
    poller.register(read_end, select.POLLIN)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            os.kill(init, signal.SIGKILL)
            os.waitpid(init, 0)
            raise SandboxError("the sandbox overran its total time budget")
        chunk = os.read(read_end, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(init, 0)
    result = json.loads(b"".join(chunks))
    if "error" in result:
        raise SandboxError(result["error"])
    return result["tests"]


def supervise(request: dict) -> dict:
    """Builds the isolation, runs every test and returns {"isolation": ..., "tests": [...]}."""
    mode = _choose_mode(request)
    uid = request["sandbox_uid"] if os.geteuid() == 0 else None
    if mode == "namespaces":
        try:
            linux.unshare(_NAMESPACES)
        except OSError as error:
            if request["isolation"] == "namespaces":
                raise SandboxError(f"isolation='namespaces' is unavailable here: {error}") from error
            mode = "process"
        else:
            workdir = _build_filesystem(request, uid)
    if mode == "process":
        if not seccomp.supported():
            raise SandboxError(f"no namespaces and no seccomp filter for {os.uname().machine}: "
                               "cannot keep programs off the network")
        if uid is not None:
            closed = [p for p in request["python_paths"] if _closed_ancestor(p)]
            if closed:
                raise SandboxError(f"isolation='process' runs programs as uid {uid}, which cannot reach the Python "
                                   f"installation at {closed[0]} (a parent directory is private); use "
                                   "isolation='namespaces' or a world-readable Python")
        workdir = tempfile.mkdtemp(prefix=workdir_prefix(os.getpid()), dir=request["scratch_dir"])
        if uid is not None:
            os.chown(workdir, uid, uid)
    spec, landlock_abi = _test_spec(request, mode, uid, workdir)
    isolation = {"mode": mode, "layers": _layers(mode, spec, landlock_abi)}
    if mode == "namespaces":
        return {"isolation": isolation, "tests": _run_as_namespace_init(request, spec)}
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    kill_leftovers = _kill_uid(uid) if uid is not None else _kill_descendants
    try:
        return {"isolation": isolation, "tests": _run_tests(request, spec, kill_leftovers)}
    finally:
        kill_leftovers()
        remove_tree(workdir)


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != request["parent_pid"]:
        sys.exit(1)
    linux.prctl(linux.PR_SET_DUMPABLE, 0)
    try:
        result = supervise(request)
    except (SandboxError, OSError) as error:
        result = {"error": str(error)}
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
