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
import signal
import site
import sys
import tempfile
import time

from primejax.sandbox import filesystem, linux, seccomp, sweep, testrun

_NAMESPACES = linux.CLONE_NEWNS | linux.CLONE_NEWNET | linux.CLONE_NEWPID | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS
_SYSTEM_READ = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys/devices/system/cpu")
_WAIT_SLACK_SECONDS = 2.0


class SandboxError(Exception):
    """The sandbox could not be built as requested; no program ran."""


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
        allowance = sweep.tasks_of_uid(os.getuid()) + limits["max_processes"]
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
            filesystem.empty(directory)
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
                payload = json.dumps({"tests": _run_tests(request, spec, sweep.kill_namespace)})
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
            workdir = filesystem.build_filesystem(request, uid)
    if mode == "process":
        if not seccomp.supported():
            raise SandboxError(f"no namespaces and no seccomp filter for {os.uname().machine}: "
                               "cannot keep programs off the network")
        if uid is not None:
            closed = [p for p in request["python_paths"] if filesystem.closed_ancestor(p)]
            if closed:
                raise SandboxError(f"isolation='process' runs programs as uid {uid}, which cannot reach the Python "
                                   f"installation at {closed[0]} (a parent directory is private); use "
                                   "isolation='namespaces' or a world-readable Python")
        workdir = tempfile.mkdtemp(prefix=filesystem.workdir_prefix(os.getpid()), dir=request["scratch_dir"])
        if uid is not None:
            os.chown(workdir, uid, uid)
    spec, landlock_abi = _test_spec(request, mode, uid, workdir)
    isolation = {"mode": mode, "layers": _layers(mode, spec, landlock_abi)}
    if mode == "namespaces":
        return {"isolation": isolation, "tests": _run_as_namespace_init(request, spec)}
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    kill_leftovers = sweep.kill_uid(uid) if uid is not None else sweep.kill_descendants
    try:
        return {"isolation": isolation, "tests": _run_tests(request, spec, kill_leftovers)}
    finally:
        kill_leftovers()
        filesystem.remove_tree(workdir)


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
