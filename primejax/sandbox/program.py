"""The sandboxed side of one test: what a freshly forked child does before and while running the program.

The child confines itself, in this order, then runs the program as `__main__`:
1. its own process group;
2. stdin from the test's input, stdout/stderr (and, for call-based tests, fd 3 for the return value) into the
   supervisor's pipes, every other descriptor closed;
3. rlimits (address space, CPU, file size, processes, open files, no core files);
4. the sandbox uid when the supervisor runs as root;
5. death when the supervisor dies, not dumpable, no_new_privs, Landlock, the seccomp filter;
6. the working directory and a scrubbed environment;
then it tells the supervisor, on a pipe it closes before the program starts, that confinement is complete.
Nothing here returns: the child leaves through os._exit.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import io
import json
import math
import os
import resource
import signal
import sys
import traceback
import types

from primejax.sandbox import landlock, linux, seccomp

SETUP_FAILED_EXIT = 125          # the child could not confine itself; the program never ran
_exit = os._exit                 # held here: the program may rebind os._exit, and the child must never return

_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def _set_limits(limits: dict, process_allowance: int) -> None:
    def cap(kind, soft, hard=None):
        resource.setrlimit(kind, (soft, soft if hard is None else hard))

    memory = limits["memory_mb"] << 20
    cpu = math.ceil(limits["cpu_seconds"])
    cap(resource.RLIMIT_AS, memory)
    cap(resource.RLIMIT_CPU, cpu, cpu + 1)
    cap(resource.RLIMIT_FSIZE, limits["file_size_mb"] << 20)
    cap(resource.RLIMIT_NOFILE, limits["max_open_files"])
    cap(resource.RLIMIT_NPROC, process_allowance)
    cap(resource.RLIMIT_CORE, 0)


def _confine(spec: dict, fds: dict[str, int]) -> None:
    parent = os.getppid()
    os.setpgid(0, 0)
    for target, name in ((0, "stdin"), (1, "stdout"), (2, "stderr"), (3, "value")):
        os.dup2(fds[name], target)
    os.closerange(4, fds["confined"])
    os.closerange(fds["confined"] + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGALRM):
        signal.signal(sig, signal.SIG_DFL if sig != signal.SIGPIPE else signal.SIG_IGN)
    _set_limits(spec["limits"], spec["process_allowance"])
    uid = spec["uid"]
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    # After the uid change, which clears both: death with the supervisor, and no core dump, no ptrace, no
    # /proc/<pid> of ours for others (a core-dump pipe handler would ignore RLIMIT_CORE = 0).
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        raise RuntimeError("the supervisor died while the test started")
    linux.prctl(linux.PR_SET_DUMPABLE, 0)
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    if spec["landlock"]:
        own_proc = [f"/proc/{os.getpid()}"] if spec["read_own_proc"] else []
        landlock.apply(spec["read_paths"] + own_proc, spec["write_paths"])
    if spec["seccomp"]:
        linux.install_seccomp_filter(seccomp.build_filter(spec["restrict_signals"], os.getpid()))
    os.chdir(spec["workdir"])
    os.environ.clear()
    os.environ.update(_ENV, HOME=spec["workdir"], TMPDIR=spec["workdir"])
    os.write(fds["confined"], b"1")            # the one proof of confinement, on a pipe the program never holds
    os.close(fds["confined"])


def _json_value(value):
    """JSON for a call-based test's return value: tuples become lists (json does that), numpy values their Python
    equivalents; anything else that JSON cannot hold fails the test."""

    def fallback(obj):
        for method in ("tolist", "item"):
            if callable(getattr(obj, method, None)):
                return getattr(obj, method)()
        raise TypeError(f"the return value holds a {type(obj).__name__}, which is not JSON")

    return json.dumps(value, default=fallback)


def _text_stream(fd: int, mode: str, errors: str) -> io.TextIOWrapper:
    raw = io.FileIO(fd, mode, closefd=False)
    buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
    return io.TextIOWrapper(buffered, encoding="utf-8", errors=errors, line_buffering=fd == 2)


def _finish_like_an_interpreter() -> None:
    """What the interpreter does at exit before our os._exit skips it: wait for the program's non-daemon threads
    (a common way to get a larger stack), then run its atexit handlers."""
    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()
    atexit._run_exitfuncs()


def _run(spec: dict, args: list | None) -> int:
    """Runs the program as __main__ (and, when call-based, its function on `args`); returns the exit code."""
    sys.stdin = _text_stream(0, "r", "replace")
    sys.stdout = _text_stream(1, "w", "replace")
    sys.stderr = _text_stream(2, "w", "backslashreplace")
    main = types.ModuleType("__main__")
    main.__dict__.update(__builtins__=builtins, __file__="solution.py")
    sys.modules["__main__"] = main
    sys.argv = ["solution.py"]
    try:
        # Running the untrusted program is this module's purpose; by now the process is confined.
        if spec["prelude"]:
            exec(compile(spec["prelude"], "<prelude>", "exec"), main.__dict__)  # noqa: S102
        exec(compile(spec["source"], "solution.py", "exec"), main.__dict__)  # noqa: S102
        if args is not None:
            fn_name, names = spec["fn_name"], main.__dict__
            if callable(names.get(fn_name)):
                fn = names[fn_name]
            elif isinstance(names.get("Solution"), type):
                fn = getattr(names["Solution"](), fn_name)
            else:
                raise NameError(f"the program defines no function {fn_name!r} and no class Solution")
            encoded = _json_value(fn(*args)).encode()
            view = memoryview(encoded)
            while view:
                view = view[os.write(3, view):]
        return 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException as error:  # noqa: BLE001 - whatever the program raises is its failure, reported
        traceback.print_exception(type(error), error, error.__traceback__.tb_next)
        return 1


def run_in_child(spec: dict, args: list | None, fds: dict[str, int]) -> None:
    """Confines this freshly forked process and runs the program; never returns.

    fds: the descriptors the supervisor made for this test: "stdin" (a memfd), "stdout", "stderr" and "value"
    (pipes), and "confined", to which one byte is written once confinement is complete.
    """
    try:
        _confine(spec, fds)
    except BaseException as error:  # noqa: BLE001 - any failure to confine must stop the child before the program
        os.write(2, f"sandbox setup failed: {error!r}\n".encode())
        _exit(SETUP_FAILED_EXIT)
    code = 1
    try:
        code = _run(spec, args)
        _finish_like_an_interpreter()
    finally:
        try:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
        finally:
            _exit(code if isinstance(code, int) and 0 <= code < 256 else 1)
