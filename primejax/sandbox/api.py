"""Running an untrusted program against tests, from the trusted side.

`run_program` starts one supervisor process (`python -I`, a minimal environment, its own session), hands it
the program and the tests, and waits for the result within the time budget. Outputs are only *collected*
here; comparing them with the expected answers is the caller's job, so expected outputs never enter the
sandbox.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import os
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence

import primejax
from primejax.sandbox import filesystem, sweep
from primejax.sandbox.limits import SandboxLimits

ISOLATION_MODES = ("auto", "namespaces", "process")
DEFAULT_UID_BASE = 2_000_000_000        # sandbox uid = base + supervisor pid: unique while the supervisor lives
_MAX_UID = 2**32 - 2                    # (uid_t) -1 means "unchanged"
_MAX_PID = 2**22                        # the kernel's largest pid_max
_SUPERVISOR_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
# `-I -S`: no environment, no user site, no site-packages processing (the supervisor needs the standard library
# and this package only; the caller's module path is handed over in the request for the programs).
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from primejax.sandbox.supervisor import main; main()"
_STARTUP_SECONDS = 10.0                 # supervisor start and namespace set-up, beyond the tests' own clocks
_PER_TEST_SLACK_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class TestOutcome:
    """What one run of the program did on one test.

    status: "ok" (exit 0), "runtime_error" (non-zero exit), "timeout" (wall clock), "cpu_limit",
    "memory_limit" (MemoryError), "output_limit" (stdout past its cap), "file_size_limit", "killed" (another
    signal), "sandbox_error" (the child could not confine itself; the program never ran) or "not_run" (the
    total time budget ran out first).
    """

    status: str
    stdout: str
    stderr: str
    value: str | None           # call-based tests: the JSON of the return value (their stdout is only a tail)
    exit_code: int | None
    signal: int | None
    wall_seconds: float
    cpu_seconds: float


@dataclasses.dataclass(frozen=True)
class Isolation:
    """The isolation a run actually had: its mode and the layers in force, e.g. ("namespaces: ...",
    "uid 2000012345", "landlock ABI 7", "seccomp", "rlimits")."""

    mode: str
    layers: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.mode} ({'; '.join(self.layers)})"


@dataclasses.dataclass(frozen=True)
class SandboxRun:
    tests: tuple[TestOutcome, ...]
    isolation: Isolation | None
    error: str | None = None    # the sandbox itself failed; `tests` is then empty


@functools.lru_cache(maxsize=1)
def python_paths() -> tuple[str, ...]:
    """The directories of this Python installation a program may read: prefixes, standard library and
    site-packages, resolved, outermost first."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    candidates.update(sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib"))
    candidates.update(site.getsitepackages())
    resolved = sorted({os.path.realpath(path) for path in candidates if os.path.isdir(path)}, key=len)
    outermost: list[str] = []
    for path in resolved:
        if not any(path.startswith(top.rstrip("/") + "/") for top in outermost):
            outermost.append(path)
    return tuple(outermost)


@functools.lru_cache(maxsize=1)
def _program_sys_path() -> tuple[str, ...]:
    """This process's module path, kept to the Python installation (site-packages, .pth additions inside it):
    what a sandboxed program may import from."""
    roots = [root.rstrip("/") + "/" for root in python_paths()]
    return tuple(entry for entry in sys.path
                 if entry and os.path.isdir(entry) and any((os.path.realpath(entry) + "/").startswith(root)
                                                           for root in roots))


def _request(source, tests, fn_name, prelude, preload, limits, isolation, total_timeout) -> dict:
    if fn_name is None:
        cases = [{"stdin": stdin, "args": None} for stdin in tests]
    else:
        cases = [{"stdin": "", "args": list(args)} for args in tests]
    return {"source": source, "fn_name": fn_name, "prelude": prelude, "preload": list(preload), "tests": cases,
            "limits": limits.to_json(), "isolation": isolation, "total_timeout": total_timeout,
            "python_paths": list(python_paths()), "sys_path": list(_program_sys_path()), "parent_pid": os.getpid(),
            "scratch_dir": tempfile.gettempdir()}


def _decoded(encoded: str | None) -> str | None:
    """Output bytes from the supervisor (base64) as text; bytes that are not UTF-8 become U+FFFD."""
    return None if encoded is None else base64.b64decode(encoded).decode("utf-8", errors="replace")


def _outcome(data: dict) -> TestOutcome:
    fields = {field.name: data[field.name] for field in dataclasses.fields(TestOutcome)}
    for name in ("stdout", "stderr", "value"):
        fields[name] = _decoded(fields[name])
    return TestOutcome(**fields)


def _tests_budget(num_tests: int, limits: SandboxLimits, total_timeout_seconds: float | None) -> float:
    budget = num_tests * (limits.timeout_seconds + _PER_TEST_SLACK_SECONDS)
    return budget if total_timeout_seconds is None else min(budget, total_timeout_seconds)


def time_budget(num_tests: int, limits: SandboxLimits, total_timeout_seconds: float | None = None) -> float:
    """The longest `run_program` can take on `num_tests` tests, start-up included."""
    return _tests_budget(num_tests, limits, total_timeout_seconds) + _STARTUP_SECONDS


def _kill(process: subprocess.Popen, sandbox_uid: int | None, scratch_dir: str) -> None:
    """Kills the supervisor and what it started, reaps the supervisor and removes its working directory. In the
    namespaces mode its PID namespace dies with it; in the process mode the sweep goes by session and, as root,
    by sandbox uid."""
    for pid in [process.pid, *sweep.session_members(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.communicate()
    if sandbox_uid is not None:
        sweep.kill_uid_processes(sandbox_uid)
    prefix = filesystem.workdir_prefix(process.pid)
    for name in os.listdir(scratch_dir):
        if name.startswith(prefix):
            filesystem.remove_tree(os.path.join(scratch_dir, name))


def run_program(source: str, tests: Sequence, *, fn_name: str | None = None, prelude: str = "",
                preload: Sequence[str] = (), limits: SandboxLimits | None = None, isolation: str = "auto",
                total_timeout_seconds: float | None = None, uid_base: int = DEFAULT_UID_BASE) -> SandboxRun:
    """Runs `source` once per test, each run in a fresh confined process, and returns what each run did.

    tests: stdin strings, or with `fn_name` (call-based) lists of positional arguments; the program's
      function `fn_name` (or method of its class `Solution`) is called and its return value sent back as JSON.
    prelude: code run before the program in the same namespace (e.g. the imports judges provide).
    preload: modules the supervisor imports once before forking, so each test does not pay for them.
    isolation: "auto" (namespaces where possible, else process), "namespaces" or "process"; the run reports
      what it had. A mode that cannot be built is an error, never a silent downgrade, except under "auto".
    total_timeout_seconds: a budget for all tests together; tests it does not reach are "not_run".
    """
    limits = limits or SandboxLimits()
    if not 0 < uid_base <= _MAX_UID - _MAX_PID:
        raise ValueError(f"uid_base must lie in [1, {_MAX_UID - _MAX_PID}] (uid_base + a pid is a uid), got {uid_base}")
    if isolation not in ISOLATION_MODES:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATION_MODES)}; got {isolation!r}")
    if fn_name is None and not all(isinstance(stdin, str) for stdin in tests):
        raise TypeError("stdin tests must be strings")
    budget = _tests_budget(len(tests), limits, total_timeout_seconds)
    request = _request(source, tests, fn_name, prelude, preload, limits, isolation, budget)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(primejax.__file__)))
    process = subprocess.Popen([sys.executable, "-I", "-S", "-c", _BOOT, package_root], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_SUPERVISOR_ENV,
                               start_new_session=True, close_fds=True)
    request["sandbox_uid"] = uid_base + process.pid if os.geteuid() == 0 else None
    try:
        out, err = process.communicate(json.dumps(request).encode(), timeout=budget + _STARTUP_SECONDS)
    except subprocess.TimeoutExpired:
        _kill(process, request["sandbox_uid"], request["scratch_dir"])
        return SandboxRun((), None, "the sandbox supervisor overran its time budget and was killed")
    except BaseException:           # interrupted (a caller's own timeout, Ctrl-C): take the sandbox down with us
        _kill(process, request["sandbox_uid"], request["scratch_dir"])
        raise
    try:
        result = json.loads(out)
    except ValueError:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        return SandboxRun((), None, f"the sandbox supervisor failed (exit {process.returncode}): {' | '.join(tail)}")
    if "error" in result:
        return SandboxRun((), None, result["error"])
    isolation_used = Isolation(result["isolation"]["mode"], tuple(result["isolation"]["layers"]))
    return SandboxRun(tuple(_outcome(test) for test in result["tests"]), isolation_used)
